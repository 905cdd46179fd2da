import { closeIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { IEnvironmentSummary } from '../api';
import {
  BUILD_STEPS,
  buildProgressText,
  buildStepLabel,
  buildStepStates,
  type IBuildProgress,
  isBuildFinished
} from '../buildprogress';

import { IconButton } from './common';
import type { IViewProps } from './types';

/**
 * A build of a derived environment, step by step (docs/building.md): the
 * same events `jupyter tfenv build` prints, from `/tfenv/builds/{id}/events`.
 */
export function BuildProgress(
  props: IViewProps & { progress: IBuildProgress; env: IEnvironmentSummary }
): JSX.Element {
  const { model, trans, progress, env } = props;
  const finished = isBuildFinished(progress);
  const at = BUILD_STEPS.indexOf(progress.step);
  const percent =
    progress.state === 'done'
      ? 100
      : Math.round((100 * Math.max(at, 0)) / BUILD_STEPS.length);
  return (
    <div
      className="jp-tfenv-build-progress"
      data-tfenv-build-state={progress.state}
      data-tfenv-build-step={progress.step}
      data-tfenv-build-id={progress.buildId}
    >
      <div className="jp-tfenv-pull-head">
        <span className="jp-tfenv-build-status">
          {buildProgressText(progress, trans)}
        </span>
        <span className="jp-tfenv-spacer" />
        {finished && (
          <IconButton
            className="jp-tfenv-build-dismiss"
            icon={closeIcon}
            title={trans.__('Dismiss')}
            onClick={() => model.clearBuild(env.id)}
          />
        )}
      </div>
      {progress.state !== 'error' && (
        <div
          className="jp-tfenv-bar"
          role="progressbar"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={percent}
          aria-label={trans.__('Build progress of %1', env.id)}
        >
          <div className="jp-tfenv-bar-fill" style={{ width: `${percent}%` }} />
        </div>
      )}
      <ol className="jp-tfenv-build-steps">
        {buildStepStates(progress).map(({ step, state }) => (
          <li
            key={step}
            className="jp-tfenv-build-step"
            data-tfenv-step={step}
            data-tfenv-step-state={state}
          >
            {buildStepLabel(step, trans)}
            {step === 'download' && progress.wheels
              ? ` ${progress.wheels.done}/${progress.wheels.total}`
              : ''}
          </li>
        ))}
      </ol>
      {progress.message && (
        <div
          className={
            progress.state === 'error'
              ? 'jp-tfenv-message jp-tfenv-build-message'
              : 'jp-tfenv-muted jp-tfenv-build-message'
          }
        >
          {progress.message}
        </div>
      )}
    </div>
  );
}
