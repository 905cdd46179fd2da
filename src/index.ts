import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';

import { ServerConnection } from '@jupyterlab/services';

import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { requestAPI } from './request';

import { EnvironmentsReply, normalizeEnvironments } from './tokens';

export { requestAPI } from './request';
export * from './tokens';

/**
 * The plugin id; it is also the id of the settings schema `schema/plugin.json`.
 */
const PLUGIN_ID = 'jupyter-tfenv:plugin';

/**
 * Default for the `refreshInterval` setting, in milliseconds.
 */
const DEFAULT_REFRESH_INTERVAL = 5000;

/**
 * Initialization data for the jupyter-tfenv extension.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Manage TensorFlow environments whose kernels run in Docker containers.',
  autoStart: true,
  optional: [ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ): void => {
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    let refreshInterval = DEFAULT_REFRESH_INTERVAL;

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const update = (): void => {
            const value = settings.get('refreshInterval').composite;
            refreshInterval =
              typeof value === 'number' ? value : DEFAULT_REFRESH_INTERVAL;
          };
          update();
          settings.changed.connect(update);
        })
        .catch(reason => {
          console.error('jupyter-tfenv: failed to load settings.', reason);
        });
    }

    let lastCount: number | null = null;
    let failing = false;

    /**
     * Fetch the environments and log their count when it changes; errors
     * are logged once until the next success. Returns whether polling should
     * go on (not when the server extension is missing).
     */
    const refresh = async (): Promise<boolean> => {
      try {
        const reply = await requestAPI<EnvironmentsReply>(
          'environments',
          { method: 'GET' },
          app.serviceManager.serverSettings
        );
        const count = normalizeEnvironments(reply).length;
        if (count !== lastCount) {
          console.log(`jupyter-tfenv: ${count} environments`);
          lastCount = count;
        }
        failing = false;
        return true;
      } catch (reason) {
        if (
          reason instanceof ServerConnection.ResponseError &&
          reason.response.status === 404
        ) {
          console.warn(
            trans.__(
              'jupyter-tfenv: the jupyter_tfenv server extension is missing (GET %1 returned 404). Install/enable the Python package jupyter_tfenv in the Jupyter server (see `jupyter server extension list`).',
              reason.response.url.split('?')[0]
            )
          );
          return false;
        }
        if (!failing) {
          console.error(
            trans.__('jupyter-tfenv: could not list environments.'),
            reason
          );
          failing = true;
        }
        return true;
      }
    };

    const loop = async (): Promise<void> => {
      if (!(await refresh())) {
        return;
      }
      if (refreshInterval > 0) {
        window.setTimeout(() => void loop(), refreshInterval);
      }
    };

    void loop();
  }
};

export default plugin;
