import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ISessionContext,
  ISessionContextDialogs,
  SessionContextDialogs
} from '@jupyterlab/apputils';
import type { Kernel } from '@jupyterlab/services';
import {
  ITranslator,
  nullTranslator,
  TranslationBundle
} from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { arrangeKernelOptions, IKernelOptions } from '../kernelpicker';
import type { TfEnvModel } from '../model';
import { ITfEnvModel } from '../tokens';

/**
 * JupyterLab's "Select Kernel" dialog (File › New › Notebook, the toolbar's
 * kernel name, Kernel › Change Kernel…) with the catalog's environments in the
 * panel's order, those that cannot run here in a group of their own with the
 * reason, and the server's default kernel preselected for a new notebook
 * (JupyterLab preselects the first kernel by name: "Python 3 (ipykernel)").
 *
 * The dialog is JupyterLab's own (`SessionContextDialogs.kernelOptions`
 * gives its options, the buttons and the "always start the preferred kernel"
 * checkbox are the same); the shared `ISessionContextDialogs` keeps every other
 * dialog, so that everything that asks it for a kernel gets this picker.
 */
export const kernelPickerPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-tfenv:kernel-picker',
  description:
    'The "Select Kernel" dialog with the TensorFlow environments in the panel\'s order, the server\'s default kernel preselected, and environments that cannot run here marked with the reason.',
  autoStart: true,
  requires: [ITfEnvModel],
  optional: [ISessionContextDialogs, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    dialogs: ISessionContextDialogs | null,
    translator: ITranslator | null
  ): void => {
    if (!dialogs) {
      // An application without JupyterLab's session dialogs: nothing to arrange.
      return;
    }
    const model = tfenv as TfEnvModel;
    const tr = translator ?? nullTranslator;
    const original = dialogs.selectKernel.bind(dialogs);
    dialogs.selectKernel = async (sessionContext: ISessionContext) => {
      await model.ready;
      if (model.extensionMissing || !model.environments?.length) {
        return original(sessionContext);
      }
      const gpus = await model.ensureGpus();
      if (sessionContext.isDisposed) {
        return;
      }
      const options = arrangeKernelOptions(
        SessionContextDialogs.kernelOptions(sessionContext, tr),
        {
          environments: model.environments ?? [],
          gpus,
          defaultKernel: sessionContext.specsManager.specs?.default ?? null,
          trans: tr.load('jupyter_tfenv')
        }
      );
      return selectKernel(sessionContext, options, tr.load('jupyterlab'));
    };
  }
};

/**
 * The dialog's body: JupyterLab's label and `<select>`, each tfenv option with
 * `data-tfenv-env` and `data-tfenv-available`.
 */
class KernelSelector
  extends Widget
  implements Dialog.IBodyWidget<Partial<Kernel.IModel> | null>
{
  constructor(name: string, options: IKernelOptions, trans: TranslationBundle) {
    super();
    this.addClass('jp-tfenv-kernel-selector');
    const text = document.createElement('label');
    text.textContent = `${trans.__('Select kernel for:')} "${name}"`;
    this.node.appendChild(text);
    const select = document.createElement('select');
    select.disabled = options.disabled === true;
    for (const group of options.groups) {
      const optgroup = document.createElement('optgroup');
      optgroup.label = group.label;
      if (group.kind) {
        optgroup.dataset.tfenvGroup = group.kind;
      }
      for (const option of group.options) {
        const element = document.createElement('option');
        element.text = option.text;
        element.value = option.value;
        if (option.title) {
          element.title = option.title;
        }
        if (option.environment !== undefined) {
          element.dataset.tfenvEnv = option.environment;
          element.dataset.tfenvAvailable = String(option.available !== false);
          if (option.compat) {
            element.dataset.tfenvCompat = option.compat;
          }
        }
        if (option.selected) {
          element.selected = true;
        }
        optgroup.appendChild(element);
      }
      select.appendChild(optgroup);
    }
    this.node.appendChild(select);
  }

  getValue(): Partial<Kernel.IModel> | null {
    return JSON.parse(this.node.querySelector('select')!.value);
  }
}

/**
 * What `SessionContextDialogs.selectKernel` does, with our options.
 */
async function selectKernel(
  sessionContext: ISessionContext,
  options: IKernelOptions,
  trans: TranslationBundle
): Promise<void> {
  // With no kernel yet, "cancel" keeps none: the button says so.
  const cancelLabel = sessionContext.hasNoKernel
    ? sessionContext.kernelDisplayName
    : trans.__('Cancel');
  const autoStartDefault = sessionContext.kernelPreference.autoStartDefault;
  const hasCheckbox = typeof autoStartDefault === 'boolean';
  const dialog = new Dialog({
    title: trans.__('Select Kernel'),
    body: new KernelSelector(sessionContext.name, options, trans),
    buttons: [
      Dialog.cancelButton({ label: cancelLabel }),
      Dialog.okButton({
        label: trans.__('Select'),
        ariaLabel: trans.__('Select Kernel')
      })
    ],
    checkbox: hasCheckbox
      ? {
          label: trans.__('Always start the preferred kernel'),
          caption: trans.__(
            'Remember my choice and always start the preferred kernel'
          ),
          checked: autoStartDefault
        }
      : null
  });
  const result = await dialog.launch();
  if (sessionContext.isDisposed || !result.button.accept) {
    return;
  }
  if (hasCheckbox && result.isChecked !== null) {
    sessionContext.kernelPreference = {
      ...sessionContext.kernelPreference,
      autoStartDefault: result.isChecked
    };
  }
  const model = result.value;
  if (model === null && !sessionContext.hasNoKernel) {
    await sessionContext.shutdown();
    return;
  }
  if (model) {
    await sessionContext.changeKernel(model);
  }
}
