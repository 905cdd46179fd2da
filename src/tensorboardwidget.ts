import { MainAreaWidget } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import { IFrame } from '@jupyterlab/ui-components';
import { Panel, Widget } from '@lumino/widgets';

import { tfenvIcon } from './icons';
import {
  type ITensorBoardState,
  startingText,
  TensorBoardSession
} from './tensorboard';

/**
 * A TensorBoard tab's content: its progress while it starts (spinner, "Starting
 * TensorBoard in <image>…"), its error with a Retry button, or TensorBoard
 * itself in an iframe (scripts and same-origin allowed: TensorBoard is a
 * script page served by this Jupyter server's proxy, under its own origin).
 */
export class TensorBoardContent extends Panel {
  constructor(session: TensorBoardSession, trans: TranslationBundle) {
    super();
    this.session = session;
    this._trans = trans;
    this.addClass('jp-tfenv-tensorboard');
    this.node.dataset.tfenvTensorboard = session.name;

    this._status = new Widget();
    this._status.addClass('jp-tfenv-tensorboard-status');
    this.addWidget(this._status);

    this._frame = new IFrame({
      sandbox: ['allow-scripts', 'allow-same-origin', 'allow-downloads'],
      referrerPolicy: 'same-origin'
    });
    this._frame.addClass('jp-tfenv-tensorboard-frame');
    this._frame.hide();
    this.addWidget(this._frame);
    this.render(session.state);
  }

  readonly session: TensorBoardSession;

  /**
   * Show a state of the session (called on every change).
   */
  render(state: ITensorBoardState): void {
    const trans = this._trans;
    const node = this._status.node;
    node.dataset.tfenvPhase = state.phase;
    this.node.dataset.tfenvPhase = state.phase;
    node.textContent = '';
    if (state.phase === 'running' && state.url) {
      this._status.hide();
      // Loaded again after a retry: the page it showed may be the proxy's error.
      if (!this._showing || this._frame.url !== state.url) {
        this._frame.url = state.url;
      }
      this._showing = true;
      this._frame.show();
      return;
    }
    this._showing = false;
    this._frame.hide();
    this._status.show();
    if (state.phase === 'error') {
      const title = document.createElement('div');
      title.className = 'jp-tfenv-tensorboard-error-title';
      title.textContent = trans.__('TensorBoard could not be shown');
      const message = document.createElement('pre');
      message.className = 'jp-tfenv-server-message jp-tfenv-tensorboard-error';
      message.setAttribute('role', 'alert');
      message.textContent = state.message ?? '';
      const retry = document.createElement('button');
      retry.className =
        'jp-mod-styled jp-mod-accept jp-tfenv-tensorboard-retry';
      retry.textContent = trans.__('Retry');
      retry.onclick = () => void this.session.start();
      node.append(title, message, retry);
      return;
    }
    const line = document.createElement('div');
    line.className = 'jp-tfenv-tensorboard-starting';
    const spinner = document.createElement('span');
    spinner.className = 'jp-tfenv-spinner';
    spinner.setAttribute('aria-hidden', 'true');
    const text = document.createElement('span');
    text.textContent = startingText(state, trans);
    line.append(spinner, text);
    node.append(line);
    if (state.message) {
      const detail = document.createElement('div');
      detail.className = 'jp-tfenv-muted';
      detail.textContent = state.message;
      node.append(detail);
    }
  }

  dispose(): void {
    this.session.dispose();
    super.dispose();
  }

  private _trans: TranslationBundle;
  private _status: Widget;
  private _frame: IFrame;
  private _showing = false;
}

/**
 * A main-area tab for a TensorBoard session, titled `title`; its id is made
 * of the TensorBoard's name, so the tab is found again and reused.
 */
export function createTensorBoardWidget(
  session: TensorBoardSession,
  title: string,
  trans: TranslationBundle
): MainAreaWidget<TensorBoardContent> {
  const content = new TensorBoardContent(session, trans);
  const widget = new MainAreaWidget({ content });
  widget.id = tensorBoardWidgetId(session.name);
  widget.title.label = title;
  widget.title.caption = title;
  widget.title.icon = tfenvIcon;
  widget.title.closable = true;
  return widget;
}

/**
 * The DOM id of a TensorBoard's tab.
 */
export function tensorBoardWidgetId(name: string): string {
  return `jp-tfenv-tensorboard-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}
