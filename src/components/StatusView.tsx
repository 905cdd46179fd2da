import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { tfenvIcon } from '../icons';
import type { TfEnvModel } from '../model';
import { statusLabel, statusParts } from '../state';

import { useModel } from './useModel';

// "no GPU" is in the label already; these get a badge.
const PROBLEMS = ['error', 'dead', 'not-pulled', 'engine-unreachable'];

/**
 * The status bar item's content: the active tfenv kernel's label, a badge
 * when it has a problem; nothing for other kernels.
 */
export function StatusView(props: {
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
              : state.state === 'engine-unreachable'
                ? trans.__('engine unreachable')
                : trans.__('error')}
        </span>
      )}
    </div>
  );
}
