/**
 * The GPU compatibility mark of an environment (`GET /tfenv/environments` →
 * `compatibility`): whether its image can use this host's GPUs. Pure: no
 * JupyterLab imports, so that jest tests it directly; the panel, the Launcher
 * and the kernel picker render the result.
 */

import type { ICompatibility, IEnvironmentSummary } from './api';
import { ITrans, wantsGpu } from './state';

/**
 * The marks an environment can carry (`data-tfenv-compat`).
 *
 * - `incompatible`: a warning; the server refuses a start unless the admin
 *   allows it, so the environment stays listed and selectable, marked;
 * - `unknown`: a quiet mark on a GPU environment ("probe to check");
 * - `ok`: no mark in the lists, only "GPU compatible" in the details.
 */
export type CompatMarkState = 'incompatible' | 'unknown' | 'ok';

export interface ICompatMark {
  state: CompatMarkState;
  /**
   * A few words for the badge or the label ("GPU incompatible").
   */
  label: string;
  /**
   * The server's message (what to do), or a sentence of ours when it has
   * none: the tooltip, and the visible text beside an `incompatible` mark.
   */
  message: string;
}

/**
 * An environment as the listing gives it (the field may be absent: older
 * servers).
 */
export type ICompatEnvironment = IEnvironmentSummary & {
  compatibility?: ICompatibility | null;
};

/**
 * The mark of `env` in a list (panel row, Launcher, kernel picker): one for
 * `incompatible`, and for `unknown` on a GPU environment; none for `ok`,
 * `not_applicable`, a state this frontend does not know, or no field.
 */
export function compatMark(
  env: ICompatEnvironment | null | undefined,
  trans: ITrans
): ICompatMark | null {
  const compat = env?.compatibility;
  if (!env || !compat || typeof compat !== 'object') {
    return null;
  }
  const message = (compat.message ?? '').trim();
  switch (compat.state) {
    case 'incompatible':
      return {
        state: 'incompatible',
        label: trans.__('GPU incompatible'),
        message:
          message ||
          trans.__(
            "This image cannot use this host's GPUs: use another image or a newer NVIDIA driver"
          )
      };
    case 'unknown':
      if (!wantsGpu(env)) {
        return null;
      }
      return {
        state: 'unknown',
        label: trans.__('GPU compatibility unknown'),
        message: message || trans.__('Probe the image to check')
      };
    default:
      return null;
  }
}

/**
 * The mark of `env` in the details of the active environment: as in the lists,
 * plus a subtle "GPU compatible" for `ok` on a GPU environment.
 */
export function compatDetail(
  env: ICompatEnvironment | null | undefined,
  trans: ITrans
): ICompatMark | null {
  const mark = compatMark(env, trans);
  if (mark || !env || env.compatibility?.state !== 'ok' || !wantsGpu(env)) {
    return mark;
  }
  return {
    state: 'ok',
    label: trans.__('GPU compatible'),
    message: (env.compatibility.message ?? '').trim()
  };
}

/**
 * The Launcher card's or the picker option's text: the display name, and for
 * an `incompatible` environment the warning ("<name> — GPU incompatible").
 * An `unknown` mark stays in the tooltip (`compatTitle`).
 */
export function compatLabel(
  text: string,
  mark: ICompatMark | null,
  trans: ITrans
): string {
  return mark?.state === 'incompatible'
    ? trans.__('%1 — %2', text, mark.label)
    : text;
}

/**
 * A tooltip line for the mark: "GPU incompatible: <message>", or "" without a
 * mark.
 */
export function compatTitle(mark: ICompatMark | null, trans: ITrans): string {
  return mark && mark.state !== 'ok'
    ? trans.__('%1: %2', mark.label, mark.message)
    : '';
}
