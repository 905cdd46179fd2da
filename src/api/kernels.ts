// Shapes of GET /tfenv/kernels/{kernel_id}.
import type { IEnvironmentSummary, IProbe } from './environments';

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
 * A live reading that could not be had and why (Kubernetes: no metrics API,
 * no DCGM exporter, ...).
 */
export interface IMissingReading {
  /**
   * `cpu_memory` or `gpu`.
   */
  kind: string;
  message: string;
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
  /**
   * The readings that could not be had, each with its reason (none on Docker).
   */
  missing_readings?: IMissingReading[];
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
  /**
   * Where the kernel's container came from: `adopted` (a previous server kept
   * it running), `pool` (started ahead by the warm pool), or null.
   */
  origin?: 'adopted' | 'pool' | null;
  /**
   * The kernel's ZeroMQ traffic: `curve` (a Kubernetes kernel pod reached with
   * CurveZMQ) or `none` (Docker's Unix sockets, or a pod run in clear).
   */
  encryption?: 'curve' | 'none';
  /**
   * Why the broker's `prefer` policy started the kernel pod in clear, or null.
   */
  encryption_warning?: string | null;
  live?: ILiveStatus | null;
  probe?: IProbe | null;
  checkpoints?: IKernelCheckpoints | null;
  /**
   * Why tfenv last restarted the kernel (the Docker engine restarted under it
   * without live-restore; in Kubernetes mode the cluster ended its pod), or
   * null.
   */
  last_restart?: ILastRestart | null;
}

/**
 * `GET /tfenv/kernels/{id}`: `last_restart`.
 */
export interface ILastRestart {
  /**
   * `engine-restart`, or what the cluster did to a kernel pod: `pod-evicted`,
   * `pod-preempted`, `node-lost`, `pod-deleted` (the toast shows the
   * server's message for these).
   */
  reason: 'engine-restart' | string;
  /**
   * ISO time (UTC) the engine stopped the kernel's container, or the cluster
   * ended its pod.
   */
  at: string;
  /**
   * The server's words: when, what happened, new container or pod, variables
   * lost, checkpoints kept.
   */
  message: string;
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
