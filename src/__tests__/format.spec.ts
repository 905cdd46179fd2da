import {
  bareDigest,
  breakableParts,
  compareVersions,
  cudaLabel,
  formatBytes,
  formatPercent,
  imageTag,
  ratio,
  shortDigest
} from '../format';

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [512, '512 B'],
    [1536, '1.50 KiB'],
    [38690816, '36.9 MiB'],
    [4294967296, '4.00 GiB'],
    [2031770419, '1.89 GiB'],
    [300 * 1024 ** 3, '300 GiB'],
    [5 * 1024 ** 5, '5.00 PiB']
  ])('%p → %p', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it('shows a dash for unknown values', () => {
    expect(formatBytes(null)).toBe('—');
    expect(formatBytes(undefined)).toBe('—');
    expect(formatBytes(NaN)).toBe('—');
    expect(formatBytes(-1)).toBe('—');
  });

  it('takes a number of fraction digits', () => {
    expect(formatBytes(1536, 0)).toBe('2 KiB');
  });
});

describe('formatPercent', () => {
  it.each([
    [0, '0%'],
    [0.01, '0.0%'],
    [0.3, '0.3%'],
    [9.94, '9.9%'],
    [42.4, '42%'],
    [163, '163%']
  ])('%p → %p', (value, text) => {
    expect(formatPercent(value)).toBe(text);
  });

  it('shows a dash for unknown values', () => {
    expect(formatPercent(null)).toBe('—');
    expect(formatPercent(Infinity)).toBe('—');
  });
});

describe('ratio', () => {
  it('is used / total clamped to [0, 1]', () => {
    expect(ratio(1, 4)).toBe(0.25);
    expect(ratio(5, 4)).toBe(1);
    expect(ratio(-1, 4)).toBe(0);
  });

  it('is null without a positive total', () => {
    expect(ratio(1, 0)).toBeNull();
    expect(ratio(1, null)).toBeNull();
    expect(ratio(null, 4)).toBeNull();
  });
});

describe('digests', () => {
  const digest =
    'sha256:0a65f8a80ef1a06128d941249f4ce5b3533fa654e474207a88019fc8eeec64aa';

  it('shortens digests, image ids and references', () => {
    expect(shortDigest(digest)).toBe('0a65f8a80ef1');
    expect(shortDigest(`127.0.0.1:5000/ml/tf@${digest}`)).toBe('0a65f8a80ef1');
    expect(shortDigest(digest, 7)).toBe('0a65f8a');
    expect(shortDigest(null)).toBe('');
  });

  it('strips the repository of a digest reference', () => {
    expect(bareDigest(`registry.example.com:5000/ml/tf@${digest}`)).toBe(
      digest
    );
    expect(bareDigest(digest)).toBe(digest);
    expect(bareDigest(undefined)).toBeNull();
  });
});

describe('cudaLabel', () => {
  it('keeps the major version', () => {
    expect(cudaLabel('12.5.1')).toBe('CUDA 12.x');
    expect(cudaLabel('11.8')).toBe('CUDA 11.x');
  });

  it('is null when unknown, verbatim when odd', () => {
    expect(cudaLabel(null)).toBeNull();
    expect(cudaLabel('')).toBeNull();
    expect(cudaLabel('rocm')).toBe('CUDA rocm');
  });
});

describe('compareVersions', () => {
  it('compares numerically', () => {
    expect(compareVersions('2.9.0', '2.10.0')).toBeLessThan(0);
    expect(compareVersions('2.20.0', '2.19.0')).toBeGreaterThan(0);
    expect(compareVersions('2.20', '2.20.0')).toBeLessThan(0);
    expect(compareVersions('2.20.0', '2.20.0')).toBe(0);
    expect(compareVersions('2.20.0rc1', '2.20.0rc1')).toBe(0);
  });

  it('sorts missing versions last', () => {
    expect(compareVersions(null, '2.19.0')).toBeGreaterThan(0);
    expect(compareVersions('2.19.0', undefined)).toBeLessThan(0);
    expect(compareVersions(null, null)).toBe(0);
  });
});

describe('imageTag', () => {
  it('returns the tag or the digest', () => {
    expect(imageTag('tensorflow/tensorflow:2.20.0-jupyter')).toBe(
      '2.20.0-jupyter'
    );
    expect(imageTag('127.0.0.1:5000/ml/tf')).toBe('');
    expect(imageTag('ml/tf@sha256:abc')).toBe('sha256:abc');
  });
});

describe('breakableParts', () => {
  it('cuts image references, paths and code after their separators', () => {
    expect(breakableParts('tensorflow/tensorflow:2.20.0-gpu-jupyter')).toEqual([
      'tensorflow/',
      'tensorflow:',
      '2.20.0-gpu-jupyter'
    ]);
    expect(breakableParts('/home/ada/tfenv/checkpoints/ada/tf220')).toEqual([
      '/',
      'home/',
      'ada/',
      'tfenv/',
      'checkpoints/',
      'ada/',
      'tf220'
    ]);
    expect(breakableParts('registry:5000/ml/tf@sha256:4f0c').join('')).toBe(
      'registry:5000/ml/tf@sha256:4f0c'
    );
    expect(breakableParts('f(a, b)')).toEqual(['f(', 'a,', ' b)']);
    expect(breakableParts("os.environ['A_B']")).toEqual([
      'os.environ[',
      "'A_B']"
    ]);
    expect(breakableParts('')).toEqual([]);
  });
});
