import type { ISessionContext } from '@jupyterlab/apputils';
import type { INotebookCellExecutor } from '@jupyterlab/notebook';

/**
 * What a cell run needs to know of a notebook's session context: a subset of
 * `ISessionContext`, so that the rule can be tested on plain objects.
 */
export interface IStartingContext {
  readonly isDisposed: boolean;
  readonly hasNoKernel: boolean;
  readonly kernelDisplayStatus: string;
  readonly kernelPreference: { readonly name?: string };
  readonly session: {
    readonly kernel: { readonly status: string } | null;
  } | null;
}

/**
 * Whether a kernel is being started for the notebook (or its kernel changed)
 * and the notebook has no connection to it yet.
 *
 * JupyterLab's `CodeCell.execute` drops a run when the session has no kernel
 * (`[ ]`, no output, no message), although `runCell` found a kernel pending:
 * a notebook opened from the Launcher has no session until `POST
 * /api/sessions` returns, which for a container kernel is its whole cold
 * start (seconds), for a host ipykernel a fraction of a second. During a
 * kernel change (Switch) the session still holds the old kernel, so a run
 * would go to the kernel that is about to be shut down.
 *
 * - no session kernel, but not "No Kernel": a start is pending;
 * - no session kernel while the context still initializes (it looks for a
 *   session of the notebook's path, then starts the preferred kernel): the
 *   start is about to begin. Without this, `runCell` would start a second
 *   kernel (JupyterLab's answer to "No Kernel"), the first start would be
 *   dropped, and a cell run later could run before this one;
 * - "starting" while the session's kernel is not itself starting: the
 *   session context is changing the kernel (a kernel that is connected and
 *   starting queues runs itself, as JupyterLab's kernel connection does).
 */
export function kernelStartPending(context: IStartingContext): boolean {
  if (context.isDisposed) {
    return false;
  }
  const kernel = context.session?.kernel ?? null;
  if (!kernel) {
    if (!context.hasNoKernel) {
      return true;
    }
    return (
      context.kernelDisplayStatus === 'initializing' &&
      !!context.kernelPreference.name
    );
  }
  return (
    context.kernelDisplayStatus === 'starting' && kernel.status !== 'starting'
  );
}

/**
 * Resolves once `kernelStartPending(context)` is false: the kernel is there,
 * the start failed (JupyterLab shows its "Error Starting Kernel" dialog and
 * the context has no kernel), or the notebook was closed.
 */
export function kernelStartSettled(context: ISessionContext): Promise<void> {
  if (!kernelStartPending(context)) {
    return Promise.resolve();
  }
  return new Promise<void>(resolve => {
    const check = (): void => {
      if (kernelStartPending(context)) {
        return;
      }
      context.kernelChanged.disconnect(check);
      context.sessionChanged.disconnect(check);
      context.statusChanged.disconnect(check);
      context.disposed.disconnect(check);
      resolve();
    };
    context.kernelChanged.connect(check);
    context.sessionChanged.connect(check);
    context.statusChanged.connect(check);
    context.disposed.connect(check);
    // The end of the initialization emits nothing when it starts no kernel.
    void context.ready.then(check, check);
  });
}

/**
 * A notebook cell executor that waits for a pending kernel start before it
 * hands the run to `runCell` (JupyterLab's own executor): the cell shows
 * `[*]` while it waits, and cells run while the kernel starts run in the
 * order they were run, once it is there.
 */
export function waitingCellExecutor(
  runCell: INotebookCellExecutor['runCell']
): INotebookCellExecutor {
  return Object.freeze({
    runCell: async (
      options: INotebookCellExecutor.IRunCellOptions
    ): Promise<boolean> => {
      const { cell, sessionContext } = options;
      if (
        cell.model.type === 'code' &&
        sessionContext &&
        kernelStartPending(sessionContext)
      ) {
        const model = cell.model as unknown as {
          executionState: string;
          clearExecution(): void;
        };
        model.executionState = 'running';
        await kernelStartSettled(sessionContext);
        if (cell.isDisposed) {
          return false;
        }
        if (!sessionContext.session?.kernel) {
          // The start failed and JupyterLab said why ("Error Starting Kernel");
          // `runCell` would start the same kernel again for a notebook
          // without one, and fail a second time.
          cell.model.sharedModel.transact(() => model.clearExecution());
          return false;
        }
      }
      return runCell(options);
    }
  });
}
