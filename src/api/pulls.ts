// Shapes of /tfenv/pulls and /tfenv/pulls/{id}/events.

/**
 * A pull of an image (`/tfenv/pulls/{id}`).
 */
export interface IPull {
  id: string;
  environment: string;
  image: string;
  reference?: string;
  locked?: string | null;
  state: 'pulling' | 'done' | 'error' | 'cancelled';
  layers?: { [id: string]: { status: string; current: number; total: number } };
  current?: number;
  total?: number;
  percent?: number | null;
  message?: string | null;
  image_id?: string | null;
  digest?: string | null;
  started?: string | null;
  finished?: string | null;
}

/**
 * Handlers of a followed pull.
 */
export interface IPullFollower {
  /**
   * One server-sent event (`snapshot`, `start`, `status`, `layer`, `done`,
   * `error`, `cancelled`) or, when polling, a `snapshot` of the pull.
   */
  onEvent(type: string, data: any): void;
  /**
   * Following failed for good (neither events nor polling work).
   */
  onFailure(error: Error): void;
}
