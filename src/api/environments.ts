// Shapes of the server's answers about the catalog: GET /tfenv/environments,
// /environments/{id}/image and /environments/{id}/probe.

import type { IChoices } from './choices';

/**
 * The environment facts the server returns for every catalog entry; the same
 * object is the `metadata.tfenv` block of a `tfenv-<id>` kernelspec.
 */
export interface IEnvironmentSummary {
  id: string;
  /**
   * `tfenv-<id>`.
   */
  kernel_name: string;
  display_name: string;
  description?: string;
  image: string;
  /**
   * The `sha256:` digest when the catalog pins the image by digest.
   */
  digest?: string | null;
  tensorflow?: string | null;
  gpus: string | number | string[] | null;
  /**
   * "CPU", "all GPUs", "1 GPU", ...
   */
  gpu_label: string;
  network?: string;
  source?: string;
  /**
   * Resources the user chooses at launch (docs/choices.md); null or absent
   * when the entry offers none.
   */
  choices?: IChoices | null;
  /**
   * A derived environment (docs/building.md): its base and the packages it
   * adds; null or absent for a plain image.
   */
  derived?: IDerived | null;
}

/**
 * `environments[].derived`: what `jupyter tfenv build` adds to the base.
 */
export interface IDerived {
  /**
   * The base as the catalog names it (an entry id or an image).
   */
  base: string;
  base_image: string;
  packages: { name: string; version: string }[];
  /**
   * The hash of the build's inputs (the image tag's content).
   */
  inputs: string;
}

/**
 * Whether an environment's image is on the Docker engine.
 */
export interface IImagePresence {
  /**
   * null when the Docker engine could not be asked (see `error`).
   */
  present: boolean | null;
  image_id?: string | null;
  size?: number | null;
  error?: string;
}

/**
 * One entry of `GET /tfenv/environments`.
 */
export interface IEnvironment extends IEnvironmentSummary {
  image_status?: IImagePresence | null;
  probe?: IProbe | null;
  /**
   * Whether the image can use this host's GPUs (its probe against the
   * driver's CUDA version and the devices' compute capabilities); absent from
   * servers older than the field (no mark then).
   */
  compatibility?: ICompatibility | null;
}

/**
 * `GET /tfenv/environments` → `environments[].compatibility`:
 *
 * - `ok`: the image's CUDA build and compute capabilities fit this host;
 * - `incompatible`: they do not (`message` says what to do: a newer driver,
 *   another image); the server refuses a start unless the admin allows it;
 * - `unknown`: the probe cannot tell (not probed yet, no NVML on the host);
 * - `not_applicable`: a CPU environment.
 */
export interface ICompatibility {
  state: CompatibilityState;
  message?: string | null;
  /**
   * Only in `GET /tfenv/environments/{id}`: the facts compared.
   */
  details?: { [key: string]: unknown } | null;
}

export type CompatibilityState =
  'ok' | 'incompatible' | 'unknown' | 'not_applicable';

/**
 * A catalog entry that was left out, and why.
 */
export interface ICatalogProblem {
  source: string;
  entry: string;
  field: string;
  message: string;
}

/**
 * Reply of `GET /tfenv/environments`.
 */
export interface IEnvironmentsReply {
  environments: IEnvironment[];
  problems: ICatalogProblem[];
  /**
   * Whether this server pulls images; absent from servers older than the
   * field (they do).
   */
  pulls?: IPullCapability;
  /**
   * Present only when the server and its kernels are different users:
   * kernels cannot write into what JupyterLab makes.
   */
  files?: IFilesWarning;
  /**
   * The Docker engine kernels run on (`docker info`); null when it did not
   * answer, and in a JupyterHub (the broker's host is its admin's to check);
   * absent from servers older than the field.
   */
  engine?: IEngineState | null;
}

/**
 * `GET /tfenv/environments` → `engine`: with `live_restore` false an engine
 * restart or upgrade stops every kernel container (docs/operations.md).
 * `host` is `$DOCKER_HOST` without any user or password.
 */
export interface IEngineState {
  host: string;
  version: string | null;
  live_restore: boolean;
}

/**
 * `GET /tfenv/environments` → `files`: folders and files made in JupyterLab
 * (New Folder, uploads, new notebooks) belong to `server_uid`, and a kernel
 * running as `kernel_uid` cannot write into them (PermissionError).
 * `message` is the server's start-up warning.
 */
export interface IFilesWarning {
  server_uid: number;
  kernel_uid: number;
  message: string;
}

/**
 * `GET /tfenv/environments` → `pulls`: in a JupyterHub (broker mode) an admin
 * pulls images on the host, and `message` says so.
 */
export interface IPullCapability {
  allowed: boolean;
  message: string | null;
}

/**
 * Lock status of an image (`GET /tfenv/environments/{id}/image` → `lock`).
 */
export interface ILockStatus {
  locked: string | null;
  local: string[];
  present?: boolean;
  matches: boolean | null;
  pinned_by_digest?: boolean;
  /** `c.TFEnvCatalog.lock_policy`: enforce, strict, warn or off. */
  policy?: 'enforce' | 'strict' | 'warn' | 'off';
  lock_file?: string | null;
  lock_file_exists?: boolean;
  /** Whether the policy refuses a kernel start now (strict: also when not locked). */
  refused?: boolean;
}

/**
 * Reply of `GET /tfenv/environments/{id}/image`.
 */
export interface IImageStatus {
  environment: string;
  image: string;
  present: boolean;
  image_id: string | null;
  repo_digests?: string[];
  size?: number | null;
  created?: string | null;
  architecture?: string | null;
  lock?: ILockStatus | null;
}

/**
 * A GPU TensorFlow sees inside the image (probe).
 */
export interface IProbeGpu {
  name?: string | null;
  device: string;
  compute_capability?: string | null;
}

/**
 * What an image holds, found by a throwaway container (cached by image id).
 */
export interface IProbe {
  state?: 'ok' | 'not_probed';
  environment?: string;
  image?: string;
  image_id?: string;
  cached?: boolean;
  probed_at?: string;
  python?: string | null;
  tensorflow?: string | null;
  keras?: string | null;
  numpy?: string | null;
  ipykernel?: string | null;
  os?: string | null;
  build?: {
    cuda_version?: string | null;
    cudnn_version?: string | null;
    is_cuda_build?: boolean | null;
    is_rocm_build?: boolean | null;
  } | null;
  gpus?: IProbeGpu[] | null;
  /**
   * Every Python package the image's interpreter sees, name → version
   * (null for Python before 3.8); the panel's comparison reads it.
   */
  packages?: { [name: string]: string } | null;
  gpu_state?: { state: string; message: string } | null;
  errors?: { [key: string]: string };
}
