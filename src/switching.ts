import { Dialog, ISessionContext, showDialog } from '@jupyterlab/apputils';
import type { Kernel } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import type { TfEnvModel } from './model';
import type { IEnvironmentSummary } from './api';

/**
 * How long the kernel has to answer how many cells it ran; a kernel busy that
 * long holds state (it is running something).
 */
const COUNT_TIMEOUT_MS = 3000;

/**
 * How many executions the kernel remembers (IPython's `execution_count`): a
 * silent, empty request, which does not count itself. `null` when the kernel
 * did not answer in time (it is busy) or cannot be asked.
 */
export async function kernelExecutionCount(
  kernel: Kernel.IKernelConnection,
  timeoutMs = COUNT_TIMEOUT_MS
): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>(resolve => {
    timer = setTimeout(() => resolve(null), timeoutMs);
  });
  const ask = (async (): Promise<number | null> => {
    const future = kernel.requestExecute({
      code: '',
      silent: true,
      store_history: false
    });
    const reply = await future.done;
    const count = (reply?.content as { execution_count?: unknown })
      ?.execution_count;
    return typeof count === 'number' ? count : null;
  })().catch(() => null);
  try {
    return await Promise.race([ask, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Before the active kernel is replaced by one of `target`: when the kernel
 * holds state (it ran cells, or is busy), ask whether to go on, saying what is
 * lost. True to switch.
 */
export async function confirmSwitch(
  model: TfEnvModel,
  context: ISessionContext,
  target: IEnvironmentSummary,
  trans: TranslationBundle
): Promise<boolean> {
  const kernel = context.session?.kernel;
  if (!kernel || kernel.status === 'dead') {
    return true;
  }
  const count = await kernelExecutionCount(kernel);
  if (count === 0) {
    return true;
  }
  const from =
    model.environmentOfKernel(kernel.name)?.display_name ??
    context.kernelDisplayName;
  const body = document.createElement('div');
  body.className = 'jp-tfenv-switch-confirm';
  body.dataset.tfenvTo = target.id;
  body.dataset.tfenvExecutionCount = count === null ? 'busy' : String(count);
  const what = document.createElement('p');
  what.textContent =
    count === null
      ? trans.__(
          'The kernel of "%1" in %2 is busy: what it runs now is stopped.',
          context.name,
          from
        )
      : trans._n(
          'The kernel of "%2" has run %1 cell in %3.',
          'The kernel of "%2" has run %1 cells in %3.',
          count,
          context.name,
          from
        );
  const lost = document.createElement('p');
  lost.textContent = trans.__(
    'Switching starts a new kernel in %1: the variables, imported modules and models in the memory of the current kernel are lost. The outputs on screen stay those of %2 until you run the cells again. Files and checkpoints on disk are kept.',
    target.display_name,
    from
  );
  body.append(what, lost);
  const result = await showDialog({
    title: trans.__('Switch to %1?', target.display_name),
    body: new Widget({ node: body }),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.warnButton({ label: trans.__('Switch') })
    ]
  });
  return result.button.accept && !context.isDisposed;
}
