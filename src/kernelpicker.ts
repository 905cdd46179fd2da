/**
 * The "Select Kernel" dialog's options with the catalog's order and the
 * environments' availability. Pure: no JupyterLab imports, so that jest tests
 * it directly; `plugins/kernelpicker.ts` renders the result.
 */

import {
  environmentAvailability,
  IListedEnvironment,
  ITrans,
  sortEnvironments,
  unavailableText
} from './state';
import type { IGpuOverview } from './api';
import {
  compatLabel,
  compatMark,
  CompatMarkState,
  compatTitle
} from './compat';

/**
 * One `<option>` (the shape of JupyterLab's `SessionContextDialogs.kernelOptions`).
 */
export interface IKernelOption {
  text: string;
  value: string;
  title?: string;
  selected?: boolean;
  /**
   * The tfenv environment id, when the option starts one (`data-tfenv-env`).
   */
  environment?: string;
  /**
   * Whether that environment can run here (`data-tfenv-available`).
   */
  available?: boolean;
  /**
   * The environment's GPU compatibility mark (`data-tfenv-compat`), when it
   * has one: `incompatible` or `unknown`.
   */
  compat?: CompatMarkState;
}

/**
 * One `<optgroup>`.
 */
export interface IKernelGroup {
  label: string;
  options: IKernelOption[];
  /**
   * `data-tfenv-group`: `unavailable` for the environments that cannot run here.
   */
  kind?: 'unavailable';
}

/**
 * All of the dialog's options.
 */
export interface IKernelOptions {
  disabled?: boolean;
  groups: IKernelGroup[];
}

/**
 * What the arrangement needs to know.
 */
export interface IArrangeContext {
  environments: readonly IListedEnvironment[];
  gpus: IGpuOverview | null;
  /**
   * The server's default kernel (`/api/kernelspecs` → `default`).
   */
  defaultKernel: string | null;
  trans: ITrans;
}

function specName(option: IKernelOption): string | null {
  try {
    const choice = JSON.parse(option.value);
    return choice && typeof choice.name === 'string' && !choice.id
      ? choice.name
      : null;
  } catch {
    return null;
  }
}

/**
 * Arrange JupyterLab's kernel options:
 *
 * - in each group that starts kernels, the tfenv environments that can run
 *   here come first, in the panel's order, then the other kernels as they
 *   were; the environments that cannot run here move to a group of their own
 *   right after it, each with the reason in its text and the server's words
 *   in its title;
 * - an environment whose image cannot use this host's GPUs stays where it is
 *   and selectable (the server refuses its start unless the admin allows it),
 *   "— GPU incompatible" in its text and the server's message in its title;
 *   "GPU compatibility unknown" goes in the title only;
 * - when nothing is selected (a new notebook), or the selected option is an
 *   environment that cannot run here (after its failed start), the server's
 *   default kernel is selected, or else the first environment that can run
 *   (never a GPU incompatible one: with the default incompatible, the first
 *   environment that can run and is not).
 */
export function arrangeKernelOptions(
  options: IKernelOptions,
  context: IArrangeContext
): IKernelOptions {
  const { environments, gpus, trans } = context;
  const byKernel = new Map(environments.map(env => [env.kernel_name, env]));
  const order = new Map(
    sortEnvironments(environments, gpus).map((env, i) => [env.kernel_name, i])
  );
  const rank = (option: IKernelOption): number =>
    order.get(specName(option) ?? '') ?? 0;
  const groups: IKernelGroup[] = [];
  const unavailable: IKernelOption[] = [];
  let unavailableAt = -1;
  for (const group of options.groups) {
    const usable: IKernelOption[] = [];
    const others: IKernelOption[] = [];
    for (const original of group.options) {
      const name = specName(original);
      const env = name ? byKernel.get(name) : undefined;
      if (!env) {
        others.push({ ...original });
        continue;
      }
      const availability = environmentAvailability(env, gpus);
      const mark = compatMark(env, trans);
      const option: IKernelOption = {
        ...original,
        environment: env.id,
        available: availability.available
      };
      if (mark) {
        option.compat = mark.state;
      }
      const markTitle = compatTitle(mark, trans);
      if (availability.available) {
        option.text = compatLabel(original.text, mark, trans);
        if (markTitle) {
          option.title = markTitle;
        }
        usable.push(option);
      } else {
        const why = unavailableText(availability.reason!, trans);
        option.text = trans.__('%1 — unavailable: %2', original.text, why);
        option.title = [availability.message ?? why, markTitle]
          .filter(Boolean)
          .join('\n');
        unavailable.push(option);
        if (unavailableAt < 0) {
          unavailableAt = groups.length + 1;
        }
      }
    }
    usable.sort((a, b) => rank(a) - rank(b));
    groups.push({ ...group, options: [...usable, ...others] });
  }
  if (unavailable.length) {
    unavailable.sort((a, b) => rank(a) - rank(b));
    groups.splice(unavailableAt, 0, {
      label: trans.__('Cannot run on this server'),
      options: unavailable,
      kind: 'unavailable'
    });
  }
  const result: IKernelOptions = { ...options, groups };
  const all = ([] as IKernelOption[]).concat(
    ...result.groups.map(g => g.options)
  );
  const selected = all.find(o => o.selected);
  if (selected && selected.available !== false) {
    return result;
  }
  const startable = all.filter(
    o =>
      specName(o) !== null &&
      o.available !== false &&
      o.compat !== 'incompatible'
  );
  const defaultIsIncompatible = all.some(
    o => specName(o) === context.defaultKernel && o.compat === 'incompatible'
  );
  const target =
    startable.find(o => specName(o) === context.defaultKernel) ??
    (selected || defaultIsIncompatible
      ? startable.find(o => o.environment !== undefined)
      : undefined);
  if (target) {
    all.forEach(o => {
      o.selected = o === target;
    });
  }
  return result;
}
