import type { JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookCellExecutor, runCell } from '@jupyterlab/notebook';

import { waitingCellExecutor } from '../cellexecutor';

/**
 * JupyterLab's notebook cell executor (`runCell`), except that a cell run
 * while the notebook's kernel is being started waits for it instead of being
 * dropped (a container kernel's cold start takes seconds). It replaces
 * `@jupyterlab/notebook-extension:cell-executor`, which package.json's
 * `jupyterlab.disabledExtensions` turns off while this extension is enabled.
 */
export const cellExecutorPlugin: JupyterFrontEndPlugin<INotebookCellExecutor> =
  {
    id: 'jupyter-tfenv:cell-executor',
    description:
      'JupyterLab\'s notebook cell executor; a cell run while the kernel starts waits for it ("[*]") instead of being dropped.',
    autoStart: true,
    provides: INotebookCellExecutor,
    activate: (): INotebookCellExecutor => waitingCellExecutor(runCell)
  };
