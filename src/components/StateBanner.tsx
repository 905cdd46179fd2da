import * as React from 'react';

import { isPullFinished } from '../pullprogress';
import { adminPullText, type IPanelState } from '../state';

import { PullProgress } from './PullProgress';
import { RestartButton } from './RestartButton';
import type { IViewProps } from './types';

/**
 * The state's icon, title and sentence; the server's message below.
 */
export function StateBanner(
  props: IViewProps & { state: IPanelState }
): JSX.Element {
  const { model, actions, trans, state } = props;
  const env = model.activeEnvironment;
  const name = env?.display_name ?? model.activeKernelName ?? '';
  let title = '';
  let text = '';
  let action: JSX.Element | null = null;
  switch (state.reason) {
    case 'extension-missing':
      title = trans.__('Server extension missing');
      text = trans.__(
        'The jupyter_tfenv server extension does not answer (GET /tfenv/environments returned 404). Install the Python package jupyter_tfenv in the environment of the Jupyter server, check `jupyter server extension list`, and restart the server.'
      );
      break;
    case 'no-session':
      title = trans.__('No notebook or console');
      text = trans.__(
        'Open a notebook or a console to see the TensorFlow environment its kernel runs in.'
      );
      break;
    case 'no-kernel-selected':
      title = trans.__('No kernel');
      text = trans.__(
        'This notebook has no kernel. Pick a TensorFlow environment below or in the kernel picker.'
      );
      break;
    case 'not-tfenv':
      title = trans.__('Not a TensorFlow environment');
      text = trans.__(
        'The kernel "%1" does not run in a pinned TensorFlow environment. Switch to one below.',
        name
      );
      break;
    case 'not-pulled':
      title = trans.__('Image not pulled');
      text = state.message
        ? trans.__('The kernel cannot start. The server says:')
        : trans.__(
            'The image of "%1" (%2) is not on this Docker engine, so its kernel cannot start. Pull it first.',
            name,
            env?.image ?? ''
          );
      if (env && !model.pullCapability.allowed) {
        action = (
          <p className="jp-tfenv-state-hint jp-tfenv-pull-by-admin">
            {adminPullText(model.pullCapability, env.id)}
          </p>
        );
      } else if (env) {
        const progress = model.pulls.get(env.id);
        action =
          progress && !isPullFinished(progress) ? (
            <PullProgress {...props} progress={progress} env={env} />
          ) : (
            <button
              className="jp-mod-styled jp-mod-accept jp-tfenv-state-action jp-tfenv-pull"
              data-tfenv-env={env.id}
              onClick={() => actions.pull(env.id)}
            >
              {trans.__('Pull image')}
            </button>
          );
      }
      break;
    case 'not-started':
      title = trans.__('Kernel not running');
      text = trans.__('The kernel "%1" is not running.', name);
      if (env) {
        action = (
          <button
            className="jp-mod-styled jp-mod-accept jp-tfenv-start"
            data-tfenv-env={env.id}
            onClick={() => actions.switchTo(env.id)}
          >
            {trans.__('Start kernel')}
          </button>
        );
      }
      break;
    case 'initializing':
    case 'starting':
      title = trans.__('Starting');
      text = trans.__('Starting the kernel of "%1"…', name);
      break;
    case 'fetching':
      title = trans.__('Loading');
      text = trans.__('Reading the kernel container’s status…');
      break;
    case 'probe':
      title = trans.__('Probing the image');
      text = trans.__(
        'Reading the versions inside %1 (a short-lived container; cached afterwards)…',
        env?.image ?? ''
      );
      break;
    case 'start-failed':
      title =
        state.state === 'no-gpu'
          ? trans.__('No GPU for this environment')
          : trans.__('The kernel did not start');
      text = trans.__('Starting "%1" failed. The server says:', name);
      break;
    case 'status-failed':
      title = trans.__('Kernel status unavailable');
      text = trans.__('The server could not report on the kernel container:');
      break;
    case 'server-unreachable':
      title = trans.__('Server not reachable');
      text = trans.__(
        'The Jupyter server does not answer (it stopped, or the network is down): the state of the kernels and environments is unknown. The panel reads it again once the server answers.'
      );
      break;
    case 'engine-unreachable': {
      const since = state.detail ? new Date(state.detail) : null;
      title = trans.__('Docker engine unreachable');
      text =
        since && !Number.isNaN(since.getTime())
          ? trans.__(
              'The Jupyter server answers, but its Docker engine has not since %1. A running kernel can go on computing; what is shown below was read before. The panel recovers by itself once the engine answers. The server says:',
              since.toLocaleTimeString()
            )
          : trans.__(
              'The Jupyter server answers, but its Docker engine does not. A running kernel can go on computing; what is shown below was read before. The server says:'
            );
      action = (
        <p className="jp-tfenv-state-hint jp-tfenv-engine-hint">
          {trans.__(
            'Save your work and wait if the engine is being restarted or upgraded; otherwise ask the server’s admin to start it.'
          )}
        </p>
      );
      break;
    }
    case 'restarting':
      title = trans.__('Restarting');
      text = trans.__(
        'Restarting the kernel of "%1" in a new container; its variables are gone…',
        name
      );
      break;
    case 'probe-failed':
      title = trans.__('Running');
      text = trans.__(
        'The kernel runs, but probing its image failed; versions come from the catalog:'
      );
      break;
    case 'kernel-dead':
      title = trans.__('Kernel dead');
      text =
        state.detail === 'oom'
          ? trans.__(
              'The kernel died: its container ran out of memory (the memory limit of the environment). Restart the kernel.'
            )
          : trans.__('The kernel died. Restart it to get a new container.');
      action = <RestartButton {...props} />;
      break;
    case 'container-exited':
      title = trans.__('Kernel container exited');
      text = trans.__(
        'The kernel’s container exited (exit code %1). Restart the kernel.',
        state.detail ?? '?'
      );
      action = <RestartButton {...props} />;
      break;
    case 'oom-killed':
      title = trans.__('Out of memory');
      text = trans.__(
        'The kernel’s container was killed for using more memory than its limit. Restart the kernel; raise `resources.memory` in the catalog if it happens again.'
      );
      action = <RestartButton {...props} />;
      break;
    case 'container-gone':
      title = trans.__('Kernel container gone');
      text = trans.__('The kernel’s container no longer exists.');
      action = <RestartButton {...props} />;
      break;
    case 'no-gpu':
      title = trans.__('No GPU for this environment');
      text = trans.__(
        '"%1" asks for GPUs, but this host cannot give it one:',
        name
      );
      break;
    case 'ok': {
      const container = model.kernelStatus?.container_id ?? '';
      title = trans.__('Running');
      text = container
        ? trans.__(
            'The kernel runs in container %1 of "%2".',
            container.slice(0, 12),
            name
          )
        : trans.__('The kernel runs in "%1".', name);
      break;
    }
  }
  const busy = state.state === 'loading';
  return (
    <section
      className={`jp-tfenv-state jp-tfenv-state-${state.state}`}
      data-tfenv-state={state.state}
      data-tfenv-reason={state.reason}
      role="status"
      aria-live="polite"
    >
      <div className="jp-tfenv-state-head">
        {busy ? (
          <span className="jp-tfenv-spinner" aria-hidden="true" />
        ) : (
          <span className="jp-tfenv-state-dot" aria-hidden="true" />
        )}
        <span className="jp-tfenv-state-title">{title}</span>
      </div>
      <p className="jp-tfenv-state-text">{text}</p>
      {state.message && (
        <pre className="jp-tfenv-message jp-tfenv-server-message">
          {state.message}
        </pre>
      )}
      {action && <div className="jp-tfenv-state-actions">{action}</div>}
    </section>
  );
}
