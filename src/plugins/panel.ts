import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ISessionContextDialogs, showErrorMessage } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { compareWith } from '../compare';
import type { TfEnvModel } from '../model';
import { confirmSwitch } from '../switching';
import { IPanelActions, TfEnvPanel } from '../panel';
import { CommandIDs, ITfEnvModel, ITfEnvPanel } from '../tokens';

/**
 * The plugin id; its settings schema is `schema/lab/panel.json`.
 */
export const PANEL_PLUGIN_ID = 'jupyter-tfenv:panel';

type Side = 'left' | 'right';

/**
 * The environment sidebar.
 */
export const panelPlugin: JupyterFrontEndPlugin<ITfEnvPanel> = {
  id: PANEL_PLUGIN_ID,
  description:
    'The TensorFlow environment sidebar: image, digest, versions, GPUs, container resources, and the environments to switch to or pull.',
  autoStart: true,
  requires: [ITfEnvModel],
  optional: [
    ILabShell,
    ILayoutRestorer,
    ISettingRegistry,
    ITranslator,
    ISessionContextDialogs
  ],
  provides: ITfEnvPanel,
  activate: async (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    labShell: ILabShell | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null,
    sessionDialogs: ISessionContextDialogs | null
  ): Promise<ITfEnvPanel> => {
    const model = tfenv as TfEnvModel;
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');

    const actions: IPanelActions = {
      switchTo: envId => {
        const context = model.sessionContext;
        const env = model.environment(envId);
        void (async () => {
          if (
            context &&
            env &&
            !(await confirmSwitch(model, context, env, trans))
          ) {
            return;
          }
          // A failed start is shown by JupyterLab's dialog and by the panel.
          await model.switchTo(envId);
        })().catch(reason => console.warn(reason));
      },
      pull: envId => {
        model.pull(envId).catch(reason => {
          void showErrorMessage(trans.__('Pull failed'), reason);
        });
      },
      cancelPull: envId => {
        model.cancelPull(envId).catch(reason => {
          void showErrorMessage(trans.__('Cancel failed'), reason);
        });
      },
      build: envId => {
        model.build(envId).catch(reason => {
          void showErrorMessage(trans.__('Build failed'), reason);
        });
      },
      compare: envId => {
        compareWith(model, envId, trans).catch(reason => {
          void showErrorMessage(trans.__('Comparison failed'), reason);
        });
      },
      tensorboard: envId => {
        app.commands
          .execute(CommandIDs.openTensorBoard, { environment: envId })
          .catch(reason => {
            void showErrorMessage(trans.__('TensorBoard failed'), reason);
          });
      },
      compareTensorBoards: () => {
        app.commands.execute(CommandIDs.compareTensorBoard).catch(reason => {
          void showErrorMessage(trans.__('TensorBoard failed'), reason);
        });
      },
      refresh: () => void model.refresh(),
      restart: () => {
        const context = model.sessionContext;
        if (!context) {
          return;
        }
        if (sessionDialogs) {
          void sessionDialogs.restart(context);
        } else {
          void context.restartKernel();
        }
      },
      keepCurrent: () => {
        const context = model.sessionContext;
        if (context) {
          model.setProvenance(context, null);
        }
      }
    };

    const panel = new TfEnvPanel({ model, actions, trans });

    let side: Side = 'right';
    let settings: ISettingRegistry.ISettings | null = null;
    if (settingRegistry) {
      try {
        settings = await settingRegistry.load(PANEL_PLUGIN_ID);
        side = readSide(settings);
      } catch (reason) {
        console.error('jupyter-tfenv: failed to load panel settings.', reason);
      }
    }
    app.shell.add(panel, side, { rank: 750, type: 'TensorFlow environment' });
    restorer?.add(panel, PANEL_PLUGIN_ID);

    // The setting wins over the side a restored layout remembers.
    const place = (): void => {
      if (!labShell || typeof labShell.move !== 'function') {
        return;
      }
      const current = Array.from(labShell.widgets('left')).includes(panel)
        ? 'left'
        : 'right';
      if (current !== side) {
        labShell.move(panel, side);
      }
    };
    void app.restored.then(place);
    settings?.changed.connect(() => {
      side = readSide(settings!);
      place();
    });

    return {
      open: () => app.shell.activateById(panel.id)
    };
  }
};

function readSide(settings: ISettingRegistry.ISettings): Side {
  return settings.get('side').composite === 'left' ? 'left' : 'right';
}
