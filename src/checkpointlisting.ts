import type {
  ICheckpointItem,
  ICheckpointListing,
  IKernelStatus,
  ITfEnvClient
} from './api';
import type { ICheckpointsState } from './tokens';

/**
 * The model's checkpoint listings: the active environment's, and the other
 * environments' the active kernel mounted read-only. The model says when to
 * list (its ticks while the panel is shown, its refresh, the environment or
 * the kernel changing); this keeps what was listed, drops late answers and
 * calls `changed` when something the views render changed.
 */
export class CheckpointListing {
  constructor(options: CheckpointListing.IOptions) {
    this._client = options.client;
    this._interval = options.interval;
    this._changed = options.changed;
  }

  /**
   * Whether the client lists checkpoints.
   */
  get canList(): boolean {
    return typeof this._client.checkpoints === 'function';
  }

  /**
   * The other environments' listings (or why they failed), by environment.
   */
  get others(): ReadonlyMap<string, ICheckpointListing | string> {
    return this._others;
  }

  /**
   * The state of an environment's listing (null without an environment); a
   * loading one until it was asked for.
   */
  stateOf(envId: string | null): ICheckpointsState | null {
    if (envId === null) {
      return null;
    }
    const state = this._state;
    if (state && state.environment === envId) {
      return state;
    }
    return { environment: envId, listing: null, error: null, loading: true };
  }

  /**
   * List an environment's checkpoints when it is not the one listed, when
   * `force` (unless a listing is under way), or when the last listing is a
   * refresh interval old (0.9 of it; never while the model does not poll).
   */
  poll(envId: string | null, force: boolean): Promise<void> {
    if (envId === null || this._isDisposed) {
      return Promise.resolve();
    }
    if (this._state?.environment !== envId) {
      return this.list(envId);
    }
    if (this._inFlight) {
      return Promise.resolve();
    }
    const interval = this._interval();
    const due = interval > 0 && Date.now() - this._at >= interval * 0.9;
    return force || due ? this.list(envId) : Promise.resolve();
  }

  /**
   * `GET /tfenv/checkpoints/{env}` now; only the latest request's answer
   * counts.
   */
  async list(envId: string): Promise<void> {
    if (this._state?.environment !== envId) {
      this._state = {
        environment: envId,
        listing: null,
        error: null,
        loading: true
      };
      this._changed();
    }
    if (!this._client.checkpoints) {
      this._state = { ...this._state!, loading: false };
      return;
    }
    const seq = ++this._seq;
    this._at = Date.now();
    this._inFlight = true;
    let next: ICheckpointsState;
    try {
      const listing = await this._client.checkpoints(envId);
      next = { environment: envId, listing, error: null, loading: false };
    } catch (error) {
      next = {
        environment: envId,
        listing: null,
        error: error instanceof Error ? error.message : String(error),
        loading: false
      };
    }
    if (seq !== this._seq || this._isDisposed) {
      return;
    }
    this._inFlight = false;
    if (this._state?.environment === envId) {
      this._state = next;
      this._changed();
    }
  }

  /**
   * List the checkpoints of the environments a kernel mounted read-only
   * (its `checkpoints.others`), when the kernel or that set changed, or
   * when `force`.
   */
  async pollOthers(
    kernel: IKernelStatus | null,
    force: boolean
  ): Promise<void> {
    const others = kernel?.checkpoints?.others ?? [];
    const key = `${kernel?.kernel_id ?? ''}:${others
      .map(o => o.environment)
      .join(',')}`;
    if ((key === this._othersKey && !force) || this._isDisposed) {
      return;
    }
    this._othersKey = key;
    // An answer for another kernel or set is not this one's.
    const seq = ++this._othersSeq;
    const client = this._client;
    if (!others.length || !client.checkpoints) {
      return;
    }
    const envs = others.map(o => o.environment);
    const results = await Promise.all(
      envs.map(id =>
        client.checkpoints!(id).then(
          listing => listing as ICheckpointListing | string,
          (error: unknown) =>
            error instanceof Error ? error.message : String(error)
        )
      )
    );
    if (seq !== this._othersSeq || this._isDisposed) {
      return;
    }
    const listings = new Map<string, ICheckpointListing | string>();
    envs.forEach((id, i) => listings.set(id, results[i]));
    this._others = listings;
    this._changed();
  }

  /**
   * Delete a checkpoint item as listed (its etag is sent as `If-Match`) and
   * list the environment again, also when the server refused (a 412 means
   * the list is out of date) if it is still the one shown (`shown`, asked
   * once the server answered); nothing when the client cannot delete.
   */
  async remove(
    envId: string,
    item: ICheckpointItem,
    shown: (envId: string) => boolean
  ): Promise<void> {
    if (!this._client.deleteCheckpoint) {
      return;
    }
    try {
      await this._client.deleteCheckpoint(envId, item.name, item.etag);
    } finally {
      if (!this._isDisposed && shown(envId)) {
        void this.list(envId);
      }
    }
  }

  /**
   * Stop: late answers are dropped, nothing is listed any more.
   */
  dispose(): void {
    this._isDisposed = true;
  }

  private _client: ITfEnvClient;
  private _interval: () => number;
  private _changed: () => void;
  private _isDisposed = false;
  private _state: ICheckpointsState | null = null;
  private _at = 0;
  private _inFlight = false;
  private _seq = 0;
  private _others = new Map<string, ICheckpointListing | string>();
  private _othersKey: string | null = null;
  private _othersSeq = 0;
}

/**
 * The checkpoint listing's statics.
 */
export namespace CheckpointListing {
  export interface IOptions {
    client: ITfEnvClient;
    /**
     * The model's refresh interval in ms (0: no periodic refresh).
     */
    interval: () => number;
    /**
     * Called when a listing the views render changed.
     */
    changed: () => void;
  }
}
