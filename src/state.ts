/**
 * What the panel and the status bar show, derived from API payloads. Pure
 * functions: no JupyterLab imports, so that jest tests them directly. They
 * return codes; the views turn codes into translated sentences and show the
 * server's own message beside them.
 */

import type {
  ICompatibility,
  IEnvironmentSummary,
  IGpuOverview,
  IImagePresence,
  IImageStatus,
  IKernelStatus,
  IProbe,
  IPullCapability
} from './api';
import { bareDigest, compareVersions, cudaLabel, ratio } from './format';

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
 * The designed states of the panel (`data-tfenv-state`).
 */
export type PanelStateName =
  | 'no-extension'
  | 'no-kernel'
  | 'not-pulled'
  | 'loading'
  | 'error'
  | 'no-gpu'
  | 'dead'
  | 'engine-unreachable'
  | 'ok';

/**
 * Why the panel is in its state (`data-tfenv-reason`).
 */
export type PanelReason =
  | 'extension-missing'
  | 'no-session'
  | 'no-kernel-selected'
  | 'not-tfenv'
  | 'not-pulled'
  | 'not-started'
  | 'initializing'
  | 'starting'
  | 'fetching'
  | 'probe'
  | 'start-failed'
  | 'status-failed'
  | 'server-unreachable'
  | 'engine-unreachable'
  | 'restarting'
  | 'probe-failed'
  | 'kernel-dead'
  | 'container-exited'
  | 'oom-killed'
  | 'container-gone'
  | 'no-gpu'
  | 'ok';

/**
 * The panel's state: a name, a reason, and the server's own words.
 */
export interface IPanelState {
  state: PanelStateName;
  reason: PanelReason;
  /**
   * The server's message (start error, kernel status error, GPU reason).
   */
  message: string | null;
  /**
   * A second message: the GPU reason beside a start error, for instance.
   */
  detail: string | null;
}

/**
 * The container engine (Docker) behind the Jupyter server does not answer:
 * the server's message (answered 503, with what to do) and since when.
 */
export interface IEngineOutage {
  message: string;
  /**
   * When the panel first saw it (ms since the epoch).
   */
  since: number;
}

/**
 * Everything the panel state depends on.
 */
export interface IStateInput {
  extensionMissing: boolean;
  /**
   * The server's own words when its last answer was no answer at all (it
   * stopped, or the network is down); null while it answers.
   */
  serverUnreachable?: string | null;
  /**
   * The server answers, but the engine behind it does not (the server's
   * 503); null once an answer came from the engine again. Kernels keep
   * running meanwhile when the engine has live-restore: this is not a death.
   */
  engineUnreachable?: IEngineOutage | null;
  /**
   * Whether the active widget has a session context (a notebook or console).
   */
  hasSession: boolean;
  /**
   * The kernelspec name of the running kernel, else of the kernel being
   * started or that failed to start, else the preferred one.
   */
  kernelName: string | null;
  /**
   * The environment of `kernelName`; null for a kernel that is not tfenv.
   */
  environment: IEnvironmentSummary | null;
  /**
   * Id of the running kernel (none while starting or after a failed start).
   */
  kernelId: string | null;
  /**
   * `sessionContext.kernelDisplayStatus`.
   */
  displayStatus: string;
  /**
   * Whether a kernel start or change is in flight.
   */
  starting: boolean;
  startError: IStartError | null;
  kernelStatus: IKernelStatus | null;
  kernelError: string | null;
  probe: IProbe | null;
  probing: boolean;
  probeError: string | null;
  /**
   * Whether the environment's image is on the engine (null: unknown).
   */
  imagePresent: boolean | null;
  gpus: IGpuOverview | null;
}

/**
 * Whether an environment asks for GPUs.
 */
export function wantsGpu(env: IEnvironmentSummary | null | undefined): boolean {
  if (!env) {
    return false;
  }
  const gpus = env.gpus;
  if (gpus === null || gpus === undefined) {
    return false;
  }
  if (Array.isArray(gpus)) {
    return gpus.length > 0;
  }
  if (typeof gpus === 'number') {
    return gpus > 0;
  }
  const text = String(gpus).trim().toLowerCase();
  return text !== '' && text !== 'none' && text !== '0';
}

/**
 * Why a GPU environment cannot use a GPU on this host (the server's message),
 * or null when nothing is known to be wrong.
 */
export function gpuProblem(gpus: IGpuOverview | null): string | null {
  if (!gpus) {
    return null;
  }
  if (gpus.state !== 'ok') {
    return gpus.message || gpus.state;
  }
  if (gpus.runtime && gpus.runtime.nvidia === false) {
    return gpus.runtime.message || null;
  }
  return null;
}

const STARTING = [
  'starting',
  'restarting',
  'autorestarting',
  'initializing',
  'connecting',
  'terminating'
];

/**
 * The panel's state for the active widget.
 */
export function deriveState(input: IStateInput): IPanelState {
  const state = (
    name: PanelStateName,
    reason: PanelReason,
    message: string | null = null,
    detail: string | null = null
  ): IPanelState => ({ state: name, reason, message, detail });

  if (input.extensionMissing) {
    return state('no-extension', 'extension-missing');
  }
  // Nothing the panel last read is known to hold any more.
  if (input.serverUnreachable) {
    return state('error', 'server-unreachable', input.serverUnreachable);
  }
  // The kernel may well compute on: only what the engine would say is unknown.
  if (input.engineUnreachable) {
    return state(
      'engine-unreachable',
      'engine-unreachable',
      input.engineUnreachable.message,
      new Date(input.engineUnreachable.since).toISOString()
    );
  }
  if (!input.hasSession) {
    return state('no-kernel', 'no-session');
  }
  const env = input.environment;
  if (!input.kernelName) {
    return state('no-kernel', 'no-kernel-selected');
  }
  if (!env) {
    return state('no-kernel', 'not-tfenv');
  }
  if (input.starting) {
    return state('loading', 'starting');
  }
  const gpuReason = wantsGpu(env) ? gpuProblem(input.gpus) : null;
  if (input.startError && !input.kernelId) {
    if (input.imagePresent === false) {
      return state('not-pulled', 'not-pulled', input.startError.message);
    }
    if (gpuReason) {
      return state(
        'no-gpu',
        'start-failed',
        input.startError.message,
        gpuReason
      );
    }
    return state('error', 'start-failed', input.startError.message);
  }
  if (!input.kernelId && input.imagePresent === false) {
    return state('not-pulled', 'not-pulled');
  }
  const live = input.kernelStatus?.live ?? null;
  // A restart replaces the container: what was read before is the old one's.
  if (
    input.kernelId &&
    (input.displayStatus === 'restarting' ||
      input.displayStatus === 'autorestarting')
  ) {
    return state('loading', 'restarting');
  }
  if (input.displayStatus === 'dead') {
    return state(
      'dead',
      'kernel-dead',
      live?.message ?? live?.error ?? null,
      live?.oom_killed ? 'oom' : null
    );
  }
  if (live && input.kernelStatus?.kernel_id === input.kernelId) {
    if (live.status === 'gone') {
      return state('dead', 'container-gone', live.message ?? null);
    }
    if (live.oom_killed && !live.running) {
      return state('dead', 'oom-killed', live.error ?? null);
    }
    if (live.status === 'exited' || live.status === 'dead') {
      return state(
        'dead',
        'container-exited',
        live.error ?? null,
        live.exit_code !== null && live.exit_code !== undefined
          ? String(live.exit_code)
          : null
      );
    }
  }
  if (!input.kernelId) {
    if (input.starting || STARTING.includes(input.displayStatus)) {
      return state(
        'loading',
        input.displayStatus === 'initializing' ? 'initializing' : 'starting'
      );
    }
    return state('no-kernel', 'not-started');
  }
  if (input.kernelError && !input.kernelStatus) {
    return state('error', 'status-failed', input.kernelError);
  }
  if (
    !input.kernelStatus ||
    input.kernelStatus.kernel_id !== input.kernelId ||
    (STARTING.includes(input.displayStatus) && !live?.running)
  ) {
    return state(
      'loading',
      STARTING.includes(input.displayStatus) ? 'starting' : 'fetching'
    );
  }
  if (input.probing && !input.probe) {
    return state('loading', 'probe');
  }
  if (wantsGpu(env)) {
    const probeGpu = input.probe?.gpu_state;
    if (gpuReason) {
      return state('no-gpu', 'no-gpu', gpuReason);
    }
    if (probeGpu && probeGpu.state !== 'ok' && probeGpu.state !== 'unknown') {
      return state('no-gpu', 'no-gpu', probeGpu.message);
    }
  }
  if (input.probeError && !input.probe) {
    return state('ok', 'probe-failed', input.probeError);
  }
  return state('ok', 'ok');
}

/**
 * The GPU view state (`data-tfenv-gpu-state`): the server's state with
 * hyphens, `not-requested` for a CPU environment, `no-runtime` when the
 * engine has no NVIDIA runtime, `unknown` before the first answer.
 */
export function gpuViewState(
  env: IEnvironmentSummary | null,
  gpus: IGpuOverview | null
): string {
  if (env && !wantsGpu(env)) {
    return 'not-requested';
  }
  if (!gpus) {
    return 'unknown';
  }
  if (gpus.state === 'ok' && gpus.runtime && gpus.runtime.nvidia === false) {
    return 'no-runtime';
  }
  return String(gpus.state).replace(/_/g, '-');
}

/**
 * One host GPU as the panel shows it.
 */
export interface IGpuRow {
  index: number;
  name: string | null;
  computeCapability: string | null;
  memoryUsed: number | null;
  memoryTotal: number | null;
  memoryRatio: number | null;
  utilization: number | null;
  temperature: number | null;
  /**
   * Whether the active kernel holds memory on it.
   */
  held: boolean;
  /**
   * Memory the active kernel holds on it.
   */
  heldMemory: number | null;
  error: string | null;
}

/**
 * The host's GPUs with the active kernel's share, and the compute capability
 * TensorFlow reported for each (matched by name, in order).
 */
export function gpuRows(
  gpus: IGpuOverview | null,
  kernel: IKernelStatus | null,
  probe: IProbe | null
): IGpuRow[] {
  const devices = kernel?.live?.gpu?.devices ?? [];
  const host = gpus?.gpus ?? [];
  const source = host.length > 0 ? host : devices;
  const capabilities = (probe?.gpus ?? []).map(g => ({
    name: g.name ?? null,
    cc: g.compute_capability ?? null,
    used: false
  }));
  return source.map((gpu, position) => {
    const name = gpu.name ?? null;
    let cc: string | null = null;
    const match =
      capabilities.find(c => !c.used && c.name !== null && c.name === name) ??
      (capabilities[position] && !capabilities[position].used
        ? capabilities[position]
        : undefined);
    if (match) {
      match.used = true;
      cc = match.cc;
    }
    const mine = devices.find(d => d.index === gpu.index);
    const g = gpu as any;
    return {
      index: gpu.index,
      name,
      computeCapability: cc,
      memoryUsed: g.memory_used ?? null,
      memoryTotal: g.memory_total ?? null,
      memoryRatio: ratio(g.memory_used, g.memory_total),
      utilization: g.utilization_gpu ?? null,
      temperature: g.temperature ?? null,
      held: mine !== undefined,
      heldMemory: mine?.used_memory ?? null,
      error: g.error ?? null
    };
  });
}

/**
 * Lock status of an image (`data-tfenv-lock`).
 */
export type LockState =
  'pinned-by-digest' | 'locked' | 'mismatch' | 'unlocked' | 'unknown';

/**
 * The lock state and the digest to show for an environment's image.
 */
export function lockInfo(
  env: IEnvironmentSummary | null,
  image: IImageStatus | null
): { state: LockState; digest: string | null; locked: string | null } {
  const lock = image?.lock ?? null;
  const local =
    lock?.local?.[0] ?? bareDigest(image?.repo_digests?.[0] ?? null) ?? null;
  const digest = bareDigest(env?.digest ?? null) ?? bareDigest(local);
  if (env?.digest || lock?.pinned_by_digest) {
    return {
      state: 'pinned-by-digest',
      digest: digest ?? bareDigest(lock?.locked ?? null),
      locked: lock?.locked ?? env?.digest ?? null
    };
  }
  if (!image) {
    return { state: 'unknown', digest, locked: null };
  }
  if (!lock || !lock.locked) {
    return { state: 'unlocked', digest, locked: null };
  }
  return {
    state: lock.matches ? 'locked' : 'mismatch',
    digest,
    locked: lock.locked
  };
}

/**
 * The parts of the status bar text.
 */
export interface IStatusParts {
  tensorflow: string | null;
  gpu: boolean;
  cuda: string | null;
  /**
   * GPUs the kernel uses (held, else seen by TensorFlow); null when unknown.
   */
  gpuCount: number | null;
}

/**
 * The status bar's facts for the active kernel.
 */
export function statusParts(
  env: IEnvironmentSummary,
  probe: IProbe | null,
  kernel: IKernelStatus | null
): IStatusParts {
  const gpu = wantsGpu(env);
  const held = kernel?.live?.gpu?.devices?.length ?? 0;
  const seen = probe?.gpus ? probe.gpus.length : null;
  return {
    tensorflow: probe?.tensorflow ?? env.tensorflow ?? null,
    gpu,
    cuda:
      gpu && probe?.build?.is_cuda_build !== false
        ? cudaLabel(probe?.build?.cuda_version)
        : null,
    gpuCount: !gpu ? null : held > 0 ? held : seen
  };
}

/**
 * The translation functions the label needs (a TranslationBundle fits).
 */
export interface ITrans {
  __(msgid: string, ...args: any[]): string;
  _n(msgid: string, msgid_plural: string, n: number, ...args: any[]): string;
}

/**
 * "TF 2.20.0 · CPU" or "TF 2.20.0 · CUDA 12.x · 1 GPU".
 */
export function statusLabel(parts: IStatusParts, trans: ITrans): string {
  const items = [
    parts.tensorflow ? trans.__('TF %1', parts.tensorflow) : trans.__('TF ?')
  ];
  if (!parts.gpu) {
    items.push(trans.__('CPU'));
  } else {
    if (parts.cuda) {
      items.push(parts.cuda);
    }
    if (parts.gpuCount === null) {
      items.push(trans.__('GPU'));
    } else if (parts.gpuCount === 0) {
      items.push(trans.__('no GPU'));
    } else {
      items.push(trans._n('%1 GPU', '%1 GPUs', parts.gpuCount));
    }
  }
  return items.join(' · ');
}

/**
 * Why an environment cannot run on this server now.
 */
export type UnavailableReason =
  'not-pulled' | 'no-driver' | 'no-gpu' | 'no-runtime' | 'gpu-error';

/**
 * Whether an environment can run here: its image is on the engine and, for a
 * GPU environment, the host has a GPU, its driver and the NVIDIA runtime.
 * Unknown facts (engine or GPUs not asked yet) count as usable.
 */
export interface IAvailability {
  available: boolean;
  reason: UnavailableReason | null;
  /**
   * The server's words (the GPU check's message), when there are any.
   */
  message: string | null;
}

/**
 * An environment as `GET /tfenv/environments` lists it (image presence).
 */
export type IListedEnvironment = IEnvironmentSummary & {
  image_status?: IImagePresence | null;
  compatibility?: ICompatibility | null;
};

/**
 * Whether `env` can run on this server, and why not.
 */
export function environmentAvailability(
  env: IListedEnvironment,
  gpus: IGpuOverview | null
): IAvailability {
  if (env.image_status?.present === false) {
    return { available: false, reason: 'not-pulled', message: null };
  }
  if (wantsGpu(env) && gpus) {
    if (gpus.state !== 'ok') {
      const reason: UnavailableReason =
        gpus.state === 'no_gpu'
          ? 'no-gpu'
          : gpus.state === 'error'
            ? 'gpu-error'
            : 'no-driver';
      return { available: false, reason, message: gpus.message || null };
    }
    if (gpus.runtime && gpus.runtime.nvidia === false) {
      return {
        available: false,
        reason: 'no-runtime',
        message: gpus.runtime.message || null
      };
    }
  }
  return { available: true, reason: null, message: null };
}

/**
 * A few words for an unavailable environment ("image not pulled"), for
 * labels; the server's message goes in the tooltip beside them.
 */
export function unavailableText(
  reason: UnavailableReason,
  trans: ITrans
): string {
  switch (reason) {
    case 'not-pulled':
      return trans.__('image not pulled');
    case 'no-gpu':
      return trans.__('no GPU on this host');
    case 'no-runtime':
      return trans.__('no NVIDIA container runtime');
    case 'gpu-error':
      return trans.__('GPU check failed');
    default:
      return trans.__('no NVIDIA driver');
  }
}

/**
 * Environments in the one order every list shows them (panel, Launcher,
 * pickers): those that can run here first (with `gpus`, the GPU check's
 * answer; image presence is in the environment), those of them whose image
 * cannot use this host's GPUs (`compatibility.state` `incompatible`) after
 * the others, then newest TensorFlow first (those without a known version
 * last), then by name.
 */
export function sortEnvironments<T extends IListedEnvironment>(
  envs: readonly T[],
  gpus: IGpuOverview | null = null
): T[] {
  const tier = new Map(
    envs.map(env => [
      env,
      !environmentAvailability(env, gpus).available
        ? 2
        : env.compatibility?.state === 'incompatible'
          ? 1
          : 0
    ])
  );
  return [...envs].sort((a, b) => {
    if (tier.get(a) !== tier.get(b)) {
      return tier.get(a)! - tier.get(b)!;
    }
    if (!a.tensorflow !== !b.tensorflow) {
      return a.tensorflow ? -1 : 1;
    }
    return (
      compareVersions(b.tensorflow, a.tensorflow) ||
      a.display_name.localeCompare(b.display_name)
    );
  });
}

/**
 * The server's "an admin pulls images" message for one environment (broker
 * mode in a JupyterHub): `<environment>` in it becomes the environment's id.
 */
export function adminPullText(
  capability: IPullCapability,
  envId: string
): string {
  const message =
    capability.message ??
    'Images are pulled by an admin here: ask them to pull <environment>.';
  return message.split('<environment>').join(envId);
}
