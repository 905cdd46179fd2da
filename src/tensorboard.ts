import type { TranslationBundle } from '@jupyterlab/translation';
import type { IDisposable } from '@lumino/disposable';

import {
  type ITensorBoard,
  type ITfEnvClient,
  type TensorBoardTarget,
  TfEnvApiError
} from './api';

/**
 * The server's name of a TensorBoard (`env-<id>` or `compare`): one per user
 * and view, so a tab is reused by it.
 */
export function tensorBoardName(target: TensorBoardTarget): string {
  return target.view === 'compare' ? 'compare' : `env-${target.environment}`;
}

/**
 * The tab's title: "TensorBoard: <environment's display name>" or
 * "TensorBoard: compare".
 */
export function tensorBoardTitle(
  target: TensorBoardTarget,
  displayName: string | null,
  trans: TranslationBundle
): string {
  if (target.view === 'compare') {
    return trans.__('TensorBoard: compare');
  }
  return trans.__('TensorBoard: %1', displayName ?? target.environment);
}

/**
 * Where a TensorBoard session stands: `requesting` (the POST is under way),
 * `starting` (the server starts its container: polled), `running` (its URL
 * can be shown) or `error` (the message says why; Retry starts again).
 */
export interface ITensorBoardState {
  phase: 'requesting' | 'starting' | 'running' | 'error';
  /** The image whose TensorFlow serves the logs, once the server said. */
  image: string | null;
  /** Where TensorBoard is served, once running. */
  url: string | null;
  /** The server's message (starting: what it does; error: why). */
  message: string | null;
}

/**
 * The line the tab shows while the TensorBoard starts.
 */
export function startingText(
  state: ITensorBoardState,
  trans: TranslationBundle
): string {
  return state.image
    ? trans.__('Starting TensorBoard in %1…', state.image)
    : trans.__('Starting TensorBoard…');
}

/**
 * What a failed request means for the user, with what to do. The server's
 * messages say it already (which image to pull, why not on a hub): they are
 * shown as they are; only an unreachable server or a reply without a message
 * gets words of its own.
 */
export function tensorBoardErrorText(
  error: unknown,
  trans: TranslationBundle
): string {
  const message =
    error instanceof Error && error.message ? error.message : String(error);
  if (!(error instanceof TfEnvApiError)) {
    return trans.__('TensorBoard could not be started: %1', message);
  }
  if (error.status === null) {
    return trans.__(
      'The Jupyter server could not be reached (%1). Check that it runs, then retry.',
      message
    );
  }
  if (error.message) {
    return error.message;
  }
  return trans.__(
    'TensorBoard could not be started (HTTP %1) and the server gave no reason: see its log.',
    error.status
  );
}

/**
 * How many polls in a row may fail (network) before the session gives up.
 */
const MAX_POLL_FAILURES = 5;

/**
 * One tab's TensorBoard: asks the server to start it (or reuse it), polls it
 * while it starts, and says where it stands. A retry starts over; answers
 * that arrive after a retry or after dispose are dropped. Never rejects: every
 * failure becomes the `error` phase with a message.
 */
export class TensorBoardSession implements IDisposable {
  constructor(options: TensorBoardSession.IOptions) {
    this.target = options.target;
    this._client = options.client;
    this._interval = options.interval ?? 1000;
    this._changed = options.changed;
    this._trans = options.trans;
  }

  readonly target: TensorBoardTarget;

  get name(): string {
    return this._server?.name ?? tensorBoardName(this.target);
  }

  get state(): ITensorBoardState {
    return this._state;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /**
   * Start (or reuse) the TensorBoard and follow it until it runs or fails.
   * Resolves once it is settled (running or error) or disposed.
   */
  start(): Promise<void> {
    if (this._disposed) {
      return Promise.resolve();
    }
    this._stopTimer();
    this._finish(); // an earlier start() settles: it was superseded
    const generation = ++this._generation;
    this._failures = 0;
    this._set({
      phase: 'requesting',
      image: this._state.image,
      url: null,
      message: null
    });
    return new Promise<void>(resolve => {
      this._settle = resolve;
      void this._request(generation);
    });
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._generation += 1;
    this._stopTimer();
    this._finish();
  }

  private async _request(generation: number): Promise<void> {
    const client = this._client;
    if (!client.startTensorBoard) {
      this._fail(
        generation,
        this._trans.__(
          'This Jupyter server cannot run TensorBoard (jupyter_tfenv without it): update jupyter_tfenv.'
        )
      );
      return;
    }
    let board: ITensorBoard;
    try {
      board = await client.startTensorBoard(this.target);
    } catch (error) {
      this._fail(generation, tensorBoardErrorText(error, this._trans));
      return;
    }
    this._apply(generation, board);
  }

  private async _poll(generation: number): Promise<void> {
    this._timer = null;
    if (generation !== this._generation || !this._client.getTensorBoard) {
      return;
    }
    let board: ITensorBoard;
    try {
      board = await this._client.getTensorBoard(this.name);
    } catch (error) {
      if (generation !== this._generation) {
        return;
      }
      this._failures += 1;
      if (error instanceof TfEnvApiError && error.status === 404) {
        this._fail(
          generation,
          this._trans.__(
            'The TensorBoard stopped while it started (the server stopped it or restarted). Retry to start it again.'
          )
        );
      } else if (
        this._failures >= MAX_POLL_FAILURES ||
        (error instanceof TfEnvApiError &&
          error.status !== null &&
          error.status !== 503)
      ) {
        this._fail(generation, tensorBoardErrorText(error, this._trans));
      } else {
        this._schedule(generation);
      }
      return;
    }
    this._failures = 0;
    this._apply(generation, board);
  }

  private _apply(generation: number, board: ITensorBoard): void {
    if (generation !== this._generation) {
      return;
    }
    this._server = board;
    const image = board.image || this._state.image;
    if (board.state === 'running') {
      this._set({ phase: 'running', image, url: board.url, message: null });
      this._finish();
    } else if (board.state === 'error') {
      this._set({
        phase: 'error',
        image,
        url: null,
        message:
          board.message ||
          this._trans.__('TensorBoard failed to start (no reason given).')
      });
      this._finish();
    } else {
      this._set({
        phase: 'starting',
        image,
        url: null,
        message: board.message ?? null
      });
      if (!this._client.getTensorBoard) {
        this._fail(
          generation,
          this._trans.__('This client cannot follow a starting TensorBoard.')
        );
        return;
      }
      this._schedule(generation);
    }
  }

  private _fail(generation: number, message: string): void {
    if (generation !== this._generation) {
      return;
    }
    this._set({ phase: 'error', image: this._state.image, url: null, message });
    this._finish();
  }

  private _schedule(generation: number): void {
    this._stopTimer();
    this._timer = setTimeout(() => void this._poll(generation), this._interval);
  }

  private _stopTimer(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _finish(): void {
    const settle = this._settle;
    this._settle = null;
    settle?.();
  }

  private _set(state: ITensorBoardState): void {
    this._state = state;
    if (!this._disposed) {
      this._changed?.(state);
    }
  }

  private _client: ITfEnvClient;
  private _interval: number;
  private _changed?: (state: ITensorBoardState) => void;
  private _trans: TranslationBundle;
  private _state: ITensorBoardState = {
    phase: 'requesting',
    image: null,
    url: null,
    message: null
  };
  private _server: ITensorBoard | null = null;
  private _generation = 0;
  private _failures = 0;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _settle: (() => void) | null = null;
  private _disposed = false;
}

export namespace TensorBoardSession {
  export interface IOptions {
    client: ITfEnvClient;
    target: TensorBoardTarget;
    trans: TranslationBundle;
    /** Milliseconds between polls while it starts (default 1000). */
    interval?: number;
    /** Called on every change of `state`. */
    changed?: (state: ITensorBoardState) => void;
  }
}
