// Shapes of GET /tfenv/checkpoints/{environment}.

/**
 * One kept checkpoint of a TF checkpoint set (`GET /tfenv/checkpoints/{env}`).
 */
export interface ICheckpointEntry {
  prefix: string;
  step?: number | null;
  size?: number | null;
  mtime?: string | null;
  complete?: boolean | null;
}

/**
 * One item of a checkpoint listing.
 */
export interface ICheckpointItem {
  name: string;
  kind: string;
  path?: string;
  complete?: boolean | null;
  size?: number | null;
  mtime?: string | null;
  step?: number | null;
  etag: string;
  latest?: ICheckpointEntry | null;
  checkpoints?: ICheckpointEntry[];
}

/**
 * Reply of `GET /tfenv/checkpoints/{environment}`.
 */
export interface ICheckpointListing {
  environment: string;
  in_catalog?: boolean;
  exists: boolean;
  location?: string;
  container_path?: string;
  truncated?: boolean;
  checkpoints: ICheckpointItem[];
}
