// Shapes of /tfenv/tensorboards and /tfenv/logs/{environment} (docs/tensorboard.md,
// docs/checkpoints.md "Log runs").

/**
 * What a TensorBoard shows: one environment's logs, or every environment's
 * logs side by side (`compare`).
 */
export type TensorBoardTarget =
  { view: 'environment'; environment: string } | { view: 'compare' };

/**
 * A TensorBoard of the current user (`GET /tfenv/tensorboards/{name}`).
 */
export interface ITensorBoard {
  /** `env-<id>` or `compare`. */
  name: string;
  view: 'environment' | 'compare';
  environment: string | null;
  /** The image whose TensorFlow serves the logs. */
  image: string;
  state: 'starting' | 'running' | 'error';
  /** Why it failed (state `error`), or what it does while starting. */
  message: string | null;
  /** Where TensorBoard itself is served (proxied by the server). */
  url: string;
  started_at?: string | null;
  last_activity?: string | null;
}

/**
 * One run of an environment's log folder (`GET /tfenv/logs/{environment}`).
 */
export interface ILogRun {
  /** A folder directly in the log folder, or `.` for the files at its top. */
  name: string;
  last_write: string | null;
  size: number;
  files?: number;
  /** Sent back in `If-Match` to delete the run. */
  etag: string;
}

/**
 * Reply of `GET /tfenv/logs/{environment}`.
 */
export interface ILogListing {
  environment: string;
  exists: boolean;
  location?: string;
  container_path?: string;
  truncated?: boolean;
  runs: ILogRun[];
}
