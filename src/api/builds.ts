// Shapes of /tfenv/builds and /tfenv/builds/{id}/events (docs/building.md).

/**
 * The steps of a build, in order (`GET /tfenv/builds/{id}` → `steps`).
 */
export type BuildStep = 'resolve' | 'download' | 'build' | 'verify' | 'tag';

/**
 * A build of a derived environment by the server (`/tfenv/builds/{id}`).
 */
export interface IBuild {
  id: string;
  environment: string;
  image: string;
  state: 'building' | 'done' | 'error';
  step: BuildStep;
  steps: BuildStep[];
  /** The build's last line; on error, its reason. */
  message?: string | null;
  /** Wheels downloaded so far, while it downloads. */
  wheels?: { done: number; total: number } | null;
  /** When done: what was built (or found built). */
  result?: { image: string; image_id: string; already_built: boolean } | null;
  started?: string | null;
  finished?: string | null;
}
