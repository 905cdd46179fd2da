/**
 * Notebook provenance: the environment and image a notebook last ran with
 * (notebook metadata `tfenv`), and how that compares with the catalog now.
 * Pure functions: no JupyterLab imports, so that jest tests them directly.
 */

import { bareDigest } from './format';
import { lockInfo } from './state';
import type {
  IEnvironment,
  IEnvironmentSummary,
  IImageStatus,
  IProbe
} from './api';

/**
 * The notebook metadata key.
 */
export const PROVENANCE_KEY = 'tfenv';

/**
 * Notebook metadata `tfenv`.
 */
export interface IProvenance {
  /**
   * The environment id.
   */
  environment: string;
  /**
   * The image reference of the catalog entry.
   */
  image: string;
  /**
   * The `sha256:` digest of the image (pinned, locked or the local repo
   * digest); null when the image has none (a local build).
   */
  digest: string | null;
  /**
   * The Docker image id (`sha256:` of the image config).
   */
  image_id: string | null;
  tensorflow: string | null;
  /**
   * When it was recorded (ISO 8601, UTC).
   */
  recorded: string;
}

/**
 * The provenance of a kernel running `env`.
 */
export function makeProvenance(
  env: IEnvironmentSummary,
  image: IImageStatus | null,
  probe: IProbe | null,
  now: Date = new Date()
): IProvenance {
  return {
    environment: env.id,
    image: env.image,
    digest: lockInfo(env, image).digest,
    image_id: image?.image_id ?? probe?.image_id ?? null,
    tensorflow: probe?.tensorflow ?? env.tensorflow ?? null,
    recorded: now.toISOString()
  };
}

/**
 * Read notebook metadata `tfenv`; null when absent or malformed.
 */
export function readProvenance(value: unknown): IProvenance | null {
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    return null;
  }
  const v = value as { [key: string]: unknown };
  if (typeof v.environment !== 'string' || typeof v.image !== 'string') {
    return null;
  }
  const text = (x: unknown): string | null =>
    typeof x === 'string' ? x : null;
  return {
    environment: v.environment,
    image: v.image,
    digest: text(v.digest),
    image_id: text(v.image_id),
    tensorflow: text(v.tensorflow),
    recorded: text(v.recorded) ?? ''
  };
}

/**
 * Whether two provenance records name the same bits (the time aside): the
 * metadata is rewritten only when this is false, so that running a cell does
 * not make the notebook dirty.
 */
export function sameProvenance(
  a: IProvenance | null,
  b: IProvenance | null
): boolean {
  if (!a || !b) {
    return a === b;
  }
  return (
    a.environment === b.environment &&
    a.image === b.image &&
    (a.digest ?? null) === (b.digest ?? null) &&
    (a.image_id ?? null) === (b.image_id ?? null) &&
    (a.tensorflow ?? null) === (b.tensorflow ?? null)
  );
}

/**
 * What differs between the recorded bits and an environment's bits now.
 */
export type ProvenanceDifference = 'image' | 'digest' | 'image_id';

/**
 * The differences between the recorded provenance and `env` with `image`
 * (its current image status, when known). A digest or image id unknown on
 * either side is not a difference.
 */
export function provenanceDifferences(
  recorded: IProvenance,
  env: IEnvironmentSummary,
  image: IImageStatus | null
): ProvenanceDifference[] {
  const differences: ProvenanceDifference[] = [];
  if (recorded.image !== env.image) {
    differences.push('image');
  }
  const digest = lockInfo(env, image).digest;
  const recordedDigest = bareDigest(recorded.digest);
  if (recordedDigest && digest) {
    if (recordedDigest !== digest) {
      differences.push('digest');
    }
    return differences;
  }
  const imageId = image?.image_id ?? env2imageId(env);
  if (recorded.image_id && imageId && recorded.image_id !== imageId) {
    differences.push('image_id');
  }
  return differences;
}

function env2imageId(env: IEnvironmentSummary): string | null {
  return (env as IEnvironment).image_status?.image_id ?? null;
}

/**
 * The verdict on a notebook's provenance.
 *
 * - `match`: the recorded environment exists, has the same bits, and is the
 *   current kernel's (or no kernel runs);
 * - `other-environment`: it exists with the same bits, but the notebook now
 *   runs on another environment;
 * - `changed`: it exists, but points at other bits now;
 * - `missing`: it is not in the catalog.
 */
export interface IProvenanceVerdict {
  status: 'match' | 'other-environment' | 'changed' | 'missing';
  recorded: IProvenance;
  /**
   * The environment to switch to for the recorded bits: the recorded one, or
   * another with the same digest or image; null when there is none.
   */
  candidate: string | null;
  /**
   * The environment the notebook runs on now (null: not a tfenv kernel).
   */
  current: string | null;
  differences: ProvenanceDifference[];
}

/**
 * Compare a notebook's recorded provenance with the catalog.
 *
 * @param recorded - the notebook's metadata `tfenv`
 * @param environments - the catalog (`GET /tfenv/environments`)
 * @param current - the environment of the notebook's kernel now
 * @param imageOf - the current image status of an environment, when known
 */
export function compareProvenance(
  recorded: IProvenance,
  environments: IEnvironment[],
  current: string | null,
  imageOf: (envId: string) => IImageStatus | null = () => null
): IProvenanceVerdict {
  const env = environments.find(e => e.id === recorded.environment) ?? null;
  const sameBits = (e: IEnvironment): boolean =>
    provenanceDifferences(recorded, e, imageOf(e.id)).length === 0 &&
    // Another entry counts only when something proves it holds those bits.
    (e.id === recorded.environment ||
      !!(recorded.digest && lockInfo(e, imageOf(e.id)).digest) ||
      !!(recorded.image_id && (imageOf(e.id)?.image_id ?? env2imageId(e))));
  const others = environments.filter(
    e => e.id !== recorded.environment && sameBits(e)
  );
  const pick = (): string | null => {
    if (current && others.some(e => e.id === current)) {
      return current;
    }
    return others.length > 0 ? others[0].id : null;
  };
  const differences = env
    ? provenanceDifferences(recorded, env, imageOf(env.id))
    : [];
  if (!env || differences.length > 0) {
    const candidate = pick();
    // Already on an environment with the recorded bits (a renamed entry).
    const status =
      candidate && candidate === current
        ? 'match'
        : env
          ? 'changed'
          : 'missing';
    return { status, recorded, candidate, current, differences };
  }
  if (current && current !== env.id && !others.some(e => e.id === current)) {
    return {
      status: 'other-environment',
      recorded,
      candidate: env.id,
      current,
      differences: []
    };
  }
  return {
    status: 'match',
    recorded,
    candidate: env.id,
    current,
    differences: []
  };
}
