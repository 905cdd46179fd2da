import * as React from 'react';

import type { IEnvironment } from '../api';
import { compatMark } from '../compat';
import { derivedPackagesText, notBuiltText } from '../derived';
import { formatBytes } from '../format';
import { isPullFinished } from '../pullprogress';
import {
  adminPullText,
  environmentAvailability,
  unavailableText,
  wantsGpu
} from '../state';

import { BuildProgress } from './BuildProgress';
import { Breakable } from './common';
import { PullProgress } from './PullProgress';
import type { IViewProps } from './types';

export function EnvironmentRow(
  props: IViewProps & { env: IEnvironment }
): JSX.Element {
  const { model, actions, trans, env } = props;
  const present = env.image_status?.present ?? null;
  const current = model.activeEnvironment?.id === env.id;
  const progress = model.pulls.get(env.id) ?? null;
  const pulling = progress !== null && !isPullFinished(progress);
  const hasSession = model.sessionContext !== null;
  const availability = environmentAvailability(env, model.gpus);
  const unavailable = availability.reason
    ? unavailableText(availability.reason, trans)
    : null;
  const compat = compatMark(env, trans);
  const packages = derivedPackagesText(env);
  const build = model.builds.get(env.id) ?? null;
  const building = model.building.has(env.id);
  const switchTitle = !hasSession
    ? trans.__('Open a notebook or console first')
    : current
      ? trans.__('The active kernel runs in this environment')
      : present === false
        ? trans.__('Pull the image first')
        : unavailable
          ? trans.__(
              'Cannot run on this server: %1',
              availability.message ?? unavailable
            )
          : compat?.state === 'incompatible'
            ? trans.__(
                'Change the kernel to %1 (GPU incompatible: the server refuses the start unless the admin allows it): %2',
                env.display_name,
                compat.message
              )
            : trans.__(
                'Change the kernel of the active notebook or console to %1',
                env.display_name
              );
  return (
    <li
      className="jp-tfenv-env-row"
      data-tfenv-env={env.id}
      data-tfenv-available={String(availability.available)}
      data-tfenv-unavailable-reason={availability.reason ?? ''}
      data-tfenv-present={present === null ? 'unknown' : String(present)}
      data-tfenv-current={current ? 'true' : 'false'}
      data-tfenv-compat={compat?.state ?? ''}
      aria-current={current ? 'true' : undefined}
    >
      <div className="jp-tfenv-env-head">
        <span
          className="jp-tfenv-env-name"
          title={env.description ?? env.display_name}
        >
          {env.display_name}
        </span>
      </div>
      <div className="jp-tfenv-env-meta">
        {current && (
          <span className="jp-tfenv-badge jp-tfenv-current">
            {trans.__('active')}
          </span>
        )}
        <span className="jp-tfenv-badge jp-tfenv-env-tf">
          {env.tensorflow
            ? trans.__('TF %1', env.tensorflow)
            : trans.__('TF ?')}
        </span>
        <span
          className="jp-tfenv-badge"
          data-tfenv-kind={wantsGpu(env) ? 'gpu' : 'cpu'}
        >
          {env.gpu_label}
        </span>
        <span
          className="jp-tfenv-badge jp-tfenv-presence"
          data-tfenv-present={present === null ? 'unknown' : String(present)}
          title={env.image_status?.error ?? env.image}
        >
          {present === true
            ? formatBytes(env.image_status?.size ?? null)
            : present === false
              ? env.derived
                ? trans.__('not built')
                : trans.__('not pulled')
              : trans.__('unknown')}
        </span>
        {unavailable && availability.reason !== 'not-pulled' && (
          <span
            className="jp-tfenv-badge jp-tfenv-unavailable"
            title={availability.message ?? unavailable}
          >
            {trans.__('unavailable: %1', unavailable)}
          </span>
        )}
        {compat && (
          <span
            className="jp-tfenv-badge jp-tfenv-compat"
            data-tfenv-compat={compat.state}
            title={compat.message}
          >
            {compat.label}
          </span>
        )}
      </div>
      {compat?.state === 'incompatible' && (
        <div
          className="jp-tfenv-env-hint jp-tfenv-compat-message"
          data-tfenv-compat={compat.state}
        >
          {compat.message}
        </div>
      )}
      {packages && env.derived && (
        <div
          className="jp-tfenv-env-packages"
          data-tfenv-derived-base={env.derived.base}
          title={trans.__(
            'Packages added to %1 (built by `jupyter tfenv build %2`)',
            env.derived.base_image,
            env.id
          )}
        >
          {trans.__('+ %1 on %2', packages, env.derived.base)}
        </div>
      )}
      <div className="jp-tfenv-env-image jp-tfenv-mono" title={env.image}>
        <Breakable text={env.image} />
      </div>
      {progress && <PullProgress {...props} progress={progress} env={env} />}
      {build && <BuildProgress {...props} progress={build} env={env} />}
      <div className="jp-tfenv-env-actions">
        <button
          className="jp-mod-styled jp-tfenv-switch"
          data-tfenv-env={env.id}
          disabled={
            !hasSession ||
            current ||
            present === false ||
            !availability.available
          }
          title={switchTitle}
          onClick={() => actions.switchTo(env.id)}
        >
          {trans.__('Switch')}
        </button>
        {model.pullCapability.allowed && env.derived && present === false && (
          <button
            className="jp-mod-styled jp-mod-accept jp-tfenv-build"
            data-tfenv-env={env.id}
            disabled={building}
            title={trans.__(
              'Build %1: the pinned packages on %2, without network (jupyter tfenv build %3)',
              env.image,
              env.derived.base_image,
              env.id
            )}
            onClick={() => actions.build(env.id)}
          >
            {building ? trans.__('Building…') : trans.__('Build')}
          </button>
        )}
        {actions.compare && (
          <button
            className="jp-mod-styled jp-tfenv-compare"
            data-tfenv-env={env.id}
            disabled={present === false}
            title={
              present === false
                ? trans.__(
                    'Pull or build it first: the comparison probes its image'
                  )
                : trans.__(
                    'Compare the packages and versions of %1 with another environment',
                    env.display_name
                  )
            }
            onClick={() => actions.compare!(env.id)}
          >
            {trans.__('Compare with…')}
          </button>
        )}
        {actions.tensorboard && (
          <button
            className="jp-mod-styled jp-tfenv-tensorboard-open"
            data-tfenv-env={env.id}
            disabled={present === false}
            title={
              present === false
                ? trans.__(
                    "TensorBoard runs in the environment's own image: pull or build it first"
                  )
                : trans.__(
                    'Show the TensorBoard logs of %1 (%2) in a tab',
                    env.display_name,
                    '$TFENV_LOG_DIR'
                  )
            }
            onClick={() => actions.tensorboard!(env.id)}
          >
            {trans.__('TensorBoard')}
          </button>
        )}
        {model.pullCapability.allowed && (
          <button
            className={`jp-mod-styled jp-tfenv-pull${present === false && !env.derived ? ' jp-mod-accept' : ''}`}
            data-tfenv-env={env.id}
            disabled={pulling}
            title={
              present === false
                ? trans.__('Pull %1', env.image)
                : trans.__(
                    'Pull %1 again (the locked digest when locked)',
                    env.image
                  )
            }
            onClick={() => actions.pull(env.id)}
          >
            {present === false ? trans.__('Pull') : trans.__('Re-pull')}
          </button>
        )}
      </div>
      {env.derived && present === false && (
        <div className="jp-tfenv-env-hint jp-tfenv-not-built">
          {notBuiltText(env, model.pullCapability.allowed, trans)}
        </div>
      )}
      {!env.derived && !model.pullCapability.allowed && present === false && (
        <div className="jp-tfenv-env-hint jp-tfenv-pull-by-admin">
          {adminPullText(model.pullCapability, env.id)}
        </div>
      )}
    </li>
  );
}
