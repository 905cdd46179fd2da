import { ReactWidget } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import type { IDisposable } from '@lumino/disposable';
import * as React from 'react';

import { tfenvIcon } from './icons';
import type { TfEnvModel } from './model';
import { useModel } from './panel';
import { statusLabel, statusParts } from './state';

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

// "no GPU" is in the label already; these get a badge.
const PROBLEMS = ['error', 'dead', 'not-pulled'];

function StatusView(props: {
  model: TfEnvModel;
  trans: TranslationBundle;
  onOpen: (() => void) | null;
}): JSX.Element | null {
  const { model, trans, onOpen } = props;
  useModel(model);
  const env = model.activeEnvironment;
  if (!env) {
    return null;
  }
  const state = model.state;
  const label = statusLabel(
    statusParts(env, model.activeProbe, model.kernelStatus),
    trans
  );
  const problem = PROBLEMS.includes(state.state);
  const titleParts = [env.display_name, env.image];
  if (state.message) {
    titleParts.push(state.message);
  }
  if (onOpen) {
    titleParts.push(trans.__('Click to open the environment panel'));
  }
  return (
    <div
      className="jp-tfenv-status-item"
      data-tfenv-env={env.id}
      data-tfenv-state={state.state}
      title={titleParts.join('\n')}
      role={onOpen ? 'button' : undefined}
      tabIndex={onOpen ? 0 : undefined}
      onClick={() => onOpen?.()}
      onKeyDown={event => {
        if (onOpen && (event.key === 'Enter' || event.key === ' ')) {
          event.preventDefault();
          onOpen();
        }
      }}
    >
      <tfenvIcon.react tag="span" className="jp-tfenv-status-icon" />
      <span className="jp-tfenv-status-text">{label}</span>
      {problem && (
        <span className="jp-tfenv-status-problem" aria-label={state.state}>
          {state.state === 'dead'
            ? trans.__('dead')
            : state.state === 'not-pulled'
              ? trans.__('not pulled')
              : trans.__('error')}
        </span>
      )}
    </div>
  );
}
