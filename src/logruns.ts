import type { TranslationBundle } from '@jupyterlab/translation';

import {
  type ILogListing,
  type ILogRun,
  type ITfEnvClient,
  TfEnvApiError
} from './api';

/**
 * The run of the files directly in the log folder.
 */
export const TOP_RUN = '.';

/**
 * Runs newest first (by last write), then by name.
 */
export function sortLogRuns(runs: readonly ILogRun[]): ILogRun[] {
  const time = (run: ILogRun): number => {
    const t = run.last_write ? Date.parse(run.last_write) : NaN;
    return Number.isFinite(t) ? t : -Infinity;
  };
  return [...runs].sort(
    (a, b) => time(b) - time(a) || a.name.localeCompare(b.name)
  );
}

/**
 * The name to show: the folder's, or what `.` stands for.
 */
export function logRunLabel(run: ILogRun, trans: TranslationBundle): string {
  return run.name === TOP_RUN
    ? trans.__('(files at the top of the log folder)')
    : run.name;
}

/**
 * What the panel says when a delete failed.
 */
export function logDeleteNotice(
  error: unknown,
  label: string,
  trans: TranslationBundle
): string {
  const status = error instanceof TfEnvApiError ? error.status : null;
  if (status === 412) {
    return trans.__(
      '"%1" changed since it was listed (a kernel may still write to it); nothing was deleted. Check the refreshed list and try again.',
      label
    );
  }
  if (status === 404) {
    return trans.__('"%1" is gone already; the list is refreshed.', label);
  }
  return trans.__(
    'Deleting "%1" failed: %2',
    label,
    error instanceof Error ? error.message : String(error)
  );
}

/**
 * The state the logs section shows.
 */
export interface ILogRunsState {
  environment: string | null;
  listing: ILogListing | null;
  /** Why the last listing failed. */
  error: string | null;
  /** Why the last delete failed (cleared by the next success). */
  notice: string | null;
  loading: boolean;
}

/**
 * The logs section's listing of one environment's runs: lists on demand,
 * deletes a run with the ETag it listed (If-Match) and lists again, drops
 * answers for an environment no longer shown. Never rejects.
 */
export class LogRunsListing {
  constructor(options: {
    client: ITfEnvClient;
    trans: TranslationBundle;
    changed: (state: ILogRunsState) => void;
  }) {
    this._client = options.client;
    this._trans = options.trans;
    this._changed = options.changed;
  }

  get state(): ILogRunsState {
    return this._state;
  }

  /**
   * Whether the client lists log runs.
   */
  get canList(): boolean {
    return typeof this._client.logRuns === 'function';
  }

  /**
   * List `envId`'s runs (another environment than the shown one starts empty).
   */
  async load(envId: string): Promise<void> {
    const generation = ++this._generation;
    const same = this._state.environment === envId;
    this._set({
      environment: envId,
      listing: same ? this._state.listing : null,
      error: null,
      notice: same ? this._state.notice : null,
      loading: true
    });
    if (!this._client.logRuns) {
      this._set({
        ...this._state,
        error: this._trans.__('This server cannot list log runs.'),
        loading: false
      });
      return;
    }
    try {
      const listing = await this._client.logRuns(envId);
      if (generation === this._generation) {
        this._set({ ...this._state, listing, error: null, loading: false });
      }
    } catch (error) {
      if (generation === this._generation) {
        this._set({
          ...this._state,
          listing: null,
          error: error instanceof Error ? error.message : String(error),
          loading: false
        });
      }
    }
  }

  /**
   * Delete a run as listed (its ETag confirms what the user saw), then list
   * again; a failure becomes the notice.
   */
  async remove(envId: string, run: ILogRun): Promise<void> {
    const label = logRunLabel(run, this._trans);
    try {
      if (!this._client.deleteLogRun) {
        throw new Error(this._trans.__('This server cannot delete log runs.'));
      }
      await this._client.deleteLogRun(envId, run.name, run.etag);
      this._set({ ...this._state, notice: null });
    } catch (error) {
      this._set({
        ...this._state,
        notice: logDeleteNotice(error, label, this._trans)
      });
    }
    await this.load(envId);
  }

  private _set(state: ILogRunsState): void {
    this._state = state;
    this._changed(state);
  }

  private _client: ITfEnvClient;
  private _trans: TranslationBundle;
  private _changed: (state: ILogRunsState) => void;
  private _generation = 0;
  private _state: ILogRunsState = {
    environment: null,
    listing: null,
    error: null,
    notice: null,
    loading: false
  };
}
