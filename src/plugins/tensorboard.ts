import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  MainAreaWidget,
  WidgetTracker
} from '@jupyterlab/apputils';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import type { TensorBoardTarget } from '../api';
import type { TfEnvModel } from '../model';
import {
  tensorBoardName,
  tensorBoardTitle,
  TensorBoardSession
} from '../tensorboard';
import {
  createTensorBoardWidget,
  type TensorBoardContent
} from '../tensorboardwidget';
import { CommandIDs, ITfEnvModel } from '../tokens';

import { chooseEnvironment } from './commands';

/**
 * TensorBoard in a main-area tab: "Open TensorBoard" (the active kernel's
 * environment) and "Compare Environments in TensorBoard", one tab per
 * TensorBoard, reused while it is open.
 */
export const tensorBoardPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-tfenv:tensorboard',
  description:
    "TensorBoard of an environment's logs, or of all environments side by side, in a main-area tab (the server runs it in the environment's own image).",
  autoStart: true,
  requires: [ITfEnvModel],
  optional: [ICommandPalette, ITranslator, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tfenv: ITfEnvModel,
    palette: ICommandPalette | null,
    translator: ITranslator | null,
    restorer: ILayoutRestorer | null
  ): void => {
    const model = tfenv as TfEnvModel;
    const trans = (translator ?? nullTranslator).load('jupyter_tfenv');
    const { commands } = app;
    const category = trans.__('TensorFlow environments');
    const open = new Map<string, MainAreaWidget<TensorBoardContent>>();
    // Open tabs come back after a reload: the command opens them again (the
    // server reuses a TensorBoard that still runs).
    const tracker = new WidgetTracker<MainAreaWidget<TensorBoardContent>>({
      namespace: 'tfenv-tensorboard'
    });
    if (restorer) {
      void restorer.restore(tracker, {
        command: CommandIDs.openTensorBoard,
        args: widget => {
          const target = widget.content.session.target;
          return target.view === 'compare'
            ? { view: 'compare' }
            : { environment: target.environment };
        },
        name: widget => widget.content.session.name
      });
    }

    const show = (target: TensorBoardTarget): void => {
      const name = tensorBoardName(target);
      const existing = open.get(name);
      if (existing && !existing.isDisposed) {
        app.shell.activateById(existing.id);
        if (existing.content.session.state.phase === 'error') {
          void existing.content.session.start();
        }
        return;
      }
      const displayName = (): string | null =>
        target.view === 'environment'
          ? (model.environment(target.environment)?.display_name ?? null)
          : null;
      const display = displayName();
      let content: TensorBoardContent | null = null;
      const session = new TensorBoardSession({
        client: model.client,
        target,
        trans,
        changed: state => content?.render(state)
      });
      const widget = createTensorBoardWidget(
        session,
        tensorBoardTitle(target, display, trans),
        trans
      );
      content = widget.content;
      open.set(name, widget);
      void tracker.add(widget);
      if (target.view === 'environment' && display === null) {
        // Opened before the catalog is known (a restored tab): named once it is.
        const rename = (): void => {
          const known = displayName();
          if (known !== null && !widget.isDisposed) {
            widget.title.label = tensorBoardTitle(target, known, trans);
            widget.title.caption = widget.title.label;
            model.changed.disconnect(rename);
          }
        };
        model.changed.connect(rename);
        widget.disposed.connect(() => model.changed.disconnect(rename));
      }
      widget.disposed.connect(() => {
        if (open.get(name) === widget) {
          open.delete(name);
        }
      });
      app.shell.add(widget, 'main');
      app.shell.activateById(widget.id);
      void session.start();
    };

    commands.addCommand(CommandIDs.openTensorBoard, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            environment: {
              type: 'string',
              description: trans.__(
                "The environment id whose logs to show; the active kernel's environment (else a picker) when absent"
              )
            },
            view: {
              type: 'string',
              enum: ['compare'],
              description: trans.__(
                "'compare': every environment's logs (as the compare command)"
              )
            }
          }
        }
      },
      label: args =>
        args['environment']
          ? trans.__(
              'TensorBoard of %1',
              model.environment(String(args['environment']))?.display_name ??
                String(args['environment'])
            )
          : trans.__('Open TensorBoard'),
      caption: trans.__(
        "Show an environment's TensorBoard logs ($TFENV_LOG_DIR) in TensorBoard, run in the environment's own image"
      ),
      execute: async args => {
        if (args['view'] === 'compare') {
          show({ view: 'compare' });
          return;
        }
        let envId = args['environment'] ? String(args['environment']) : null;
        if (envId === null) {
          await model.ready;
          envId = model.activeEnvironment?.id ?? null;
        }
        if (envId === null) {
          const env = await chooseEnvironment(
            model,
            trans,
            args,
            trans.__('Open TensorBoard'),
            trans.__('Show the TensorBoard logs of:')
          );
          envId = env?.id ?? null;
        }
        if (envId !== null) {
          show({ view: 'environment', environment: envId });
        }
      }
    });

    commands.addCommand(CommandIDs.compareTensorBoard, {
      describedBy: { args: { type: 'object', properties: {} } },
      label: trans.__('Compare Environments in TensorBoard'),
      caption: trans.__(
        'Every environment of yours as a run group in one TensorBoard'
      ),
      execute: () => show({ view: 'compare' })
    });

    if (palette) {
      for (const command of [
        CommandIDs.openTensorBoard,
        CommandIDs.compareTensorBoard
      ]) {
        palette.addItem({ command, category });
      }
    }
  }
};
