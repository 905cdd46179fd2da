import { URLExt } from '@jupyterlab/coreutils';

import { ServerConnection } from '@jupyterlab/services';
import type { IDisposable } from '@lumino/disposable';

import type { ICheckpointListing } from './checkpoints';
import type { ITfEnvClient } from './client';
import type {
  IEnvironment,
  IEnvironmentsReply,
  IImageStatus,
  IProbe
} from './environments';
import { TfEnvApiError } from './errors';
import type { IGpuOverview } from './gpus';
import type { IKernelStatus } from './kernels';
import type { IBuild } from './builds';
import type { IPull, IPullFollower } from './pulls';
import type {
  ILogListing,
  ITensorBoard,
  TensorBoardTarget
} from './tensorboards';

/**
 * The URL namespace of the jupyter_tfenv server extension.
 */
export const API_NAMESPACE = 'tfenv';

/**
 * Call the jupyter_tfenv server extension REST API.
 *
 * @param endPoint API REST end point, relative to `<baseUrl>/tfenv/`
 * @param init Initial values for the request
 * @param settings The server settings to use; pass
 *   `app.serviceManager.serverSettings` so the request carries the same
 *   authentication (token/XSRF) as the rest of JupyterLab.
 * @returns The response body interpreted as JSON
 *
 * @throws {ServerConnection.NetworkError} if the server cannot be reached
 * @throws {ServerConnection.ResponseError} if the server answers with an error
 *   status; its message is the server's JSON `message` when there is one
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const requestUrl = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);

  let response: Response;
  try {
    response = await ServerConnection.makeRequest(requestUrl, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }

  const text = await response.text();
  let data: any = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      if (response.ok) {
        console.warn('jupyter-tfenv: response is not JSON.', response);
      }
    }
  }

  if (!response.ok) {
    const message =
      data && typeof data === 'object' && typeof data.message === 'string'
        ? data.message
        : typeof data === 'string' && data.length > 0 && !/^\s*</.test(data)
          ? data
          : undefined;
    const error = new ServerConnection.ResponseError(response, message);
    if (data && typeof data === 'object' && typeof data.reason === 'string') {
      // The server's error class (`DockerUnavailableError`, …).
      (error as ServerConnection.ResponseError & { reason?: string }).reason =
        data.reason;
    }
    throw error;
  }

  return data as T;
}

/**
 * Events of `/tfenv/pulls/{id}/events`.
 */
export const PULL_EVENTS = [
  'snapshot',
  'start',
  'status',
  'layer',
  'progress',
  'done',
  'error',
  'cancelled'
];

/**
 * Events of `/tfenv/builds/{id}/events`.
 */
export const BUILD_EVENTS = ['snapshot', 'start', 'progress', 'done', 'error'];

const TERMINAL = ['done', 'error', 'cancelled'];

/**
 * The typed REST client of the jupyter_tfenv server extension. Errors are
 * {@link TfEnvApiError}s with the HTTP status and the server's message.
 */
export class TfEnvClient implements ITfEnvClient {
  constructor(
    readonly serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings(),
    options: { pollInterval?: number } = {}
  ) {
    this._pollInterval = options.pollInterval ?? 1000;
  }

  environments(): Promise<IEnvironmentsReply> {
    return this._get<IEnvironmentsReply>('environments').then(reply => ({
      environments: normalizeEnvironments(reply),
      problems: Array.isArray((reply as any)?.problems)
        ? (reply as any).problems
        : [],
      pulls:
        typeof (reply as any)?.pulls?.allowed === 'boolean'
          ? (reply as any).pulls
          : undefined,
      files:
        typeof (reply as any)?.files?.kernel_uid === 'number'
          ? (reply as any).files
          : undefined,
      // Checked by the model (liverestore.ts normalizeEngine).
      engine: (reply as any)?.engine
    }));
  }

  imageStatus(envId: string): Promise<IImageStatus> {
    return this._get(`environments/${encodeURIComponent(envId)}/image`);
  }

  probe(envId: string, run: boolean): Promise<IProbe> {
    return this._call(
      `environments/${encodeURIComponent(envId)}/probe`,
      run ? 'POST' : 'GET'
    );
  }

  build(envId: string): Promise<IBuild> {
    return this._call(
      `environments/${encodeURIComponent(envId)}/build`,
      'POST'
    );
  }

  async listBuilds(): Promise<IBuild[]> {
    const reply = await this._get<{ builds?: IBuild[] }>('builds');
    return Array.isArray(reply?.builds) ? reply.builds : [];
  }

  getBuild(buildId: string): Promise<IBuild> {
    return this._get(`builds/${encodeURIComponent(buildId)}`);
  }

  /**
   * Follow a build as {@link followPull} follows a pull: the events of
   * `/tfenv/builds/{id}/events`, else polling `GET /tfenv/builds/{id}`.
   */
  followBuild(buildId: string, follower: IPullFollower): IDisposable {
    return this._followEvents(
      'builds',
      buildId,
      BUILD_EVENTS,
      () => this.getBuild(buildId),
      follower
    );
  }

  startPull(envId: string): Promise<IPull> {
    return this._call(`environments/${encodeURIComponent(envId)}/pull`, 'POST');
  }

  getPull(pullId: string): Promise<IPull> {
    return this._get(`pulls/${encodeURIComponent(pullId)}`);
  }

  async listPulls(): Promise<IPull[]> {
    const reply = await this._get<{ pulls?: IPull[] }>('pulls');
    return Array.isArray(reply?.pulls) ? reply.pulls : [];
  }

  cancelPull(pullId: string): Promise<IPull> {
    return this._call(`pulls/${encodeURIComponent(pullId)}`, 'DELETE');
  }

  kernel(kernelId: string): Promise<IKernelStatus> {
    return this._get(`kernels/${encodeURIComponent(kernelId)}`);
  }

  gpus(): Promise<IGpuOverview> {
    return this._get('gpus');
  }

  /**
   * Follow a pull by server-sent events (the session cookie authenticates
   * the GET; the token is appended where the server settings say so); when
   * EventSource is missing or the stream breaks before the end, poll
   * `GET /tfenv/pulls/{id}` instead.
   */
  followPull(pullId: string, follower: IPullFollower): IDisposable {
    return this._followEvents(
      'pulls',
      pullId,
      PULL_EVENTS,
      () => this.getPull(pullId),
      follower
    );
  }

  /**
   * Server-sent events of `/tfenv/<resource>/<id>/events` (a pull's or a
   * build's), polling `get` where they fail; the job's `state` ends it.
   */
  private _followEvents(
    resource: 'pulls' | 'builds',
    id: string,
    eventNames: string[],
    get: () => Promise<{ state: string }>,
    follower: IPullFollower
  ): IDisposable {
    let disposed = false;
    let source: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let polling = false;
    let failures = 0;

    const stop = (): void => {
      disposed = true;
      source?.close();
      source = null;
      if (timer !== null) {
        clearTimeout(timer);
        timer = null;
      }
    };

    const poll = async (): Promise<void> => {
      timer = null;
      if (disposed) {
        return;
      }
      try {
        const job = await get();
        failures = 0;
        if (disposed) {
          return;
        }
        if (TERMINAL.includes(job.state)) {
          follower.onEvent(job.state, job);
          stop();
          return;
        }
        follower.onEvent('snapshot', job);
      } catch (error) {
        failures += 1;
        if (
          (error instanceof TfEnvApiError && error.status === 404) ||
          failures >= 5
        ) {
          stop();
          follower.onFailure(error as Error);
          return;
        }
      }
      if (!disposed) {
        timer = setTimeout(() => void poll(), this._pollInterval);
      }
    };

    const fallBack = (): void => {
      source?.close();
      source = null;
      if (!polling && !disposed) {
        polling = true;
        void poll();
      }
    };

    if (typeof EventSource === 'undefined') {
      fallBack();
    } else {
      const settings = this.serverSettings;
      let url = URLExt.join(
        settings.baseUrl,
        API_NAMESPACE,
        resource,
        encodeURIComponent(id),
        'events'
      );
      if (settings.appendToken && settings.token) {
        url += `?token=${encodeURIComponent(settings.token)}`;
      }
      try {
        source = new EventSource(url, { withCredentials: true });
      } catch {
        fallBack();
      }
      if (source) {
        const listener = (event: MessageEvent): void => {
          if (disposed) {
            return;
          }
          let data: any = null;
          try {
            data = JSON.parse(event.data);
          } catch {
            return;
          }
          follower.onEvent(event.type, data);
          if (TERMINAL.includes(event.type)) {
            stop();
          }
        };
        for (const name of eventNames) {
          source.addEventListener(name, listener as EventListener);
        }
        // Also fired when the server ends the stream: only a stream that
        // breaks before the final event gets here with the pull unfinished.
        source.onerror = () => {
          if (!disposed) {
            fallBack();
          }
        };
      }
    }
    return {
      get isDisposed() {
        return disposed;
      },
      dispose: stop
    };
  }

  checkpoints(envId: string): Promise<ICheckpointListing> {
    return this._get(`checkpoints/${encodeURIComponent(envId)}`);
  }

  deleteCheckpoint(
    envId: string,
    name: string,
    etag?: string
  ): Promise<unknown> {
    const path = name.split('/').map(encodeURIComponent).join('/');
    return this._call(
      `checkpoints/${encodeURIComponent(envId)}/${path}`,
      'DELETE',
      etag ? { 'If-Match': `"${etag}"` } : undefined
    );
  }

  startTensorBoard(target: TensorBoardTarget): Promise<ITensorBoard> {
    const body =
      target.view === 'compare'
        ? { view: 'compare' }
        : { environment: target.environment };
    return this._call('tensorboards', 'POST', undefined, body);
  }

  getTensorBoard(name: string): Promise<ITensorBoard> {
    return this._get(`tensorboards/${encodeURIComponent(name)}`);
  }

  async listTensorBoards(): Promise<ITensorBoard[]> {
    const reply = await this._get<{ tensorboards?: ITensorBoard[] }>(
      'tensorboards'
    );
    return Array.isArray(reply?.tensorboards) ? reply.tensorboards : [];
  }

  stopTensorBoard(name: string): Promise<unknown> {
    return this._call(`tensorboards/${encodeURIComponent(name)}`, 'DELETE');
  }

  logRuns(envId: string): Promise<ILogListing> {
    return this._get(`logs/${encodeURIComponent(envId)}`);
  }

  /**
   * The run is named in the query: `.` (the log folder's top files) would not
   * survive as a path segment.
   */
  deleteLogRun(envId: string, run: string, etag: string): Promise<unknown> {
    return this._call(
      `logs/${encodeURIComponent(envId)}?run=${encodeURIComponent(run)}`,
      'DELETE',
      { 'If-Match': `"${etag}"` }
    );
  }

  private _get<T>(endPoint: string): Promise<T> {
    return this._call<T>(endPoint, 'GET');
  }

  private async _call<T>(
    endPoint: string,
    method: string,
    headers?: Record<string, string>,
    body?: unknown
  ): Promise<T> {
    const init: RequestInit = { method };
    if (headers) {
      init.headers = headers;
    }
    if (body !== undefined) {
      init.body = JSON.stringify(body);
    }
    try {
      return await requestAPI<T>(endPoint, init, this.serverSettings);
    } catch (error) {
      if (error instanceof ServerConnection.ResponseError) {
        const reason = (error as { reason?: unknown }).reason;
        throw new TfEnvApiError(
          error.message,
          error.response.status,
          typeof reason === 'string' ? reason : null
        );
      }
      const message = error instanceof Error ? error.message : String(error);
      throw new TfEnvApiError(message, null);
    }
  }

  private _pollInterval: number;
}

/**
 * Extract the list of environments from a `GET /tfenv/environments` reply
 * (an object with `environments`; a bare list is accepted too).
 */
export function normalizeEnvironments(reply: unknown): IEnvironment[] {
  if (Array.isArray(reply)) {
    return reply;
  }
  const list = (reply as { environments?: unknown } | null)?.environments;
  return Array.isArray(list) ? list : [];
}
