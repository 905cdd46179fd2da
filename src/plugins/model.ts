import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification, type ISessionContext } from '@jupyterlab/apputils';
import { IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import type { Widget } from '@lumino/widgets';

import { TfEnvModel } from '../model';
import { TfEnvClient } from '../api/request';
import { IEnvironmentSummary } from '../api';
import { CommandIDs, ITfEnvModel } from '../tokens';
import { browserStorage, RestartNotices, restartToast } from '../restartnotice';

/**
 * The plugin id; its settings schema is `schema/lab/model.json`.
 */
export const MODEL_PLUGIN_ID = 'jupyter-tfenv:model';

/**
 * The model: talks to the server extension, follows the active notebook or
 * console, polls while a view needs it.
 */
export const modelPlugin: JupyterFrontEndPlugin<ITfEnvModel> = {
  id: MODEL_PLUGIN_ID,
  description:
    'The TensorFlow environments model: catalog, GPUs, pulls and the kernel of the active notebook or console, polled at the configured interval.',
  autoStart: true,
  provides: ITfEnvModel,
  optional: [
    ISettingRegistry,
    ILabShell,
    INotebookTracker,
    IConsoleTracker,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    labShell: ILabShell | null,
    notebooks: INotebookTracker | null,
    consoles: IConsoleTracker | null,
    translator: ITranslator | null
  ): ITfEnvModel => {
    const specs = app.serviceManager.kernelspecs;
    const model = new TfEnvModel({
      client: new TfEnvClient(app.serviceManager.serverSettings),
      specEnvironment: name => specEnvironment(specs.specs, name)
    });

    // A kernel restarted because the Docker engine restarted under it (no
    // live-restore) is said once per restart, not restarted silently.
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    const notices = new RestartNotices({
      notify: restart =>
        Notification.warning(restartToast(restart, trans), {
          autoClose: false,
          actions: app.commands.hasCommand(CommandIDs.openPanel)
            ? [
                {
                  label: trans.__('Details'),
                  caption: restart.message,
                  callback: () =>
                    void app.commands.execute(CommandIDs.openPanel)
                }
              ]
            : []
        }),
      storage: browserStorage()
    });
    model.changed.connect(() => notices.seen(model.kernelStatus));

    if (settingRegistry) {
      settingRegistry
        .load(MODEL_PLUGIN_ID)
        .then(settings => {
          const update = (): void => {
            const value = settings.get('refreshInterval').composite;
            model.refreshInterval = typeof value === 'number' ? value : 5000;
          };
          update();
          settings.changed.connect(update);
        })
        .catch(reason => {
          console.error('jupyter-tfenv: failed to load settings.', reason);
        });
    }

    // Kernel start errors are caught for every notebook and console from its
    // creation on, so a failed start on opening is known to the panel.
    notebooks?.widgetAdded.connect((_, panel) =>
      model.watch(panel.sessionContext)
    );
    consoles?.widgetAdded.connect((_, panel) =>
      model.watch(panel.sessionContext)
    );

    const contextOf = (widget: Widget | null): ISessionContext | null => {
      if (!widget) {
        return null;
      }
      if (notebooks?.has(widget) || consoles?.has(widget)) {
        return (widget as any).sessionContext ?? null;
      }
      const context = (widget as any).sessionContext;
      return context && typeof context.changeKernel === 'function'
        ? context
        : null;
    };

    if (labShell) {
      const update = (): void =>
        model.setSessionContext(contextOf(labShell.currentWidget));
      labShell.currentChanged.connect(update);
      update();
    } else {
      // Other shells (Notebook 7): follow the trackers.
      notebooks?.currentChanged.connect((_, panel) =>
        model.setSessionContext(panel?.sessionContext ?? null)
      );
      consoles?.currentChanged.connect((_, panel) =>
        model.setSessionContext(panel?.sessionContext ?? null)
      );
      model.setSessionContext(
        notebooks?.currentWidget?.sessionContext ??
          consoles?.currentWidget?.sessionContext ??
          null
      );
    }
    return model;
  }
};

/**
 * The `metadata.tfenv` of a kernelspec, or null for other kernels.
 */
function specEnvironment(
  specs: { kernelspecs: { [name: string]: any } } | null,
  name: string
): IEnvironmentSummary | null {
  const tfenv = specs?.kernelspecs?.[name]?.metadata?.tfenv;
  return tfenv && typeof tfenv === 'object' && typeof tfenv.id === 'string'
    ? (tfenv as IEnvironmentSummary)
    : null;
}
