import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { DisposableSet } from '@lumino/disposable';

import { sortEnvironments } from '../state';
import { tfenvLogoIcon } from '../icons';
import type { TfEnvModel } from '../model';
import { CommandIDs, ITfEnvModel } from '../tokens';

/**
 * The plugin id; its settings schema is `schema/lab/launcher.json`.
 */
export const LAUNCHER_PLUGIN_ID = 'jupyter-tfenv:launcher';

/**
 * The Launcher's "TensorFlow environments" section, right after "Notebook".
 */
export const launcherPlugin: JupyterFrontEndPlugin<void> = {
  id: LAUNCHER_PLUGIN_ID,
  description:
    'A "TensorFlow environments" section in the Launcher (after "Notebook"): one card per environment, newest TensorFlow first, that opens a notebook on it.',
  autoStart: true,
  requires: [ITfEnvModel],
  optional: [ILauncher, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    launcher: ILauncher | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ): void => {
    const model = tfenv as TfEnvModel;
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    const { commands } = app;

    commands.addCommand(CommandIDs.createNotebook, {
      describedBy: {
        args: {
          type: 'object',
          required: ['environment'],
          properties: {
            environment: {
              type: 'string',
              description: trans.__('The environment id of the new notebook')
            },
            cwd: {
              type: 'string',
              description: trans.__('The folder of the new notebook')
            }
          }
        }
      },
      label: args => {
        const env = model.environment(String(args['environment'] ?? ''));
        return env?.display_name ?? trans.__('New Notebook in an Environment');
      },
      caption: args => {
        const env = model.environment(String(args['environment'] ?? ''));
        return env
          ? trans.__('New notebook in %1 (%2)', env.display_name, env.image)
          : '';
      },
      icon: tfenvLogoIcon,
      execute: args => {
        const env = model.environment(String(args['environment'] ?? ''));
        if (!env) {
          return;
        }
        return commands.execute('notebook:create-new', {
          kernelName: env.kernel_name,
          cwd: args['cwd'] ?? ''
        });
      }
    });

    if (!launcher) {
      return;
    }
    let enabled = true;
    let items = new DisposableSet();
    let shown = '';
    const update = (): void => {
      const envs = enabled ? sortEnvironments(model.environments ?? []) : [];
      const key = envs
        .map(env => `${env.id}\u0000${env.display_name}`)
        .join('\n');
      if (key === shown) {
        return;
      }
      shown = key;
      items.dispose();
      items = new DisposableSet();
      envs.forEach((env, rank) => {
        items.add(
          launcher.add({
            command: CommandIDs.createNotebook,
            args: { environment: env.id },
            category: trans.__('TensorFlow environments'),
            // Between "Notebook" (0) and "Console" (20).
            categoryRank: 10,
            rank
          } as ILauncher.IItemOptions)
        );
      });
    };
    model.changed.connect(update);
    if (settingRegistry) {
      settingRegistry
        .load(LAUNCHER_PLUGIN_ID)
        .then(settings => {
          const read = (): void => {
            enabled = settings.get('enabled').composite !== false;
            shown = '\u0001';
            update();
          };
          read();
          settings.changed.connect(read);
        })
        .catch(reason => {
          console.error(
            'jupyter-tfenv: failed to load launcher settings.',
            reason
          );
        });
    }
    void model.ready.then(update);
  }
};
