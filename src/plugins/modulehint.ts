import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  Notification,
  showDialog,
  type ISessionContext
} from '@jupyterlab/apputils';
import { IConsoleTracker } from '@jupyterlab/console';
import type { KernelMessage } from '@jupyterlab/services';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { moduleHint } from '../modulehint';

/**
 * A ModuleNotFoundError in a tfenv kernel gets one quiet notification per
 * environment and module, pointing at the catalog's `pip` field.
 */
export const moduleHintPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-tfenv:module-hint',
  description:
    'Points a ModuleNotFoundError in a TensorFlow environment kernel at the catalog (derived environments with pinned pip packages).',
  autoStart: true,
  optional: [INotebookTracker, IConsoleTracker, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker | null,
    consoles: IConsoleTracker | null,
    translator: ITranslator | null
  ): void => {
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    const shown = new Set<string>();
    const watch = (context: ISessionContext): void => {
      context.iopubMessage.connect((_, msg: KernelMessage.IMessage) => {
        if (msg.header.msg_type !== 'error') {
          return;
        }
        const content = msg.content as KernelMessage.IErrorMsg['content'];
        const hint = moduleHint(
          context.session?.kernel?.name,
          content.ename,
          content.evalue,
          trans
        );
        if (hint && !shown.has(hint.key)) {
          shown.add(hint.key);
          Notification.info(hint.text, {
            autoClose: 15000,
            actions: [
              {
                label: trans.__('How'),
                caption: hint.detail,
                callback: () =>
                  void showDialog({
                    title: trans.__('Packages in TensorFlow environments'),
                    body: hint.detail,
                    buttons: [Dialog.okButton()]
                  })
              }
            ]
          });
        }
      });
    };
    notebooks?.widgetAdded.connect((_, panel) => watch(panel.sessionContext));
    consoles?.widgetAdded.connect((_, panel) => watch(panel.sessionContext));
  }
};
