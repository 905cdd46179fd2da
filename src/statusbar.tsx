import { ReactWidget } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import type { IDisposable } from '@lumino/disposable';
import * as React from 'react';

import { StatusView } from './components/StatusView';
import type { TfEnvModel } from './model';

/**
 * The status bar item: "TF 2.20.0 · CPU" for the active tfenv kernel; a
 * click opens the panel.
 */
export class TfEnvStatus extends ReactWidget {
  constructor(options: TfEnvStatus.IOptions) {
    super();
    this._model = options.model;
    this._trans = options.trans;
    this._onOpen = options.onOpen;
    this.id = 'jp-tfenv-status';
    this.addClass('jp-tfenv-status');
    this.addClass('jp-mod-highlighted');
  }

  /**
   * Whether the item is enabled by settings; the model polls for it only
   * then.
   */
  get enabled(): boolean {
    return this._lease !== null;
  }

  set enabled(value: boolean) {
    if (value && !this._lease) {
      this._lease = this._model.acquire('status');
    } else if (!value && this._lease) {
      this._lease.dispose();
      this._lease = null;
    }
  }

  dispose(): void {
    this.enabled = false;
    super.dispose();
  }

  render(): JSX.Element {
    return (
      <StatusView
        model={this._model}
        trans={this._trans}
        onOpen={this._onOpen}
      />
    );
  }

  private _model: TfEnvModel;
  private _trans: TranslationBundle;
  private _onOpen: (() => void) | null;
  private _lease: IDisposable | null = null;
}

/**
 * The status item's statics.
 */
export namespace TfEnvStatus {
  export interface IOptions {
    model: TfEnvModel;
    trans: TranslationBundle;
    /**
     * Open the panel (null: the item is not clickable).
     */
    onOpen: (() => void) | null;
  }
}
