/**
 * A pull's progress from its server-sent events (or polled snapshots). Pure
 * functions: no JupyterLab imports, so that jest tests them directly.
 */

import type { IPull } from './api';

/**
 * What the views show of a pull.
 */
export interface IPullProgress {
  pullId: string;
  environment: string;
  image: string;
  reference: string | null;
  state: 'pulling' | 'done' | 'error' | 'cancelled';
  /**
   * 0–100, the server's estimate (it may go back when Docker announces the
   * size of a layer late).
   */
  percent: number;
  /**
   * Bytes downloaded and total bytes known so far.
   */
  current: number;
  total: number;
  layers: number;
  layersDone: number;
  /**
   * Docker's last status line, or the final message (the error's text).
   */
  message: string | null;
  digest: string | null;
  imageId: string | null;
  /**
   * Sequence number of the last event applied.
   */
  seq: number;
}

const TERMINAL = ['done', 'error', 'cancelled'];
const LAYER_DONE = ['Pull complete', 'Already exists'];

/**
 * Whether a pull is over.
 */
export function isPullFinished(progress: IPullProgress | null): boolean {
  return progress !== null && TERMINAL.includes(progress.state);
}

/**
 * A whole pull (`GET /tfenv/pulls/{id}`, or a `snapshot`/`start`/final
 * event) as progress.
 */
export function pullFromPayload(pull: IPull & { seq?: number }): IPullProgress {
  const layers = pull.layers ?? {};
  const ids = Object.keys(layers);
  const state = TERMINAL.includes(pull.state) ? pull.state : 'pulling';
  return {
    pullId: pull.id,
    environment: pull.environment,
    image: pull.image,
    reference: pull.reference ?? null,
    state,
    percent:
      state === 'done'
        ? 100
        : typeof pull.percent === 'number'
          ? clampPercent(pull.percent)
          : 0,
    current: pull.current ?? 0,
    total: pull.total ?? 0,
    layers: ids.length,
    layersDone: ids.filter(id => LAYER_DONE.includes(layers[id].status)).length,
    message: pull.message ?? null,
    digest: pull.digest ?? null,
    imageId: pull.image_id ?? null,
    seq: typeof pull.seq === 'number' ? pull.seq : 0
  };
}

/**
 * Apply one event of `/tfenv/pulls/{id}/events` to the progress so far.
 *
 * `snapshot`, `start`, `done`, `error` and `cancelled` carry the whole pull;
 * `status` and `layer` carry the overall `progress` (and Docker's status
 * line). Events older than the last one applied are ignored, as is anything
 * after the pull finished. Returns `prev` itself when nothing changed.
 */
export function reducePullEvent(
  prev: IPullProgress | null,
  type: string,
  data: any
): IPullProgress | null {
  if (!data || typeof data !== 'object') {
    return prev;
  }
  const seq = typeof data.seq === 'number' ? data.seq : null;
  if (TERMINAL.includes(type)) {
    if (isPullFinished(prev)) {
      return prev;
    }
    const next = pullFromPayload({ ...data, state: type });
    if (prev && !data.id) {
      return { ...prev, state: next.state, message: next.message };
    }
    return next.state === 'done' || data.percent !== undefined
      ? next
      : { ...next, percent: prev?.percent ?? next.percent };
  }
  if (isPullFinished(prev)) {
    return prev;
  }
  if (prev && seq !== null && seq <= prev.seq && type !== 'snapshot') {
    return prev;
  }
  if (type === 'snapshot' || type === 'start') {
    if (!data.id) {
      return prev;
    }
    const next = pullFromPayload(data);
    if (prev && prev.pullId === next.pullId) {
      if (seq !== null && seq < prev.seq) {
        return prev;
      }
      return next;
    }
    return next;
  }
  if (type === 'status' || type === 'layer' || type === 'progress') {
    const base: IPullProgress = prev ?? {
      pullId: String(data.pull_id ?? ''),
      environment: '',
      image: '',
      reference: null,
      state: 'pulling',
      percent: 0,
      current: 0,
      total: 0,
      layers: 0,
      layersDone: 0,
      message: null,
      digest: null,
      imageId: null,
      seq: 0
    };
    const progress = data.progress ?? {};
    const next: IPullProgress = { ...base, seq: seq ?? base.seq };
    if (typeof progress.percent === 'number') {
      next.percent = clampPercent(progress.percent);
    }
    if (typeof progress.current === 'number') {
      next.current = progress.current;
    }
    if (typeof progress.total === 'number') {
      next.total = progress.total;
    }
    if (typeof progress.layers === 'number') {
      next.layers = progress.layers;
    }
    if (typeof progress.layers_done === 'number') {
      next.layersDone = progress.layers_done;
    }
    if (type === 'status' && typeof data.status === 'string' && data.status) {
      next.message = data.status;
    }
    return next;
  }
  return prev;
}

function clampPercent(value: number): number {
  return isFinite(value) ? Math.min(100, Math.max(0, value)) : 0;
}
