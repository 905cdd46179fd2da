/**
 * An error of the tfenv REST API: the HTTP status (null when the server
 * could not be reached) and the server's message.
 */
export class TfEnvApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null
  ) {
    super(message);
    this.name = 'TfEnvApiError';
  }
}
