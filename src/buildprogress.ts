/**
 * A build's progress (the panel's Build action, docs/building.md) from its
 * server-sent events or polled snapshots (`/tfenv/builds/{id}`). Pure
 * functions: no JupyterLab imports, so that jest tests them directly.
 */

import type { BuildStep, IBuild } from './api';
import type { ITrans } from './state';

/**
 * The steps of a build, in order (the server's `steps`).
 */
export const BUILD_STEPS: BuildStep[] = [
  'resolve',
  'download',
  'build',
  'verify',
  'tag'
];

/**
 * What the views show of a build.
 */
export interface IBuildProgress {
  buildId: string;
  environment: string;
  state: 'building' | 'done' | 'error';
  step: BuildStep;
  /**
   * The build's last line; on error its reason, the build's own message.
   */
  message: string | null;
  wheels: { done: number; total: number } | null;
  /**
   * When done: the image built (or found built).
   */
  image: string | null;
  /**
   * Sequence number of the last event applied.
   */
  seq: number;
}

/**
 * Whether a build is over.
 */
export function isBuildFinished(progress: IBuildProgress | null): boolean {
  return (
    progress !== null &&
    (progress.state === 'done' || progress.state === 'error')
  );
}

/**
 * A whole build (`GET /tfenv/builds/{id}` or one of its events) as progress.
 */
export function buildFromPayload(
  build: IBuild & { seq?: number }
): IBuildProgress {
  const state =
    build.state === 'done' || build.state === 'error'
      ? build.state
      : 'building';
  const wheels = build.wheels;
  return {
    buildId: build.id,
    environment: build.environment,
    state,
    step: BUILD_STEPS.includes(build.step) ? build.step : 'resolve',
    message: build.message ?? null,
    wheels:
      wheels &&
      typeof wheels.done === 'number' &&
      typeof wheels.total === 'number'
        ? { done: wheels.done, total: wheels.total }
        : null,
    image: build.result?.image ?? null,
    seq: typeof build.seq === 'number' ? build.seq : 0
  };
}

/**
 * The progress after one event (`snapshot`, `start`, `progress`, `done`,
 * `error`): events older than the last applied are ignored, and a finished
 * build stays finished.
 */
export function reduceBuildEvent(
  prev: IBuildProgress | null,
  type: string,
  data: any
): IBuildProgress | null {
  if (!data || typeof data !== 'object' || typeof data.id !== 'string') {
    return prev;
  }
  if (prev && prev.buildId !== data.id) {
    return prev;
  }
  if (isBuildFinished(prev)) {
    return prev;
  }
  const next = buildFromPayload(data);
  if (prev && next.seq !== 0 && next.seq < prev.seq) {
    return prev;
  }
  if (type === 'error' && next.state !== 'error') {
    return { ...next, state: 'error' };
  }
  return next;
}

/**
 * The name of a step as the panel shows it.
 */
export function buildStepLabel(step: BuildStep, trans: ITrans): string {
  switch (step) {
    case 'resolve':
      return trans.__('Resolving');
    case 'download':
      return trans.__('Downloading wheels');
    case 'build':
      return trans.__('Building');
    case 'verify':
      return trans.__('Verifying');
    case 'tag':
      return trans.__('Tagging');
  }
}

/**
 * Where each step stands: `done`, `current`, `todo` (and `failed` for the
 * step an error ended).
 */
export function buildStepStates(
  progress: IBuildProgress
): { step: BuildStep; state: 'done' | 'current' | 'todo' | 'failed' }[] {
  const at = BUILD_STEPS.indexOf(progress.step);
  return BUILD_STEPS.map((step, index) => ({
    step,
    state:
      progress.state === 'done' || index < at
        ? 'done'
        : index > at
          ? 'todo'
          : progress.state === 'error'
            ? 'failed'
            : 'current'
  }));
}

/**
 * The one line of a build's progress: "Downloading wheels 2/3 (step 2 of 5)",
 * "Built repo/ds:v2-…", "Build failed: <the build's message>".
 */
export function buildProgressText(
  progress: IBuildProgress,
  trans: ITrans
): string {
  if (progress.state === 'done') {
    return progress.image
      ? trans.__('Built %1', progress.image)
      : trans.__('Built');
  }
  if (progress.state === 'error') {
    return trans.__('Build failed: %1', progress.message ?? '');
  }
  let label = buildStepLabel(progress.step, trans);
  if (progress.step === 'download' && progress.wheels) {
    label = `${label} ${progress.wheels.done}/${progress.wheels.total}`;
  }
  return trans.__(
    '%1 (step %2 of %3)',
    label,
    BUILD_STEPS.indexOf(progress.step) + 1,
    BUILD_STEPS.length
  );
}
