import {
  ENGINE_UNREACHABLE,
  engineUnreachableMessage,
  type IEnvironment
} from './api';
import type { IEngineOutage } from './state';

/**
 * The model's part that knows whether the Docker engine behind the server
 * answers: the server's 503 (`DockerUnavailableError`) or the listing's image
 * presences say it does not; an answer that needed the engine (a kernel's
 * status, an image's) says it does again.
 */
export class EngineOutage {
  /**
   * The server's message and since when; null while the engine answers.
   */
  get current(): IEngineOutage | null {
    return this._current;
  }

  /**
   * A failed request: kept when it says the engine could not be asked.
   */
  failed(error: unknown): void {
    const message = engineUnreachableMessage(error);
    if (message) {
      this._set(message);
    }
  }

  /**
   * An answer that needed the engine.
   */
  answered(): void {
    this._current = null;
  }

  /**
   * The catalog listing answers without the engine: an image presence of
   * null whose error says the engine could not be reached; without one, the
   * engine answered (a presence, or a refusal: its own words).
   */
  listed(envs: readonly IEnvironment[]): void {
    const failed = envs
      .map(env => env.image_status ?? null)
      .find(
        s =>
          s?.present === null &&
          typeof s.error === 'string' &&
          ENGINE_UNREACHABLE.test(s.error)
      );
    if (failed?.error) {
      this._set(failed.error);
    } else {
      this.answered();
    }
  }

  /**
   * The end of one round of requests. The outage's start is kept through a
   * round in which one answer (a listing from the server's short-lived image
   * cache) came before the outage's 503, and forgotten after a round
   * without an outage.
   */
  settled(): void {
    if (!this._current) {
      this._since = null;
    }
  }

  private _set(message: string): void {
    this._since = this._since ?? Date.now();
    this._current = { message, since: this._since };
  }

  private _current: IEngineOutage | null = null;
  private _since: number | null = null;
}
