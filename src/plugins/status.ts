import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { Signal } from '@lumino/signaling';

import type { TfEnvModel } from '../model';
import { TfEnvStatus } from '../statusbar';
import { ITfEnvModel, ITfEnvPanel } from '../tokens';

/**
 * The plugin id; its settings schema is `schema/lab/status.json`.
 */
export const STATUS_PLUGIN_ID = 'jupyter-tfenv:status';

/**
 * The status bar item "TF 2.20.0 · CPU".
 */
export const statusPlugin: JupyterFrontEndPlugin<void> = {
  id: STATUS_PLUGIN_ID,
  description:
    'A status bar item with the active kernel’s TensorFlow version, CUDA and GPUs ("TF 2.20.0 · CUDA 12.x · 1 GPU"); hidden for other kernels; a click opens the panel.',
  autoStart: true,
  requires: [ITfEnvModel],
  optional: [IStatusBar, ITfEnvPanel, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    statusBar: IStatusBar | null,
    panel: ITfEnvPanel | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ): void => {
    if (!statusBar) {
      return;
    }
    const model = tfenv as TfEnvModel;
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    const item = new TfEnvStatus({
      model,
      trans,
      onOpen: panel ? () => panel.open() : null
    });
    item.enabled = true;
    // The status bar re-checks `isActive` on this signal: model changes and
    // the on/off setting.
    const activeChanged = new Signal<TfEnvStatus, void>(item);
    model.changed.connect(() => activeChanged.emit());
    statusBar.registerStatusItem(STATUS_PLUGIN_ID, {
      item,
      align: 'left',
      rank: 4,
      isActive: () => item.enabled && model.activeEnvironment !== null,
      activeStateChanged: activeChanged
    });
    if (settingRegistry) {
      settingRegistry
        .load(STATUS_PLUGIN_ID)
        .then(settings => {
          const update = (): void => {
            item.enabled = settings.get('enabled').composite !== false;
            activeChanged.emit();
          };
          update();
          settings.changed.connect(update);
        })
        .catch(reason => {
          console.error(
            'jupyter-tfenv: failed to load status settings.',
            reason
          );
        });
    }
  }
};
