import { closeIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { IEnvironmentSummary } from '../api';
import { formatBytes } from '../format';
import { type IPullProgress, isPullFinished } from '../pullprogress';

import { IconButton } from './common';
import type { IViewProps } from './types';

export function PullProgress(
  props: IViewProps & { progress: IPullProgress; env: IEnvironmentSummary }
): JSX.Element {
  const { model, actions, trans, progress, env } = props;
  const finished = isPullFinished(progress);
  const stateText: { [key: string]: string } = {
    pulling: trans.__('Pulling'),
    done: trans.__('Pulled'),
    error: trans.__('Pull failed'),
    cancelled: trans.__('Pull cancelled')
  };
  const percent = Math.round(progress.percent);
  // Before Docker reports any layer size, the server's estimate counts
  // layers only (it may say 75% and then drop): show no number until then.
  const known = finished || progress.total > 0;
  return (
    <div
      className="jp-tfenv-pull-progress"
      data-tfenv-pull-state={progress.state}
      data-tfenv-pull-id={progress.pullId}
    >
      <div className="jp-tfenv-pull-head">
        <span className="jp-tfenv-pull-title">{stateText[progress.state]}</span>
        <span className="jp-tfenv-pull-percent">
          {known ? `${percent}%` : '…'}
        </span>
        {progress.layers > 0 && (
          <span className="jp-tfenv-muted">
            {trans.__('%1/%2 layers', progress.layersDone, progress.layers)}
          </span>
        )}
        {progress.total > 0 && !finished && (
          <span className="jp-tfenv-muted">
            {`${formatBytes(progress.current)} / ${formatBytes(progress.total)}`}
          </span>
        )}
        <span className="jp-tfenv-spacer" />
        {finished ? (
          <IconButton
            className="jp-tfenv-pull-dismiss"
            icon={closeIcon}
            title={trans.__('Dismiss')}
            onClick={() => model.clearPull(env.id)}
          />
        ) : (
          <button
            className="jp-mod-styled jp-mod-warn jp-tfenv-cancel-pull"
            data-tfenv-env={env.id}
            onClick={() => actions.cancelPull(env.id)}
          >
            {trans.__('Cancel')}
          </button>
        )}
      </div>
      {!(finished && percent === 0) && (
        <div
          className={
            known ? 'jp-tfenv-bar' : 'jp-tfenv-bar jp-tfenv-bar-indeterminate'
          }
          role="progressbar"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={known ? percent : undefined}
          aria-label={trans.__('Pull progress of %1', env.image)}
        >
          <div
            className="jp-tfenv-bar-fill"
            style={{ width: known ? `${percent}%` : undefined }}
          />
        </div>
      )}
      {progress.message && (
        <div
          className={
            progress.state === 'error'
              ? 'jp-tfenv-message jp-tfenv-pull-message'
              : 'jp-tfenv-muted jp-tfenv-pull-message'
          }
        >
          {progress.message}
        </div>
      )}
    </div>
  );
}
