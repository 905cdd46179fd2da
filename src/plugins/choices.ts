import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ISessionContext,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { ConsolePanel, IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel } from '@jupyterlab/services';
import {
  ITranslator,
  nullTranslator,
  TranslationBundle
} from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import type { IChoiceReply, IChoices, IEnvironmentSummary } from '../api';
import { requestAPI } from '../api/request';
import {
  ChoiceValues,
  choiceRequest,
  choiceText,
  ConsoleChoices,
  IChoiceTarget,
  IRecordedChoice,
  offeredKeys,
  preselectedChoice,
  readRecordedChoice,
  withRecordedChoice
} from '../choices';
import type { TfEnvModel } from '../model';
import { PROVENANCE_KEY } from '../provenance';
import { ITfEnvModel } from '../tokens';

/**
 * The session context's one door for starting and changing kernels (the
 * initial start, the kernel picker, switching): JupyterLab's private
 * `_changeKernel`.
 */
type ChangeKernel = (
  options?: Partial<Kernel.IModel>
) => Promise<Kernel.IKernelConnection | null>;

/**
 * Resources chosen at launch (docs/choices.md): when a notebook's or a
 * console's kernel starts or switches to an environment that offers choices,
 * a small dialog asks for them (preselected: what the notebook recorded, or
 * what this console or the last console chose, else the entry's defaults);
 * the choice goes to `POST /tfenv/choices` (checked there, kept for the
 * start) and, for a notebook, into its `metadata.tfenv.choices`. Environments
 * without choices start as before.
 */
export const choicesPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-tfenv:choices',
  description:
    'Asks for the resources (GPUs, memory, CPUs, /dev/shm) of an environment that offers choices when a notebook or console starts or switches to it, and remembers them in the notebook metadata (`tfenv.choices`).',
  autoStart: true,
  requires: [ITfEnvModel, INotebookTracker],
  optional: [ITranslator, IConsoleTracker],
  activate: (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    notebooks: INotebookTracker,
    translator: ITranslator | null,
    consoles: IConsoleTracker | null
  ): void => {
    const model = tfenv as TfEnvModel;
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    notebooks.widgetAdded.connect((_, nbPanel) => {
      askBeforeStarts(nbPanel.sessionContext, name =>
        chooseForNotebook(model, nbPanel, name, trans)
      );
    });
    // A console has no file to record the choice in: this page remembers it.
    const consoleChoices = new ConsoleChoices();
    consoles?.widgetAdded.connect((_, panel) => {
      const path = panel.sessionContext.path;
      askBeforeStarts(panel.sessionContext, name =>
        chooseForConsole(model, panel, consoleChoices, name, trans)
      );
      panel.disposed.connect(() => consoleChoices.forget(path));
    });
  }
};

/**
 * Let `ask(kernel name)` decide before each start or change of the session
 * context's kernel (false: nothing starts).
 */
function askBeforeStarts(
  sessionContext: ISessionContext,
  ask: (name: string | undefined) => Promise<boolean>
): void {
  const context = sessionContext as unknown as {
    _changeKernel?: ChangeKernel;
  };
  const original = context._changeKernel;
  if (typeof original !== 'function') {
    return; // a JupyterLab without that door: no dialog, defaults
  }
  context._changeKernel = async options => {
    const go = await ask(options?.name);
    return go ? original.call(context, options) : null;
  };
}

/**
 * Ask for the resources of kernel `name`'s environment when it offers
 * choices; send and record them in the notebook. False when the user
 * cancelled or the server refused (no kernel is started then).
 */
async function chooseForNotebook(
  model: TfEnvModel,
  nbPanel: NotebookPanel,
  name: string | undefined,
  trans: TranslationBundle
): Promise<boolean> {
  if (!name) {
    return true; // an existing kernel by id: nothing starts
  }
  await model.ready;
  const env = model.environmentOfKernel(name);
  if (!env?.choices || nbPanel.isDisposed) {
    return true;
  }
  await nbPanel.context.ready;
  const notebook = nbPanel.model;
  const recorded = readRecordedChoice(notebook?.getMetadata(PROVENANCE_KEY));
  const chosen = await askAndSend(
    env,
    env.choices,
    recorded,
    { path: nbPanel.context.path },
    () => nbPanel.isDisposed,
    trans
  );
  if (chosen === null) {
    return false;
  }
  notebook?.setMetadata(
    PROVENANCE_KEY,
    withRecordedChoice(notebook.getMetadata(PROVENANCE_KEY), env.id, chosen)
  );
  return true;
}

/**
 * The same for a console: the choice is sent with its session's path and
 * name, and remembered in this page.
 */
async function chooseForConsole(
  model: TfEnvModel,
  panel: ConsolePanel,
  remembered: ConsoleChoices,
  name: string | undefined,
  trans: TranslationBundle
): Promise<boolean> {
  if (!name) {
    return true;
  }
  await model.ready;
  const env = model.environmentOfKernel(name);
  if (!env?.choices || panel.isDisposed) {
    return true;
  }
  const { path, name: sessionName } = panel.sessionContext;
  const chosen = await askAndSend(
    env,
    env.choices,
    remembered.recorded(path, env.id),
    { path, name: sessionName },
    () => panel.isDisposed,
    trans
  );
  if (chosen === null) {
    return false;
  }
  remembered.remember(path, env.id, chosen);
  return true;
}

/**
 * The dialog, then `POST /tfenv/choices` for `target`: the accepted values
 * (completed with the defaults), or null when the user cancelled, the widget
 * went away or the server refused.
 */
async function askAndSend(
  env: IEnvironmentSummary,
  choices: IChoices,
  recorded: IRecordedChoice | null,
  target: IChoiceTarget,
  gone: () => boolean,
  trans: TranslationBundle
): Promise<ChoiceValues | null> {
  const form = new ChoicesForm(
    env,
    choices,
    preselectedChoice(env.id, choices, recorded),
    trans
  );
  const result = await showDialog({
    title: trans.__('Resources for %1', env.display_name),
    body: form,
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.okButton({ label: trans.__('Start') })
    ]
  });
  if (!result.button.accept || !result.value || gone()) {
    return null;
  }
  try {
    const reply = await requestAPI<IChoiceReply>('choices', {
      method: 'POST',
      body: JSON.stringify(choiceRequest(target, env.id, result.value))
    });
    return reply.choices;
  } catch (reason) {
    await showErrorMessage(trans.__('Resources not accepted'), reason as Error);
    return null;
  }
}

/**
 * The dialog's body: one labelled `<select data-tfenv-choice=KEY>` per offered
 * resource.
 */
class ChoicesForm extends Widget implements Dialog.IBodyWidget<ChoiceValues> {
  constructor(
    env: IEnvironmentSummary,
    choices: IChoices,
    selected: ChoiceValues,
    trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-tfenv-choices-dialog');
    this.node.dataset.tfenvEnv = env.id;
    const labels: { [key: string]: string } = {
      gpus: trans.__('GPUs'),
      memory: trans.__('Memory'),
      cpus: trans.__('CPUs'),
      shm_size: trans.__('Shared memory (/dev/shm)')
    };
    for (const key of offeredKeys(choices)) {
      const row = document.createElement('label');
      row.className = 'jp-tfenv-choice';
      const text = document.createElement('span');
      text.textContent = labels[key] ?? key;
      const select = document.createElement('select');
      select.dataset.tfenvChoice = key;
      for (const [index, value] of choices.options[key].entries()) {
        const option = document.createElement('option');
        option.value = String(index);
        option.text = choiceText(key, value, trans);
        option.dataset.tfenvValue = String(value);
        option.selected = value === selected[key];
        select.appendChild(option);
      }
      row.append(text, select);
      this.node.appendChild(row);
    }
    this._choices = choices;
  }

  getValue(): ChoiceValues {
    const values: ChoiceValues = {};
    for (const select of Array.from(
      this.node.querySelectorAll<HTMLSelectElement>('select[data-tfenv-choice]')
    )) {
      const key = select.dataset.tfenvChoice ?? '';
      const value = this._choices.options[key]?.[Number(select.value)];
      if (value !== undefined) {
        values[key] = value;
      }
    }
    return values;
  }

  private _choices: IChoices;
}
