// Whether the panel warns that the Docker engine's live-restore is off
// (issue 24): pure, unit-tested in __tests__/liverestore.spec.ts.

import type { IEngineState } from './api/environments';

/**
 * What the operations page says to add to the engine's configuration.
 */
export const DAEMON_JSON_LINE = '"live-restore": true';

/**
 * `GET /tfenv/environments` → `engine` as the model keeps it: a well-formed
 * object, or null (absent, null, or a shape this version does not know).
 */
export function normalizeEngine(raw: unknown): IEngineState | null {
  if (typeof raw !== 'object' || raw === null) {
    return null;
  }
  const value = raw as { [key: string]: unknown };
  if (typeof value.live_restore !== 'boolean') {
    return null;
  }
  return {
    host: typeof value.host === 'string' ? value.host : '',
    version: typeof value.version === 'string' ? value.version : null,
    live_restore: value.live_restore
  };
}

/**
 * The engine to warn about, or null: only an engine that answered and said
 * live-restore is off (an unknown state is no reason to alarm anyone).
 */
export function liveRestoreWarning(
  engine: IEngineState | null | undefined
): IEngineState | null {
  return engine && engine.live_restore === false ? engine : null;
}
