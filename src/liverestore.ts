// Whether the panel warns that the Docker engine's live-restore is off
// (issue 24): pure, unit-tested in __tests__/liverestore.spec.ts.

import type { IEngineState } from './api/environments';
import type { INoticeStorage } from './restartnotice';

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
  engine: IEngineState | null | undefined,
  storage: INoticeStorage | null = null
): IEngineState | null {
  if (!engine || engine.live_restore !== false) {
    return null;
  }
  return isDismissed(engine, storage) ? null : engine;
}

/**
 * The storage key of the engines whose warning the user dismissed.
 */
export const DISMISSED_KEY = 'jupyter_tfenv:live-restore-dismissed';

/**
 * One engine as the dismissal remembers it: its address and version (an
 * upgraded engine, or another one, warns again).
 */
export function engineKey(engine: IEngineState): string {
  return `${engine.host} ${engine.version ?? ''}`;
}

function dismissed(storage: INoticeStorage | null): string[] {
  try {
    const raw = JSON.parse(storage?.getItem(DISMISSED_KEY) ?? '[]');
    return Array.isArray(raw)
      ? raw.filter((k): k is string => typeof k === 'string')
      : [];
  } catch {
    return [];
  }
}

/**
 * Whether the user dismissed this engine's warning (in this browser).
 */
export function isDismissed(
  engine: IEngineState,
  storage: INoticeStorage | null
): boolean {
  return dismissed(storage).includes(engineKey(engine));
}

/**
 * Remember that the user dismissed this engine's warning; the last 20
 * engines are kept. A full or refused storage: shown again after a reload.
 */
export function dismissWarning(
  engine: IEngineState,
  storage: INoticeStorage | null
): void {
  const key = engineKey(engine);
  const keys = [...dismissed(storage).filter(k => k !== key), key].slice(-20);
  try {
    storage?.setItem(DISMISSED_KEY, JSON.stringify(keys));
  } catch {
    // Not remembered: the warning comes back after a reload, no more.
  }
}
