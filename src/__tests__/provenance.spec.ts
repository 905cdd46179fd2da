import {
  compareProvenance,
  IProvenance,
  makeProvenance,
  provenanceDifferences,
  readProvenance,
  sameProvenance
} from '../provenance';
import type { IEnvironment, IImageStatus } from '../api';

import environmentsReply from './fixtures/environments.json';
import imageTf220 from './fixtures/image-tf220.json';
import kernelTf220 from './fixtures/kernel-tf220.json';

const envs = environmentsReply.environments as IEnvironment[];
const env = (id: string): IEnvironment => envs.find(e => e.id === id)!;
const image = imageTf220 as IImageStatus;
const D1 = 'sha256:' + '1'.repeat(64);
const D2 = 'sha256:' + '2'.repeat(64);
const NOW = new Date('2026-11-25T12:00:00Z');

/**
 * What a notebook run on tf-2.20-cpu records.
 */
function recordedTf220(overrides: Partial<IProvenance> = {}): IProvenance {
  return {
    ...makeProvenance(env('tf-2.20-cpu'), image, kernelTf220.probe, NOW),
    ...overrides
  };
}

describe('makeProvenance', () => {
  it('records environment, image, image id, version and time', () => {
    expect(recordedTf220()).toEqual({
      environment: 'tf-2.20-cpu',
      image: 'tensorflow/tensorflow:2.20.0-jupyter',
      digest: null,
      image_id: image.image_id,
      tensorflow: '2.20.0',
      recorded: '2026-11-25T12:00:00.000Z'
    });
  });

  it('records the locked or pinned digest', () => {
    const locked = makeProvenance(
      env('tf-2.20-cpu'),
      { ...image, lock: { locked: D1, local: [D1], matches: true } },
      null,
      NOW
    );
    expect(locked.digest).toBe(D1);
    const pinned = makeProvenance(
      { ...env('tf-2.20-cpu'), image: `ml/tf@${D2}`, digest: D2 },
      null,
      null,
      NOW
    );
    expect(pinned.digest).toBe(D2);
    expect(pinned.tensorflow).toBe('2.20.0');
  });
});

describe('readProvenance', () => {
  it('reads valid metadata and rejects anything else', () => {
    const recorded = recordedTf220();
    expect(readProvenance(JSON.parse(JSON.stringify(recorded)))).toEqual(
      recorded
    );
    expect(readProvenance(undefined)).toBeNull();
    expect(readProvenance('tf')).toBeNull();
    expect(readProvenance([])).toBeNull();
    expect(readProvenance({ environment: 'x' })).toBeNull();
    expect(readProvenance({ environment: 'x', image: 'y', digest: 3 })).toEqual(
      {
        environment: 'x',
        image: 'y',
        digest: null,
        image_id: null,
        tensorflow: null,
        recorded: ''
      }
    );
  });
});

describe('sameProvenance', () => {
  it('ignores the time, not the bits', () => {
    const a = recordedTf220();
    expect(sameProvenance(a, { ...a, recorded: 'later' })).toBe(true);
    expect(sameProvenance(a, { ...a, digest: D1 })).toBe(false);
    expect(sameProvenance(a, { ...a, environment: 'tf-2.19-cpu' })).toBe(false);
    expect(sameProvenance(null, a)).toBe(false);
    expect(sameProvenance(null, null)).toBe(true);
  });
});

describe('provenanceDifferences', () => {
  it('compares digests when both are known, image ids otherwise', () => {
    const tf220 = env('tf-2.20-cpu');
    expect(provenanceDifferences(recordedTf220(), tf220, image)).toEqual([]);
    expect(
      provenanceDifferences(
        recordedTf220({ image_id: 'sha256:other' }),
        tf220,
        image
      )
    ).toEqual(['image_id']);
    const locked = {
      ...image,
      lock: { locked: D2, local: [D2], matches: true }
    };
    expect(
      provenanceDifferences(recordedTf220({ digest: D1 }), tf220, locked)
    ).toEqual(['digest']);
    // Same digest: another local image id (another engine) is no difference.
    expect(
      provenanceDifferences(
        recordedTf220({ digest: D2, image_id: 'sha256:other' }),
        tf220,
        locked
      )
    ).toEqual([]);
    expect(
      provenanceDifferences(
        recordedTf220({ image: 'tensorflow/tensorflow:2.20.0' }),
        tf220,
        image
      )
    ).toEqual(['image']);
  });
});

describe('compareProvenance', () => {
  const imageOf = (id: string): IImageStatus | null =>
    id === 'tf-2.20-cpu' ? image : null;

  it('matches when the notebook runs on the recorded bits', () => {
    expect(
      compareProvenance(recordedTf220(), envs, 'tf-2.20-cpu', imageOf)
    ).toMatchObject({ status: 'match', candidate: 'tf-2.20-cpu' });
    // No tfenv kernel now: nothing to say either.
    expect(compareProvenance(recordedTf220(), envs, null, imageOf).status).toBe(
      'match'
    );
  });

  it('offers the recorded environment when the notebook runs on another', () => {
    expect(
      compareProvenance(recordedTf220(), envs, 'tf-2.19-cpu', imageOf)
    ).toMatchObject({
      status: 'other-environment',
      candidate: 'tf-2.20-cpu',
      current: 'tf-2.19-cpu'
    });
  });

  it('finds another entry with the same bits when the recorded one is gone', () => {
    const verdict = compareProvenance(
      recordedTf220({ environment: 'tf220-old' }),
      envs,
      'tf-2.19-cpu',
      imageOf
    );
    expect(verdict).toMatchObject({
      status: 'missing',
      candidate: 'tf-2.20-cpu',
      current: 'tf-2.19-cpu'
    });
  });

  it('is a match when the notebook already runs on the renamed entry', () => {
    expect(
      compareProvenance(
        recordedTf220({ environment: 'tf220-old' }),
        envs,
        'tf-2.20-cpu',
        imageOf
      ).status
    ).toBe('match');
  });

  it('has no candidate when nothing holds the recorded bits', () => {
    expect(
      compareProvenance(
        recordedTf220({
          environment: 'gone',
          image: 'registry.example.com/ml/tf:1.15',
          image_id: 'sha256:old'
        }),
        envs,
        'tf-2.20-cpu',
        imageOf
      )
    ).toMatchObject({ status: 'missing', candidate: null });
  });

  it('says changed when the environment points at other bits now', () => {
    const verdict = compareProvenance(
      recordedTf220({ image_id: 'sha256:before-the-retag' }),
      envs,
      'tf-2.20-cpu',
      imageOf
    );
    expect(verdict).toMatchObject({
      status: 'changed',
      candidate: null,
      differences: ['image_id']
    });
    const lockedNow = (id: string): IImageStatus | null =>
      id === 'tf-2.20-cpu'
        ? { ...image, lock: { locked: D2, local: [D2], matches: true } }
        : null;
    expect(
      compareProvenance(
        recordedTf220({ digest: D1 }),
        envs,
        'tf-2.20-cpu',
        lockedNow
      )
    ).toMatchObject({ status: 'changed', differences: ['digest'] });
  });

  it('offers another entry pinned to the recorded digest', () => {
    const pinned: IEnvironment = {
      ...env('tf-2.20-cpu'),
      id: 'tf220-pinned',
      kernel_name: 'tfenv-tf220-pinned',
      image: `tensorflow/tensorflow@${D1}`,
      digest: D1
    };
    const verdict = compareProvenance(
      recordedTf220({ digest: D1, image: `tensorflow/tensorflow@${D1}` }),
      [...envs, pinned],
      'tf-2.20-cpu',
      imageOf
    );
    expect(verdict).toMatchObject({
      status: 'changed',
      candidate: 'tf220-pinned'
    });
  });
});
