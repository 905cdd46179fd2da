import type { ISessionContext } from '@jupyterlab/apputils';
import { Token } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import type { ISignal } from '@lumino/signaling';

import type {
  ICatalogProblem,
  ICheckpointItem,
  ICheckpointListing,
  IEnvironment,
  IEngineState,
  IEnvironmentSummary,
  IFilesWarning,
  IGpuOverview,
  IImageStatus,
  IKernelStatus,
  IProbe,
  IPullCapability
} from './api';
import type { IBuildProgress } from './buildprogress';
import type { IProvenanceVerdict } from './provenance';
import type { IPullProgress } from './pullprogress';
import type { IEngineOutage, IPanelState, IStartError } from './state';

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
  /**
   * Open TensorBoard on an environment's logs in a main-area tab (reused
   * while open). Args: `{environment?: string}` (the active kernel's
   * environment, else a picker, when absent).
   */
  export const openTensorBoard = 'tfenv:open-tensorboard';
  /**
   * Open TensorBoard on every environment's logs side by side.
   */
  export const compareTensorBoard = 'tfenv:compare-tensorboard';
}

/**
 * The checkpoint listing of the active environment, as the model has it.
 */
export interface ICheckpointsState {
  /**
   * The environment listed.
   */
  environment: string;
  /**
   * The last listing (kept while the next one is read); null before the
   * first answer and after a failed one.
   */
  listing: ICheckpointListing | null;
  /**
   * Why the last listing failed, else null.
   */
  error: string | null;
  /**
   * Whether the first listing of this environment is being read.
   */
  loading: boolean;
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
   * The Docker engine kernels run on (its live-restore), as the server last
   * said it; null when unknown (unreachable, or a JupyterHub).
   */
  readonly engineState: IEngineState | null;
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
   * The Docker engine behind the server does not answer (the server's 503
   * message, and since when); null once the engine answers again.
   */
  readonly engineUnreachable: IEngineOutage | null;
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
  /**
   * Builds started from this page, by environment (`buildprogress.ts`).
   */
  readonly builds: ReadonlyMap<string, IBuildProgress>;
  /**
   * Whether the client lists checkpoints (`GET /tfenv/checkpoints/{env}`).
   */
  readonly canListCheckpoints: boolean;
  /**
   * The checkpoints of the active environment (null without one): listed
   * when the environment changes, then once per refresh interval while the
   * panel holds a lease, on `refresh()` and after a delete.
   */
  readonly checkpoints: ICheckpointsState | null;
  /**
   * The listings of the other environments' checkpoints the active kernel
   * has mounted read-only (its status's `checkpoints.others`), by
   * environment id: a listing, or why it failed. Listed when the kernel or
   * that set of environments changes, and on `refresh()`.
   */
  readonly otherCheckpoints: ReadonlyMap<string, ICheckpointListing | string>;
  /**
   * List the active environment's checkpoints (and the other environments'
   * the kernel has) now.
   */
  refreshCheckpoints(): Promise<void>;
  /**
   * Delete a checkpoint item as listed (its etag is sent as `If-Match`),
   * then list again; rejects with the server's error (412: it changed since
   * it was listed).
   */
  deleteCheckpoint(envId: string, item: ICheckpointItem): Promise<void>;
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
   * Build a derived environment on the server's engine (local mode), followed
   * step by step (`builds`); rejects with the build's own message.
   */
  build(envId: string): Promise<void>;
  /**
   * Forget a finished build.
   */
  clearBuild(envId: string): void;
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
