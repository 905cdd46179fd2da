import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { DisposableSet } from '@lumino/disposable';

import { compatLabel, compatMark, compatTitle } from '../compat';
import {
  environmentAvailability,
  sortEnvironments,
  unavailableText
} from '../state';
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
    'A "TensorFlow environments" section in the Launcher (after "Notebook"): one card per environment, in the panel\'s order (those that can run here first; the others say why not; an image that cannot use this host\'s GPUs is marked), that opens a notebook on it. The "Notebook" section then lists only the other kernels.',
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
        if (!env) {
          return trans.__('New Notebook in an Environment');
        }
        const availability = environmentAvailability(env, model.gpus);
        return availability.available
          ? compatLabel(env.display_name, compatMark(env, trans), trans)
          : trans.__(
              '%1 — unavailable: %2',
              env.display_name,
              unavailableText(availability.reason!, trans)
            );
      },
      caption: args => {
        const env = model.environment(String(args['environment'] ?? ''));
        if (!env) {
          return '';
        }
        const availability = environmentAvailability(env, model.gpus);
        const caption = trans.__(
          'New notebook in %1 (%2)',
          env.display_name,
          env.image
        );
        const lines = [caption];
        if (!availability.available) {
          lines.push(
            availability.message ?? unavailableText(availability.reason!, trans)
          );
        }
        const markTitle = compatTitle(compatMark(env, trans), trans);
        if (markTitle) {
          lines.push(markTitle);
        }
        return lines.join('\n');
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
    hideEnvironmentsFromNotebookSection(launcher, kernelName =>
      Boolean(
        enabled &&
        model.environments?.some(env => env.kernel_name === kernelName)
      )
    );
    const update = (): void => {
      const envs = enabled
        ? sortEnvironments(model.environments ?? [], model.gpus)
        : [];
      const key = envs
        .map(
          env =>
            `${env.id}\u0000${env.display_name}\u0000${environmentAvailability(env, model.gpus).reason}\u0000${env.compatibility?.state ?? ''}\u0000${env.compatibility?.message ?? ''}`
        )
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
    void model.ensureGpus().then(update);
  }
};

/**
 * Leave the environments out of JupyterLab's "Notebook" section (one card per
 * kernelspec, the server's default first, then by name), so that the Launcher
 * lists each environment once, in the "TensorFlow environments" section's
 * order. JupyterLab has no way to remove another plugin's launcher item: the
 * launcher model's `items()`, which the Launcher renders, is filtered instead.
 */
function hideEnvironmentsFromNotebookSection(
  launcher: ILauncher,
  isEnvironment: (kernelName: string) => boolean
): void {
  const model = launcher as Partial<ILauncher.IModel>;
  if (typeof model.items !== 'function') {
    return;
  }
  const items = model.items.bind(launcher);
  model.items = function* () {
    for (const item of items()) {
      const kernelName = item.args?.['kernelName'];
      if (
        item.command === 'notebook:create-new' &&
        typeof kernelName === 'string' &&
        isEnvironment(kernelName)
      ) {
        continue;
      }
      yield item;
    }
  };
}
