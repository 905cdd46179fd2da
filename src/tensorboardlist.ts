import type { ITensorBoard, ITfEnvClient } from './api';

/**
 * The panel's list of the user's TensorBoards (`GET /tfenv/tensorboards`):
 * read again at most every `minInterval` ms when asked (the panel asks on the
 * model's ticks, which run while it is shown), at once when forced; a stop
 * is sent and the list read again. Never rejects: a failure is `error`.
 */
export class TensorBoardList {
  constructor(options: {
    client: ITfEnvClient;
    changed: () => void;
    minInterval?: number;
    now?: () => number;
  }) {
    this._client = options.client;
    this._changed = options.changed;
    this._minInterval = options.minInterval ?? 5000;
    this._now = options.now ?? (() => Date.now());
  }

  /**
   * Whether the server has TensorBoards (the client can list them).
   */
  get canList(): boolean {
    return typeof this._client.listTensorBoards === 'function';
  }

  get boards(): readonly ITensorBoard[] {
    return this._boards;
  }

  get error(): string | null {
    return this._error;
  }

  /**
   * Read the list when it is older than the interval (or `force`), unless a
   * read is under way.
   */
  async poll(force = false): Promise<void> {
    if (!this._client.listTensorBoards || this._reading) {
      return;
    }
    if (!force && this._now() - this._readAt < this._minInterval) {
      return;
    }
    this._reading = true;
    this._readAt = this._now();
    try {
      const boards = await this._client.listTensorBoards();
      this._boards = [...boards].sort((a, b) => a.name.localeCompare(b.name));
      this._error = null;
    } catch (error) {
      // 501 on a hub (not yet there): nothing to list, nothing to say.
      const status = (error as { status?: number | null }).status;
      this._boards = [];
      this._error =
        status === 501
          ? null
          : error instanceof Error
            ? error.message
            : String(error);
    } finally {
      this._reading = false;
    }
    this._changed();
  }

  /**
   * Stop a TensorBoard, then read the list again.
   */
  async stop(name: string): Promise<void> {
    try {
      await this._client.stopTensorBoard?.(name);
    } catch (error) {
      this._error = error instanceof Error ? error.message : String(error);
      this._changed();
    }
    await this.poll(true);
  }

  private _client: ITfEnvClient;
  private _changed: () => void;
  private _minInterval: number;
  private _now: () => number;
  private _boards: ITensorBoard[] = [];
  private _error: string | null = null;
  private _readAt = -Infinity;
  private _reading = false;
}
