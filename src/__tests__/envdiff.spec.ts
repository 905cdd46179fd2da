import type { IProbe } from '../api';
import { diffEnvironments, diffSummary, normalizeName } from '../envdiff';
import { trans } from './fixtures/trans';

// What POST /tfenv/environments/{id}/probe answers (the parts compared).
const base: IProbe = {
  python: '3.11.6',
  tensorflow: '2.13.0',
  build: { cuda_version: '11.8', cudnn_version: '8', is_cuda_build: true },
  packages: { numpy: '1.24.3', six: '1.16.0', PyYAML: '6.0', keras: '2.13.1' }
};
const derived: IProbe = {
  python: '3.11.6',
  tensorflow: '2.13.0',
  build: { cuda_version: '11.8', cudnn_version: '8', is_cuda_build: true },
  packages: {
    numpy: '1.24.3',
    six: '1.17.0',
    pyyaml: '6.0',
    pandas: '1.5.3',
    tomli: '2.0.1'
  }
};

describe('diffEnvironments', () => {
  it('lists packages added, removed and at other versions, by name', () => {
    const diff = diffEnvironments(base, derived);
    expect(diff.added).toEqual([
      { name: 'pandas', version: '1.5.3' },
      { name: 'tomli', version: '2.0.1' }
    ]);
    expect(diff.removed).toEqual([{ name: 'keras', version: '2.13.1' }]);
    expect(diff.changed).toEqual([
      { name: 'six', from: '1.16.0', to: '1.17.0' }
    ]);
    // PyYAML and pyyaml are one package (PEP 503 names).
    expect(diff.same).toBe(2);
    expect(diffSummary(diff, trans)).toBe(
      '2 added · 1 removed · 1 changed · 2 the same'
    );
  });

  it('compares TensorFlow, CUDA, cuDNN and Python', () => {
    const other: IProbe = {
      ...derived,
      tensorflow: '2.20.0',
      python: '3.12.1',
      build: { cuda_version: null, cudnn_version: null, is_cuda_build: false }
    };
    const rows = diffEnvironments(base, other).versions;
    expect(rows.map(r => [r.label, r.from, r.to, r.same])).toEqual([
      ['TensorFlow', '2.13.0', '2.20.0', false],
      ['CUDA', '11.8', null, false],
      ['cuDNN', '8', null, false],
      ['Python', '3.11.6', '3.12.1', false]
    ]);
    expect(diffEnvironments(base, base).versions.every(r => r.same)).toBe(true);
  });

  it('says so when the packages are the same, or a list is missing', () => {
    const same = diffEnvironments(base, { ...base });
    expect(diffSummary(same, trans)).toBe(
      'The same packages at the same versions (4).'
    );
    const unknown = diffEnvironments(base, { ...derived, packages: null });
    expect(unknown.packagesKnown).toBe(false);
    expect(unknown.added).toEqual([]);
    expect(diffSummary(unknown, trans)).toContain('only the versions');
  });

  it('normalizes names as pip does', () => {
    expect(normalizeName('Ruamel.YAML_clib')).toBe('ruamel-yaml-clib');
  });
});
