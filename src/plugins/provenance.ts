import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import {
  INotebookTracker,
  Notebook,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { keepRecordedChoice } from '../choices';
import type { TfEnvModel } from '../model';
import {
  provenanceShortText,
  provenanceText
} from '../components/provenanceText';
import {
  compareProvenance,
  IProvenanceVerdict,
  makeProvenance,
  PROVENANCE_KEY,
  readProvenance,
  sameProvenance
} from '../provenance';
import { IImageStatus } from '../api';
import { ITfEnvModel, ITfEnvPanel } from '../tokens';

/**
 * The plugin id; its settings schema is `schema/lab/provenance.json`.
 */
export const PROVENANCE_PLUGIN_ID = 'jupyter-tfenv:provenance';

/**
 * How long to wait for a kernel on opening before comparing anyway (the
 * kernel picker may be waiting for the user).
 */
const KERNEL_WAIT_MS = 15000;

type NoticeKind = 'notification' | 'dialog' | 'panel';

/**
 * Notebook provenance: record the environment and image digest a notebook
 * runs with; on opening, tell when they are gone or changed.
 */
export const provenancePlugin: JupyterFrontEndPlugin<void> = {
  id: PROVENANCE_PLUGIN_ID,
  description:
    'Records in the notebook metadata (`tfenv`) the environment, image and digest a notebook last ran with; on opening, offers to switch back when that environment is missing or pinned to other bits now.',
  autoStart: true,
  requires: [ITfEnvModel, INotebookTracker],
  optional: [ISettingRegistry, ITranslator, ITfEnvPanel],
  activate: (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    notebooks: INotebookTracker,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null,
    panel: ITfEnvPanel | null
  ): void => {
    const model = tfenv as TfEnvModel;
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    let record = true;
    let notice: NoticeKind = 'notification';
    const settingsLoaded = settingRegistry
      ? settingRegistry
          .load(PROVENANCE_PLUGIN_ID)
          .then(settings => {
            const read = (): void => {
              record = settings.get('record').composite !== false;
              const value = settings.get('notice').composite;
              notice =
                value === 'dialog' || value === 'panel'
                  ? value
                  : 'notification';
            };
            read();
            settings.changed.connect(read);
          })
          .catch(reason => {
            console.error(
              'jupyter-tfenv: failed to load provenance settings.',
              reason
            );
          })
      : Promise.resolve();

    // ---------------------------------------------------------- recording

    const recording = new WeakSet<NotebookPanel>();
    const recordRun = async (nbPanel: NotebookPanel): Promise<void> => {
      const context = nbPanel.sessionContext;
      const notebookModel = nbPanel.model;
      const env = model.environmentOfKernel(context.session?.kernel?.name);
      if (!record || !env || !notebookModel || recording.has(nbPanel)) {
        return;
      }
      recording.add(nbPanel);
      try {
        const image = await model.imageStatus(env.id);
        const probe =
          model.sessionContext === context ? model.activeProbe : null;
        const next = makeProvenance(env, image, probe);
        const previous = readProvenance(
          notebookModel.getMetadata(PROVENANCE_KEY)
        );
        if (!sameProvenance(previous, next)) {
          // The resources chosen at launch (plugins/choices.ts) stay recorded.
          const before = notebookModel.getMetadata(PROVENANCE_KEY);
          notebookModel.setMetadata(
            PROVENANCE_KEY,
            keepRecordedChoice(before, { ...next })
          );
        }
        model.setProvenance(context, null);
      } finally {
        recording.delete(nbPanel);
      }
    };
    const panelOf = (notebook: Notebook): NotebookPanel | null =>
      notebooks.find(p => p.content === notebook) ?? null;
    NotebookActions.executed.connect((_, { notebook }) => {
      const nbPanel = panelOf(notebook);
      if (nbPanel) {
        void recordRun(nbPanel);
      }
    });

    // ---------------------------------------------------------- checking

    const switchTo = async (
      nbPanel: NotebookPanel,
      envId: string
    ): Promise<void> => {
      const env = model.environment(envId);
      if (!env) {
        return;
      }
      model.setProvenance(nbPanel.sessionContext, null);
      try {
        await nbPanel.sessionContext.changeKernel({ name: env.kernel_name });
      } catch (reason) {
        console.warn('jupyter-tfenv: switching failed.', reason);
      }
    };

    const tell = async (
      nbPanel: NotebookPanel,
      verdict: IProvenanceVerdict
    ): Promise<void> => {
      const text = provenanceText(verdict, model, trans);
      const candidate = verdict.candidate
        ? model.environment(verdict.candidate)
        : null;
      const canSwitch = candidate !== null && candidate.id !== verdict.current;
      const keep = (): void =>
        model.setProvenance(nbPanel.sessionContext, null);
      const name = nbPanel.context.path.split('/').pop() ?? '';
      if (notice === 'panel') {
        panel?.open();
        return;
      }
      if (notice === 'dialog') {
        const body = document.createElement('div');
        body.className = 'jp-tfenv-provenance-dialog';
        body.dataset.tfenvProvenance = verdict.status;
        body.textContent = text;
        const buttons = [
          Dialog.cancelButton({ label: trans.__('Keep current') })
        ];
        if (canSwitch) {
          buttons.push(
            Dialog.okButton({
              label: trans.__('Switch to %1', candidate.display_name)
            })
          );
        }
        const result = await showDialog({
          title: trans.__('%1: recorded environment differs', name),
          body: new Widget({ node: body }),
          buttons
        });
        if (result.button.accept && canSwitch) {
          await switchTo(nbPanel, candidate.id);
        } else {
          keep();
        }
        return;
      }
      const actions: Notification.IAction[] = [];
      if (canSwitch) {
        actions.push({
          label: trans.__('Switch to %1', candidate.display_name),
          caption: candidate.image,
          displayType: 'accent',
          callback: () => void switchTo(nbPanel, candidate.id)
        });
      }
      actions.push({
        label: trans.__('Keep current'),
        callback: keep
      });
      if (panel) {
        actions.push({
          label: trans.__('Details'),
          displayType: 'link',
          callback: event => {
            event.preventDefault();
            panel.open();
          }
        });
      }
      Notification.warning(`${name}: ${provenanceShortText(verdict, trans)}`, {
        autoClose: false,
        actions
      });
    };

    const check = async (nbPanel: NotebookPanel): Promise<void> => {
      await Promise.all([nbPanel.context.ready, model.ready, settingsLoaded]);
      const recorded = readProvenance(
        nbPanel.model?.getMetadata(PROVENANCE_KEY)
      );
      if (!recorded || nbPanel.isDisposed || model.extensionMissing) {
        return;
      }
      const context = nbPanel.sessionContext;
      await Promise.race([
        context.ready.catch(() => undefined),
        new Promise(resolve => setTimeout(resolve, KERNEL_WAIT_MS))
      ]);
      if (nbPanel.isDisposed) {
        return;
      }
      const envs = model.environments ?? [];
      // The image status (digests, lock) of every entry that may hold the
      // recorded bits.
      const related = envs.filter(
        env =>
          env.id === recorded.environment ||
          env.image === recorded.image ||
          (recorded.digest && env.digest === recorded.digest)
      );
      const images = new Map<string, IImageStatus | null>();
      await Promise.all(
        related.map(async env => {
          images.set(env.id, await model.imageStatus(env.id, true));
        })
      );
      const kernelName =
        context.session?.kernel?.name ??
        (context.hasNoKernel ? null : (context.kernelPreference.name ?? null));
      const current = model.environmentOfKernel(kernelName)?.id ?? null;
      const verdict = compareProvenance(
        recorded,
        envs,
        current,
        id => images.get(id) ?? null
      );
      if (verdict.status === 'match') {
        return;
      }
      model.setProvenance(context, verdict);
      await tell(nbPanel, verdict);
    };

    notebooks.widgetAdded.connect((_, nbPanel) => {
      check(nbPanel).catch(reason =>
        console.warn('jupyter-tfenv: provenance check failed.', reason)
      );
    });
  }
};
