import { ReactWidget } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import type { IDisposable } from '@lumino/disposable';
import type { Message } from '@lumino/messaging';
import * as React from 'react';

import { PanelView } from './components/PanelView';
import type { IPanelActions } from './components/types';
import { tfenvIcon } from './icons';
import type { TfEnvModel } from './model';

export type { IPanelActions } from './components/types';
export { useModel } from './components/useModel';

/**
 * The environment sidebar: renders the model, polls only while visible.
 */
export class TfEnvPanel extends ReactWidget {
  constructor(options: TfEnvPanel.IOptions) {
    super();
    this._model = options.model;
    this._actions = options.actions;
    this._trans = options.trans;
    this.id = 'jp-tfenv-panel';
    this.addClass('jp-tfenv-panel');
    this.title.icon = tfenvIcon;
    this.title.caption = this._trans.__('TensorFlow environment');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute(
      'aria-label',
      this._trans.__('TensorFlow environment')
    );
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    // Restored open after a reload: attached visible, never "shown".
    if (this.isVisible) {
      this._hold();
    }
  }

  protected onBeforeDetach(msg: Message): void {
    this._release();
    super.onBeforeDetach(msg);
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._hold();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._release();
  }

  private _hold(): void {
    if (!this._lease) {
      this._lease = this._model.acquire('panel');
    }
  }

  private _release(): void {
    this._lease?.dispose();
    this._lease = null;
  }

  dispose(): void {
    this._release();
    super.dispose();
  }

  render(): JSX.Element {
    return (
      <PanelView
        model={this._model}
        actions={this._actions}
        trans={this._trans}
      />
    );
  }

  private _model: TfEnvModel;
  private _actions: IPanelActions;
  private _trans: TranslationBundle;
  private _lease: IDisposable | null = null;
}

/**
 * The panel's statics.
 */
export namespace TfEnvPanel {
  export interface IOptions {
    model: TfEnvModel;
    actions: IPanelActions;
    trans: TranslationBundle;
  }
}
