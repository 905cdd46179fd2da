/**
 * An error of the tfenv REST API: the HTTP status (null when the server
 * could not be reached), the server's message and its `reason` (the name of
 * the server's error class, e.g. `DockerUnavailableError`), when it gave one.
 */
export class TfEnvApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
    readonly reason: string | null = null
  ) {
    super(message);
    this.name = 'TfEnvApiError';
  }
}

/**
 * How the server's "engine unreachable" messages begin (jupyter_tfenv's
 * `unreachable_error`): the image presences of `GET /tfenv/environments`
 * carry only the message, no reason.
 */
export const ENGINE_UNREACHABLE = /Cannot reach the Docker engine/;

/**
 * The server's words for "the Docker engine does not answer" (its
 * `DockerUnavailableError`, answered 503), else null. The Jupyter server
 * itself answered: only the engine behind it cannot be asked.
 */
export function engineUnreachableMessage(error: unknown): string | null {
  if (!(error instanceof TfEnvApiError) || error.status !== 503) {
    return null;
  }
  if (
    error.reason === 'DockerUnavailableError' ||
    ENGINE_UNREACHABLE.test(error.message)
  ) {
    return error.message;
  }
  return null;
}
