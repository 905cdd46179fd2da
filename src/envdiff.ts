/**
 * The difference between two environments (the panel's "Compare with…"),
 * from both probes' package lists (`POST /tfenv/environments/{id}/probe` →
 * `packages`) and their TensorFlow, CUDA, cuDNN and Python versions. Pure
 * functions: no JupyterLab imports, so that jest tests them directly.
 */

import type { IProbe } from './api';

/**
 * One of the headline versions of an environment.
 */
export interface IVersionRow {
  key: 'tensorflow' | 'cuda' | 'cudnn' | 'python';
  label: string;
  /** The first environment's version (null: none or unknown). */
  from: string | null;
  /** The second environment's. */
  to: string | null;
  same: boolean;
}

export interface IPackageVersion {
  name: string;
  version: string;
}

export interface IPackageChange {
  name: string;
  from: string;
  to: string;
}

/**
 * What the second environment has that the first has not, and the other way
 * round.
 */
export interface IEnvironmentDiff {
  versions: IVersionRow[];
  /** In the second, not in the first. */
  added: IPackageVersion[];
  /** In the first, not in the second. */
  removed: IPackageVersion[];
  /** In both, at other versions. */
  changed: IPackageChange[];
  /** How many packages both have at the same version. */
  same: number;
  /**
   * False when either probe has no package list (Python before 3.8, or an
   * older server): only the versions are compared.
   */
  packagesKnown: boolean;
}

/**
 * A package name as pip compares them (PEP 503): `PyYAML`, `pyyaml` and
 * `py_yaml` are one name only when they normalize alike.
 */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}

function packagesOf(probe: IProbe): Map<string, IPackageVersion> | null {
  const raw = probe.packages;
  if (!raw || typeof raw !== 'object') {
    return null;
  }
  const found = new Map<string, IPackageVersion>();
  for (const [name, version] of Object.entries(raw)) {
    if (typeof version === 'string') {
      found.set(normalizeName(name), { name, version });
    }
  }
  return found;
}

function version(value: string | null | undefined): string | null {
  return typeof value === 'string' && value.trim() !== '' ? value : null;
}

function byName<T extends { name: string }>(a: T, b: T): number {
  const x = normalizeName(a.name);
  const y = normalizeName(b.name);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * The difference from `from` to `to` (both probes of images).
 */
export function diffEnvironments(from: IProbe, to: IProbe): IEnvironmentDiff {
  const rows: [IVersionRow['key'], string, string | null, string | null][] = [
    [
      'tensorflow',
      'TensorFlow',
      version(from.tensorflow),
      version(to.tensorflow)
    ],
    [
      'cuda',
      'CUDA',
      version(from.build?.cuda_version),
      version(to.build?.cuda_version)
    ],
    [
      'cudnn',
      'cuDNN',
      version(from.build?.cudnn_version),
      version(to.build?.cudnn_version)
    ],
    ['python', 'Python', version(from.python), version(to.python)]
  ];
  const versions = rows.map(([key, label, a, b]) => ({
    key,
    label,
    from: a,
    to: b,
    same: a === b
  }));
  const mine = packagesOf(from);
  const theirs = packagesOf(to);
  if (!mine || !theirs) {
    return {
      versions,
      added: [],
      removed: [],
      changed: [],
      same: 0,
      packagesKnown: false
    };
  }
  const added: IPackageVersion[] = [];
  const removed: IPackageVersion[] = [];
  const changed: IPackageChange[] = [];
  let same = 0;
  for (const [key, pkg] of theirs) {
    const old = mine.get(key);
    if (!old) {
      added.push(pkg);
    } else if (old.version !== pkg.version) {
      changed.push({ name: pkg.name, from: old.version, to: pkg.version });
    } else {
      same += 1;
    }
  }
  for (const [key, pkg] of mine) {
    if (!theirs.has(key)) {
      removed.push(pkg);
    }
  }
  return {
    versions,
    added: added.sort(byName),
    removed: removed.sort(byName),
    changed: changed.sort(byName),
    same,
    packagesKnown: true
  };
}

/**
 * "2 added · 1 removed · 3 changed · 140 the same" (or "no package list").
 */
export function diffSummary(
  diff: IEnvironmentDiff,
  trans: { __(msgid: string, ...args: any[]): string }
): string {
  if (!diff.packagesKnown) {
    return trans.__(
      'No package list in a probe (Python before 3.8?): only the versions are compared.'
    );
  }
  if (!diff.added.length && !diff.removed.length && !diff.changed.length) {
    return trans.__('The same packages at the same versions (%1).', diff.same);
  }
  return trans.__(
    '%1 added · %2 removed · %3 changed · %4 the same',
    diff.added.length,
    diff.removed.length,
    diff.changed.length,
    diff.same
  );
}
