import type { ISessionContext } from '@jupyterlab/apputils';
import { Token } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import type { ISignal } from '@lumino/signaling';

import type { IProvenanceVerdict } from './provenance';
import type { IPullProgress } from './pullprogress';
import type { IPanelState } from './state';

/**
 * Command ids of the extension (all in the command palette, category
 * "TensorFlow environments").
 */
export namespace CommandIDs {
  /**
   * Open (reveal) the environment panel.
   */
  export const openPanel = 'tfenv:open-panel';
  /**
   * Change the active notebook's or console's kernel to another environment.
   * Args: `{environment?: string}` (an environment id; a picker when absent).
   */
  export const switchEnvironment = 'tfenv:switch-environment';
  /**
   * Pull an environment's image. Args: `{environment?: string}` (a picker when
   * absent).
   */
  export const pullImage = 'tfenv:pull-image';
  /**
   * Cancel the running pull of an environment. Args: `{environment: string}`.
   */
  export const cancelPull = 'tfenv:cancel-pull';
  /**
   * Refresh environments, GPUs and the active kernel's status now.
   */
  export const refresh = 'tfenv:refresh';
  /**
   * Create a notebook on an environment (the Launcher's "TensorFlow
   * environments" cards). Args: `{environment: string, cwd?: string}`.
   */
  export const createNotebook = 'tfenv:create-notebook';
}

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
}

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
  gpu_state?: { state: string; message: string } | null;
  errors?: { [key: string]: string };
}

/**
 * A GPU the kernel's container holds memory on.
 */
export interface IKernelGpuDevice {
  index: number;
  uuid?: string | null;
  name?: string | null;
  used_memory?: number | null;
  memory_used?: number | null;
  memory_total?: number | null;
  utilization_gpu?: number | null;
  pids?: number[];
}

/**
 * The live state of a kernel's container.
 */
export interface ILiveStatus {
  container_id?: string;
  name?: string;
  /**
   * Docker's container status ("running", "exited", ...), "starting" before
   * the container exists, "gone" once it was removed.
   */
  status: string | null;
  running: boolean;
  started_at?: string | null;
  finished_at?: string | null;
  exit_code?: number | null;
  oom_killed?: boolean;
  error?: string | null;
  message?: string;
  cpu_percent?: number | null;
  online_cpus?: number | null;
  cpu_limit?: number | null;
  memory_used?: number | null;
  memory_limit?: number | null;
  memory_limited?: boolean;
  pids_current?: number | null;
  pids_limit?: number | null;
  gpu?: {
    requested?: unknown[];
    state: string | null;
    message: string | null;
    devices: IKernelGpuDevice[];
  } | null;
}

/**
 * Reply of `GET /tfenv/kernels/{kernel_id}`.
 */
export interface IKernelStatus {
  kernel_id: string;
  environment: IEnvironmentSummary;
  container_id?: string | null;
  transport?: string;
  live?: ILiveStatus | null;
  probe?: IProbe | null;
  checkpoints?: IKernelCheckpoints | null;
}

/**
 * Another environment's checkpoint storage, mounted read-only in a kernel.
 */
export interface IOtherCheckpoints {
  environment: string;
  container_path: string;
  storage?: string;
  host_path?: string;
  volume?: string;
  read_only?: boolean;
}

/**
 * Where a kernel's checkpoints are (`GET /tfenv/kernels/{id}`: `checkpoints`).
 */
export interface IKernelCheckpoints {
  mode: string;
  /**
   * `/tfenv/checkpoints-of` (`$TFENV_CHECKPOINTS_OF_DIR`).
   */
  others_dir?: string;
  /**
   * The user's other environments with checkpoint storage, read-only.
   */
  others?: IOtherCheckpoints[];
}

/**
 * A process on a GPU (NVML), with the tfenv kernel it belongs to if any.
 */
export interface IGpuProcess {
  pid?: number;
  used_memory?: number | null;
  kernel_id?: string | null;
  container_id?: string | null;
  environment?: string | null;
}

/**
 * One host GPU (NVML).
 */
export interface IGpu {
  index: number;
  uuid?: string | null;
  name?: string | null;
  memory_used?: number | null;
  memory_total?: number | null;
  utilization_gpu?: number | null;
  utilization_memory?: number | null;
  temperature?: number | null;
  power_watts?: number | null;
  processes?: IGpuProcess[];
  error?: string;
}

/**
 * Reply of `GET /tfenv/gpus`.
 */
export interface IGpuOverview {
  state: 'ok' | 'no_nvml_library' | 'no_driver' | 'no_gpu' | 'error' | string;
  message: string;
  runtime?: {
    nvidia?: boolean;
    message?: string;
    default?: string;
    runtimes?: string[];
  } | null;
  driver_version?: string | null;
  cuda_driver_version?: string | null;
  gpus: IGpu[];
}

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

/**
 * The REST client the model talks to (see `TfEnvClient` in `request.ts`).
 */
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

export interface ITfEnvClient {
  environments(): Promise<IEnvironmentsReply>;
  imageStatus(envId: string): Promise<IImageStatus>;
  /**
   * The cached probe (`run: false`, never starts a container) or a probe run
   * now (`run: true`, a throwaway container; cached by image id).
   */
  probe(envId: string, run: boolean): Promise<IProbe>;
  startPull(envId: string): Promise<IPull>;
  getPull(pullId: string): Promise<IPull>;
  listPulls(): Promise<IPull[]>;
  cancelPull(pullId: string): Promise<IPull>;
  kernel(kernelId: string): Promise<IKernelStatus>;
  gpus(): Promise<IGpuOverview>;
  /**
   * Follow a pull's server-sent events (falling back to polling); dispose to
   * stop following (the pull goes on).
   */
  followPull(pullId: string, follower: IPullFollower): IDisposable;
  /**
   * The user's checkpoints of an environment.
   */
  checkpoints?(envId: string): Promise<ICheckpointListing>;
  /**
   * Delete a checkpoint item; `etag` as listed (sent as `If-Match`).
   */
  deleteCheckpoint?(
    envId: string,
    name: string,
    etag: string
  ): Promise<unknown>;
}

/**
 * The error of the last failed kernel start of a session context.
 */
export interface IStartError {
  /**
   * The kernelspec name that failed to start.
   */
  kernelName: string | null;
  message: string;
  traceback?: string;
}

/**
 * Who needs live data: polling runs while at least one consumer holds it.
 */
export type Consumer = 'panel' | 'status';

/**
 * The shared state of the extension: environments, GPUs, the active
 * notebook's or console's kernel, pulls.
 */
export interface ITfEnvModel extends IDisposable {
  /**
   * Emitted whenever anything the views render changes.
   */
  readonly changed: ISignal<ITfEnvModel, void>;
  /**
   * Emitted when a pull ends (done, error or cancelled).
   */
  readonly pullEnded: ISignal<ITfEnvModel, IPullProgress>;
  /**
   * Resolves after the first environments request (successful or not).
   */
  readonly ready: Promise<void>;
  /**
   * Polling interval in ms (0: no periodic refresh).
   */
  refreshInterval: number;
  readonly environments: IEnvironment[] | null;
  readonly problems: ICatalogProblem[];
  readonly environmentsError: string | null;
  /**
   * Whether this server pulls images (false in a JupyterHub, where an admin
   * does), and the server's message when it does not.
   */
  readonly pullCapability: IPullCapability;
  /**
   * Why kernels cannot write into files made in JupyterLab (the server and
   * its kernels are different users), or null.
   */
  readonly filesWarning: IFilesWarning | null;
  /**
   * True once `GET /tfenv/environments` answered 404: the server extension
   * is not installed or not enabled.
   */
  readonly extensionMissing: boolean;
  readonly gpus: IGpuOverview | null;
  readonly gpusError: string | null;
  /**
   * The session context of the active notebook or console (null when the
   * active widget has none).
   */
  readonly sessionContext: ISessionContext | null;
  /**
   * The kernelspec name of the active kernel, of the kernel being started or
   * that failed to start, else the preferred one; null for "No Kernel".
   */
  readonly activeKernelName: string | null;
  /**
   * The id of the active kernel (null while none runs).
   */
  readonly activeKernelId: string | null;
  /**
   * The environment of the active kernel (or of the kernel it tried to
   * start); null when it is not a tfenv kernel.
   */
  readonly activeEnvironment: IEnvironmentSummary | null;
  /**
   * The error of the active session's last failed kernel start (cleared by
   * the next start).
   */
  readonly startError: IStartError | null;
  /**
   * Why the last `GET /tfenv/kernels/{id}` failed.
   */
  readonly kernelError: string | null;
  /**
   * Whether the active environment's image is being probed.
   */
  readonly probing: boolean;
  readonly probeError: string | null;
  /**
   * The provenance verdict of the active notebook (null: nothing to say).
   */
  readonly provenance: IProvenanceVerdict | null;
  /**
   * `GET /tfenv/kernels/{id}` of the active kernel.
   */
  readonly kernelStatus: IKernelStatus | null;
  /**
   * The probe of the active environment (from the kernel status, or run by
   * the model when none was cached).
   */
  readonly activeProbe: IProbe | null;
  /**
   * The image status of the active environment.
   */
  readonly activeImage: IImageStatus | null;
  /**
   * The derived state of the panel (`no-kernel`, `loading`, ...).
   */
  readonly state: IPanelState;
  readonly pulls: ReadonlyMap<string, IPullProgress>;
  environment(id: string): IEnvironment | null;
  /**
   * The image status of an environment (cached for a minute unless `fresh`).
   */
  imageStatus(envId: string, fresh?: boolean): Promise<IImageStatus | null>;
  /**
   * Track a session context's kernel starts (its start errors), also while
   * it is not the active one.
   */
  watch(context: ISessionContext): void;
  setProvenance(
    context: ISessionContext,
    verdict: IProvenanceVerdict | null
  ): void;
  environmentOfKernel(
    kernelName: string | null | undefined
  ): IEnvironmentSummary | null;
  setSessionContext(context: ISessionContext | null): void;
  /**
   * Ask for live data; polling stops when every holder disposed its lease.
   */
  acquire(consumer: Consumer): IDisposable;
  refresh(): Promise<void>;
  /**
   * Change the active session's kernel to an environment (the notebook stays
   * open). Rejects with the server's message when the start fails.
   */
  switchTo(envId: string): Promise<void>;
  /**
   * Probe an environment's image now (a throwaway container, seconds).
   */
  probe(envId: string): Promise<void>;
  pull(envId: string): Promise<void>;
  cancelPull(envId: string): Promise<void>;
  /**
   * Forget a finished pull.
   */
  clearPull(envId: string): void;
}

/**
 * The model token.
 */
export const ITfEnvModel = new Token<ITfEnvModel>(
  'jupyter-tfenv:ITfEnvModel',
  'The TensorFlow environments model: catalog, GPUs, pulls and the active kernel.'
);

/**
 * Something that can reveal the environment panel.
 */
export interface ITfEnvPanel {
  /**
   * Reveal the panel in its sidebar.
   */
  open(): void;
}

/**
 * The panel token.
 */
export const ITfEnvPanel = new Token<ITfEnvPanel>(
  'jupyter-tfenv:ITfEnvPanel',
  'The TensorFlow environment sidebar panel.'
);
