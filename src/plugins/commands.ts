import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  InputDialog,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import {
  ITranslator,
  nullTranslator,
  TranslationBundle
} from '@jupyterlab/translation';

import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import {
  adminPullText,
  environmentAvailability,
  sortEnvironments,
  unavailableText
} from '../state';
import { tfenvIcon } from '../icons';
import type { TfEnvModel } from '../model';
import { confirmSwitch } from '../switching';
import { IEnvironment } from '../api';
import { CommandIDs, ITfEnvModel, ITfEnvPanel } from '../tokens';

/**
 * The command palette's commands.
 */
export const commandsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-tfenv:commands',
  description:
    'Commands (also in the palette): open the environment panel, switch the active kernel to another environment, pull an image, cancel a pull, refresh.',
  autoStart: true,
  requires: [ITfEnvModel],
  optional: [ICommandPalette, ITfEnvPanel, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    palette: ICommandPalette | null,
    panel: ITfEnvPanel | null,
    translator: ITranslator | null
  ): void => {
    const model = tfenv as TfEnvModel;
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    const { commands } = app;
    const category = trans.__('TensorFlow environments');

    if (panel) {
      commands.addCommand(CommandIDs.openPanel, {
        describedBy: { args: { type: 'object', properties: {} } },
        label: trans.__('Open the TensorFlow Environment Panel'),
        caption: trans.__(
          'Show the image, versions, GPUs and resources of the active kernel'
        ),
        icon: args => (args['isPalette'] ? undefined : tfenvIcon),
        execute: () => panel.open()
      });
    }

    commands.addCommand(CommandIDs.switchEnvironment, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            environment: {
              type: 'string',
              description: trans.__(
                'The environment id to switch to; a picker when absent'
              )
            }
          }
        }
      },
      label: args =>
        args['environment']
          ? trans.__(
              'Switch to %1',
              model.environment(String(args['environment']))?.display_name ??
                String(args['environment'])
            )
          : trans.__('Switch TensorFlow Environment…'),
      caption: trans.__(
        'Change the kernel of the active notebook or console to another TensorFlow environment (the notebook stays open)'
      ),
      isEnabled: () => model.sessionContext !== null,
      execute: async args => {
        await model.ready;
        const env = await chooseEnvironment(
          model,
          trans,
          args,
          trans.__('Switch TensorFlow Environment'),
          trans.__('Run the active kernel in:')
        );
        if (!env) {
          return;
        }
        if (
          env.image_status?.present === false &&
          !model.pullCapability.allowed
        ) {
          await showDialog({
            title: trans.__('Image not pulled'),
            body: trans.__(
              'The image %1 of "%2" is not on this server, so its kernel cannot start. %3',
              env.image,
              env.display_name,
              adminPullText(model.pullCapability, env.id)
            ),
            buttons: [Dialog.okButton({ label: trans.__('OK') })]
          });
          return;
        }
        if (env.image_status?.present === false) {
          const result = await showDialog({
            title: trans.__('Image not pulled'),
            body: trans.__(
              'The image %1 of "%2" is not on this Docker engine: its kernel cannot start. Pull it now? Switch again once it is pulled.',
              env.image,
              env.display_name
            ),
            buttons: [
              Dialog.cancelButton({ label: trans.__('Cancel') }),
              Dialog.okButton({ label: trans.__('Pull') })
            ]
          });
          if (result.button.accept) {
            await commands.execute(CommandIDs.pullImage, {
              environment: env.id
            });
          }
          return;
        }
        const context = model.sessionContext;
        if (context && !(await confirmSwitch(model, context, env, trans))) {
          return;
        }
        try {
          await model.switchTo(env.id);
        } catch (reason) {
          // JupyterLab's "Error Starting Kernel" dialog and the panel show
          // the server's message.
          console.warn('jupyter-tfenv: switching failed.', reason);
        }
      }
    });

    commands.addCommand(CommandIDs.pullImage, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            environment: {
              type: 'string',
              description: trans.__(
                'The environment id whose image to pull; a picker when absent'
              )
            }
          }
        }
      },
      label: args =>
        args['environment']
          ? trans.__('Pull the Image of %1', String(args['environment']))
          : trans.__('Pull TensorFlow Environment Image…'),
      caption: trans.__(
        "Pull an environment's image (the locked digest when the lock file pins it)"
      ),
      // In a JupyterHub (broker mode) an admin pulls images on the host.
      isEnabled: () => model.pullCapability.allowed,
      execute: async args => {
        await model.ready;
        const env = await chooseEnvironment(
          model,
          trans,
          args,
          trans.__('Pull TensorFlow Environment Image'),
          trans.__('Pull the image of:')
        );
        if (!env) {
          return;
        }
        try {
          await model.pull(env.id);
          panel?.open();
        } catch (reason) {
          await showErrorMessage(trans.__('Pull failed'), reason as Error);
        }
      }
    });

    commands.addCommand(CommandIDs.cancelPull, {
      describedBy: {
        args: {
          type: 'object',
          required: ['environment'],
          properties: {
            environment: {
              type: 'string',
              description: trans.__('The environment id whose pull to cancel')
            }
          }
        }
      },
      label: trans.__('Cancel Image Pull'),
      isEnabled: args =>
        !!args['environment'] &&
        model.pulls.get(String(args['environment']))?.state === 'pulling',
      execute: async args => {
        if (args['environment']) {
          await model.cancelPull(String(args['environment']));
        }
      }
    });

    commands.addCommand(CommandIDs.refresh, {
      describedBy: { args: { type: 'object', properties: {} } },
      label: trans.__('Refresh TensorFlow Environments'),
      caption: trans.__(
        'Read the catalog, the GPUs and the active kernel’s status again'
      ),
      execute: () => model.refresh()
    });

    if (palette) {
      for (const command of [
        CommandIDs.openPanel,
        CommandIDs.switchEnvironment,
        CommandIDs.pullImage,
        CommandIDs.refresh
      ]) {
        if (commands.hasCommand(command)) {
          palette.addItem({ command, category, args: { isPalette: true } });
        }
      }
    }
  }
};

/**
 * The environment a command names in its `environment` argument, or else one the user
 * picks in a list dialog (the active kernel's preselected); null when cancelled.
 */
export async function chooseEnvironment(
  model: TfEnvModel,
  trans: TranslationBundle,
  args: ReadonlyPartialJSONObject,
  title: string,
  label: string
): Promise<IEnvironment | null> {
  if (args['environment']) {
    return model.environment(String(args['environment']));
  }
  const current = model.activeEnvironment?.id ?? null;
  const gpus = await model.ensureGpus();
  const envs = sortEnvironments(model.environments ?? [], gpus);
  if (envs.length === 0) {
    await showErrorMessage(
      title,
      model.environmentsError ??
        trans.__('The catalog has no TensorFlow environments.')
    );
    return null;
  }
  const labels = envs.map(env => {
    const parts = [env.display_name, env.image];
    const availability = environmentAvailability(env, gpus);
    if (!availability.available) {
      parts.push(
        trans.__(
          'unavailable: %1',
          unavailableText(availability.reason!, trans)
        )
      );
    }
    return parts.join(' — ');
  });
  // The active kernel's environment, else the first one that can run here.
  const index = Math.max(
    0,
    envs.findIndex(env => env.id === current)
  );
  const result = await InputDialog.getItem({
    title,
    label,
    items: labels,
    current: index,
    okLabel: trans.__('Select'),
    cancelLabel: trans.__('Cancel')
  });
  if (!result.button.accept || result.value === null) {
    return null;
  }
  return envs[labels.indexOf(result.value)] ?? null;
}
