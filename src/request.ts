import { URLExt } from '@jupyterlab/coreutils';

import { ServerConnection } from '@jupyterlab/services';

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
        : typeof data === 'string' && data.length > 0
          ? data
          : undefined;
    throw new ServerConnection.ResponseError(response, message);
  }

  return data as T;
}
