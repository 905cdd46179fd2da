import {
  Clipboard,
  Dialog,
  ReactWidget,
  showDialog
} from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import {
  closeIcon,
  copyIcon,
  deleteIcon,
  refreshIcon,
  LabIcon
} from '@jupyterlab/ui-components';
import type { IDisposable } from '@lumino/disposable';
import type { Message } from '@lumino/messaging';
import * as React from 'react';

import {
  checkpointKindLabel,
  checkpointLabel,
  checkpointStep,
  CONTAINER_CHECKPOINT_DIR,
  formatCheckpointTime,
  isIncomplete,
  sortCheckpoints
} from './checkpoints';
import {
  breakableParts,
  formatBytes,
  formatPercent,
  ratio,
  shortDigest
} from './format';
import { tfenvIcon } from './icons';
import type { TfEnvModel } from './model';
import type { IProvenanceVerdict } from './provenance';
import { IPullProgress, isPullFinished } from './pullprogress';
import {
  adminPullText,
  environmentAvailability,
  gpuRows,
  gpuViewState,
  IPanelState,
  lockInfo,
  sortEnvironments,
  unavailableText,
  wantsGpu
} from './state';
import type {
  ICheckpointItem,
  ICheckpointListing,
  IEnvironment,
  IEnvironmentSummary,
  IFilesWarning,
  IOtherCheckpoints
} from './api';
import { TfEnvApiError } from './api';

/**
 * What the panel needs besides the model.
 */
export interface IPanelActions {
  /**
   * Switch the active session to an environment.
   */
  switchTo(envId: string): void;
  pull(envId: string): void;
  cancelPull(envId: string): void;
  refresh(): void;
  /**
   * Restart the active kernel.
   */
  restart(): void;
  /**
   * Keep the current environment despite the provenance notice.
   */
  keepCurrent(): void;
}

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

/**
 * Re-render on every model change.
 */
export function useModel(model: TfEnvModel): number {
  const [version, setVersion] = React.useState(0);
  React.useEffect(() => {
    const onChange = (): void => setVersion(v => v + 1);
    model.changed.connect(onChange);
    return () => {
      model.changed.disconnect(onChange);
    };
  }, [model]);
  return version;
}

interface IViewProps {
  model: TfEnvModel;
  actions: IPanelActions;
  trans: TranslationBundle;
}

function PanelView(props: IViewProps): JSX.Element {
  const { model, actions, trans } = props;
  useModel(model);
  const [refreshes, setRefreshes] = React.useState(0);
  const state = model.state;
  const env = model.activeEnvironment;
  return (
    <div
      className="jp-tfenv-content"
      data-tfenv-state={state.state}
      data-tfenv-active-env={env?.id ?? ''}
    >
      <header className="jp-tfenv-header">
        <h2 className="jp-tfenv-title">{trans.__('TensorFlow environment')}</h2>
        <IconButton
          className="jp-tfenv-refresh"
          icon={refreshIcon}
          title={trans.__('Refresh')}
          onClick={() => {
            setRefreshes(n => n + 1);
            actions.refresh();
          }}
        />
      </header>
      <StateBanner {...props} state={state} />
      {model.provenance && model.provenance.status !== 'match' && (
        <ProvenanceNotice {...props} verdict={model.provenance} />
      )}
      {env && state.state !== 'no-extension' && (
        <KernelSection {...props} env={env} />
      )}
      {state.state !== 'no-extension' && <ResourcesSection {...props} />}
      {state.state !== 'no-extension' && <GpuSection {...props} env={env} />}
      {env && state.state !== 'no-extension' && (
        <CheckpointSection {...props} env={env} refreshes={refreshes} />
      )}
      {state.state !== 'no-extension' && <EnvironmentList {...props} />}
    </div>
  );
}

/**
 * The state's icon, title and sentence; the server's message below.
 */
function StateBanner(props: IViewProps & { state: IPanelState }): JSX.Element {
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

function RestartButton(props: IViewProps): JSX.Element {
  return (
    <button
      className="jp-mod-styled jp-mod-accept jp-tfenv-restart"
      onClick={() => props.actions.restart()}
    >
      {props.trans.__('Restart kernel')}
    </button>
  );
}

/**
 * A notebook that last ran on other bits.
 */
function ProvenanceNotice(
  props: IViewProps & { verdict: IProvenanceVerdict }
): JSX.Element {
  const { model, actions, trans, verdict } = props;
  const recorded = verdict.recorded;
  const candidate = verdict.candidate
    ? model.environment(verdict.candidate)
    : null;
  return (
    <section
      className="jp-tfenv-provenance"
      data-tfenv-provenance={verdict.status}
      role="alert"
    >
      <div className="jp-tfenv-state-head">
        <span className="jp-tfenv-state-dot" aria-hidden="true" />
        <span className="jp-tfenv-state-title">
          {trans.__('Recorded environment differs')}
        </span>
      </div>
      <p className="jp-tfenv-state-text">
        {provenanceText(verdict, model, trans)}
      </p>
      <dl className="jp-tfenv-facts">
        <dt>{trans.__('Recorded')}</dt>
        <dd className="jp-tfenv-mono">
          {recorded.environment} · {recorded.image}
          {recorded.digest ? ` · ${shortDigest(recorded.digest)}` : ''}
        </dd>
      </dl>
      <div className="jp-tfenv-state-actions">
        {candidate && candidate.id !== verdict.current && (
          <button
            className="jp-mod-styled jp-mod-accept jp-tfenv-provenance-switch"
            data-tfenv-env={candidate.id}
            onClick={() => actions.switchTo(candidate.id)}
          >
            {trans.__('Switch to %1', candidate.display_name)}
          </button>
        )}
        <button
          className="jp-mod-styled jp-mod-reject jp-tfenv-provenance-keep"
          onClick={() => actions.keepCurrent()}
        >
          {trans.__('Keep current')}
        </button>
      </div>
    </section>
  );
}

/**
 * The short sentence of a provenance notification.
 */
export function provenanceShortText(
  verdict: IProvenanceVerdict,
  trans: TranslationBundle
): string {
  const recorded = verdict.recorded.environment;
  switch (verdict.status) {
    case 'missing':
      return trans.__(
        'It last ran in "%1", which is not in the catalog.',
        recorded
      );
    case 'changed':
      return trans.__(
        'It last ran in "%1", which points at another image now.',
        recorded
      );
    case 'other-environment':
      return trans.__('It last ran in "%1", not in this kernel.', recorded);
    default:
      return '';
  }
}

/**
 * The sentence of a provenance notice (also used by the dialog).
 */
export function provenanceText(
  verdict: IProvenanceVerdict,
  model: { environment(id: string): IEnvironment | null },
  trans: TranslationBundle
): string {
  const recorded = verdict.recorded;
  const current = verdict.current
    ? (model.environment(verdict.current)?.display_name ?? verdict.current)
    : trans.__('no TensorFlow environment');
  const when = recorded.recorded
    ? new Date(recorded.recorded).toLocaleDateString()
    : '?';
  switch (verdict.status) {
    case 'missing':
      return trans.__(
        'This notebook last ran (%1) in the environment "%2" (%3), which is not in this server’s catalog. It now runs on %4.',
        when,
        recorded.environment,
        recorded.image,
        current
      );
    case 'changed':
      return trans.__(
        'This notebook last ran (%1) in "%2" on %3; that environment now points at other bits (%4). It now runs on %5.',
        when,
        recorded.environment,
        recorded.digest
          ? shortDigest(recorded.digest)
          : shortDigest(recorded.image_id) || recorded.image,
        verdict.differences.join(', '),
        current
      );
    case 'other-environment':
      return trans.__(
        'This notebook last ran (%1) in "%2"; it now runs on %3.',
        when,
        recorded.environment,
        current
      );
    default:
      return '';
  }
}

/**
 * Image, digest, lock, versions and the build's CUDA.
 */
function KernelSection(
  props: IViewProps & { env: IEnvironmentSummary }
): JSX.Element {
  const { model, trans, env } = props;
  const probe = model.activeProbe;
  const image = model.activeImage;
  const lock = lockInfo(env, image);
  const build = probe?.build ?? null;
  const loadingText = model.probing ? trans.__('probing…') : '—';
  const lockText: { [key: string]: string } = {
    'pinned-by-digest': trans.__('pinned by digest'),
    locked: trans.__('locked, matches'),
    mismatch: trans.__('lock mismatch'),
    unlocked: trans.__('not locked'),
    unknown: trans.__('unknown')
  };
  let buildText: string;
  if (!build) {
    buildText = loadingText;
  } else if (build.is_cuda_build) {
    buildText = [
      build.cuda_version ? trans.__('CUDA %1', build.cuda_version) : null,
      build.cudnn_version ? trans.__('cuDNN %1', build.cudnn_version) : null
    ]
      .filter(Boolean)
      .join(' · ');
    buildText = buildText || trans.__('CUDA');
  } else if (build.is_rocm_build) {
    buildText = trans.__('ROCm');
  } else {
    buildText = trans.__('CPU only (no CUDA)');
  }
  return (
    <section
      className="jp-tfenv-section jp-tfenv-kernel"
      data-tfenv-env={env.id}
    >
      <h3 className="jp-tfenv-section-title">
        <span className="jp-tfenv-env-name">{env.display_name}</span>
        <span
          className="jp-tfenv-badge"
          data-tfenv-kind={wantsGpu(env) ? 'gpu' : 'cpu'}
        >
          {env.gpu_label}
        </span>
      </h3>
      <dl className="jp-tfenv-facts">
        <dt>{trans.__('TensorFlow')}</dt>
        <dd className="jp-tfenv-tf-version">
          {probe?.tensorflow ?? env.tensorflow ?? loadingText}
        </dd>
        <dt>{trans.__('Keras')}</dt>
        <dd className="jp-tfenv-keras-version">
          {probe?.keras ?? loadingText}
        </dd>
        <dt>{trans.__('Python')}</dt>
        <dd className="jp-tfenv-python-version">
          {probe?.python ?? loadingText}
        </dd>
        <dt>{trans.__('Built for')}</dt>
        <dd className="jp-tfenv-build">{buildText}</dd>
        <dt>{trans.__('Image')}</dt>
        <dd className="jp-tfenv-image jp-tfenv-mono" title={env.image}>
          <Breakable text={env.image} />
        </dd>
        <dt>{trans.__('Digest')}</dt>
        <dd className="jp-tfenv-digest-row">
          {lock.digest ? (
            <>
              <code
                className="jp-tfenv-digest jp-tfenv-mono"
                title={lock.digest}
                data-tfenv-digest={lock.digest}
              >
                {shortDigest(lock.digest)}
              </code>
              <IconButton
                className="jp-tfenv-copy-digest"
                icon={copyIcon}
                title={trans.__('Copy the digest')}
                onClick={() => Clipboard.copyToSystem(lock.digest ?? '')}
              />
            </>
          ) : (
            <span
              className="jp-tfenv-digest jp-tfenv-muted"
              data-tfenv-digest=""
              title={image?.image_id ?? ''}
            >
              {image?.image_id
                ? trans.__('none (local image %1)', shortDigest(image.image_id))
                : trans.__('none')}
            </span>
          )}
        </dd>
        <dt>{trans.__('Lock')}</dt>
        <dd
          className="jp-tfenv-lock"
          data-tfenv-lock={lock.state}
          title={lock.locked ?? ''}
        >
          {lockText[lock.state]}
        </dd>
      </dl>
      {model.filesWarning && (
        <FilesWarning warning={model.filesWarning} trans={trans} />
      )}
      {model.probeError && (
        <pre className="jp-tfenv-message jp-tfenv-probe-error">
          {model.probeError}
        </pre>
      )}
      {!probe && !model.probing && image?.present !== false && (
        <div className="jp-tfenv-state-actions">
          <button
            className="jp-mod-styled jp-tfenv-probe"
            data-tfenv-env={env.id}
            title={trans.__(
              'Read the versions inside the image with a short-lived container (cached by image id)'
            )}
            onClick={() => void model.probe(env.id)}
          >
            {trans.__('Probe image')}
          </button>
        </div>
      )}
      {model.probing && (
        <p className="jp-tfenv-muted jp-tfenv-probing">
          <span className="jp-tfenv-spinner" aria-hidden="true" />{' '}
          {trans.__('Probing the image…')}
        </p>
      )}
    </section>
  );
}

/**
 * Why this kernel cannot write into folders and files made in JupyterLab: the
 * server and its kernels are different users (the server warns at start too).
 */
function FilesWarning(props: {
  warning: IFilesWarning;
  trans: TranslationBundle;
}): JSX.Element {
  const { warning, trans } = props;
  return (
    <div
      className="jp-tfenv-files-warning"
      role="note"
      data-tfenv-server-uid={warning.server_uid}
      data-tfenv-kernel-uid={warning.kernel_uid}
      title={warning.message}
    >
      <p>
        {trans.__(
          'Files made in JupyterLab (New Folder, uploads, new notebooks) belong to uid %1; this kernel runs as uid %2 and cannot write into them (PermissionError).',
          warning.server_uid,
          warning.kernel_uid
        )}
      </p>
      <p>
        {trans.__(
          "Run JupyterLab as uid %1, or share the notebook folder with the kernels' group (chmod 2775, server umask 002).",
          warning.kernel_uid
        )}
      </p>
    </div>
  );
}

/**
 * CPU and memory of the container against its limits.
 */
function ResourcesSection(props: IViewProps): JSX.Element | null {
  const { model, trans } = props;
  const live = model.kernelStatus?.live;
  if (!live || !live.running) {
    return null;
  }
  const cpus = live.cpu_limit ?? live.online_cpus ?? null;
  const cpuRatio =
    live.cpu_percent !== null && live.cpu_percent !== undefined && cpus
      ? ratio(live.cpu_percent, cpus * 100)
      : null;
  const cpuText =
    cpus === null
      ? formatPercent(live.cpu_percent)
      : live.cpu_limit
        ? trans.__(
            '%1 of a %2-CPU limit',
            formatPercent(live.cpu_percent),
            cpus
          )
        : trans._n(
            '%2 of %1 CPU (no limit)',
            '%2 of %1 CPUs (no limit)',
            cpus,
            formatPercent(live.cpu_percent)
          );
  const memRatio = ratio(live.memory_used, live.memory_limit);
  const memText = live.memory_limit
    ? trans.__(
        '%1 of %2',
        formatBytes(live.memory_used),
        formatBytes(live.memory_limit)
      )
    : trans.__('%1 (no limit)', formatBytes(live.memory_used));
  return (
    <section className="jp-tfenv-section jp-tfenv-resources">
      <h3 className="jp-tfenv-section-title">{trans.__('Container')}</h3>
      <Meter
        className="jp-tfenv-cpu"
        label={trans.__('CPU')}
        value={cpuRatio}
        text={cpuText}
      />
      <Meter
        className="jp-tfenv-memory"
        label={trans.__('Memory')}
        value={memRatio}
        text={memText}
      />
      {live.pids_current !== null && live.pids_current !== undefined && (
        <div className="jp-tfenv-line jp-tfenv-pids">
          <span className="jp-tfenv-line-label">{trans.__('Processes')}</span>
          <span>
            {live.pids_limit
              ? trans.__('%1 of %2', live.pids_current, live.pids_limit)
              : String(live.pids_current)}
          </span>
        </div>
      )}
    </section>
  );
}

/**
 * The host's GPUs, or why there are none.
 */
function GpuSection(
  props: IViewProps & { env: IEnvironmentSummary | null }
): JSX.Element {
  const { model, trans, env } = props;
  const overview = model.gpus;
  const view = gpuViewState(env, overview);
  const rows = gpuRows(overview, model.kernelStatus, model.activeProbe);
  let message: string | null = null;
  if (view === 'not-requested') {
    message = trans.__(
      '"%1" is a CPU environment: its kernel sees no GPU.',
      env?.display_name ?? ''
    );
  } else if (view === 'unknown') {
    message = model.gpusError ?? trans.__('Reading the host’s GPUs…');
  } else if (view === 'no-runtime') {
    message = overview?.runtime?.message ?? null;
  } else if (view !== 'ok') {
    message = overview?.message ?? null;
  }
  return (
    <section className="jp-tfenv-section jp-tfenv-gpus">
      <h3 className="jp-tfenv-section-title">
        {trans.__('GPUs')}
        {overview?.driver_version && (
          <span className="jp-tfenv-muted jp-tfenv-driver">
            {trans.__('driver %1', overview.driver_version)}
            {overview.cuda_driver_version
              ? ` · ${trans.__('CUDA %1', overview.cuda_driver_version)}`
              : ''}
          </span>
        )}
      </h3>
      <div className="jp-tfenv-gpu-state" data-tfenv-gpu-state={view}>
        {message && <p className="jp-tfenv-gpu-message">{message}</p>}
      </div>
      {rows.map(row => (
        <div
          key={row.index}
          className="jp-tfenv-gpu"
          data-tfenv-gpu-index={row.index}
          data-tfenv-held={row.held ? 'true' : 'false'}
        >
          <div className="jp-tfenv-gpu-head">
            <span className="jp-tfenv-gpu-name">
              {`#${row.index} ${row.name ?? trans.__('GPU')}`}
            </span>
            {row.computeCapability && (
              <span
                className="jp-tfenv-badge"
                title={trans.__('Compute capability')}
              >
                {trans.__('CC %1', row.computeCapability)}
              </span>
            )}
            {row.held && (
              <span
                className="jp-tfenv-badge jp-tfenv-held"
                title={trans.__('The active kernel holds memory on this GPU')}
              >
                {row.heldMemory
                  ? trans.__('this kernel · %1', formatBytes(row.heldMemory))
                  : trans.__('this kernel')}
              </span>
            )}
          </div>
          {row.error ? (
            <p className="jp-tfenv-gpu-message">{row.error}</p>
          ) : (
            <>
              <Meter
                className="jp-tfenv-gpu-memory"
                label={trans.__('Memory')}
                value={row.memoryRatio}
                text={trans.__(
                  '%1 of %2',
                  formatBytes(row.memoryUsed),
                  formatBytes(row.memoryTotal)
                )}
              />
              <Meter
                className="jp-tfenv-gpu-util"
                label={trans.__('Utilization')}
                value={
                  row.utilization === null ? null : ratio(row.utilization, 100)
                }
                text={
                  formatPercent(row.utilization) +
                  (row.temperature !== null ? ` · ${row.temperature} °C` : '')
                }
              />
            </>
          )}
        </div>
      ))}
    </section>
  );
}

/**
 * The catalog: switch and pull.
 */
function EnvironmentList(props: IViewProps): JSX.Element {
  const { model, trans } = props;
  const envs = sortEnvironments(model.environments ?? [], model.gpus);
  return (
    <section className="jp-tfenv-section jp-tfenv-envs">
      <h3 className="jp-tfenv-section-title">{trans.__('Environments')}</h3>
      {model.environments === null && !model.environmentsError && (
        <p className="jp-tfenv-muted">
          <span className="jp-tfenv-spinner" aria-hidden="true" />{' '}
          {trans.__('Loading the catalog…')}
        </p>
      )}
      {model.environmentsError && (
        <pre className="jp-tfenv-message">{model.environmentsError}</pre>
      )}
      {model.environments !== null && envs.length === 0 && (
        <p className="jp-tfenv-muted jp-tfenv-empty">
          {trans.__(
            'The catalog has no environments. Add some to the catalog file (c.TFEnvCatalog.catalog_files or $JUPYTER_TFENV_CATALOG).'
          )}
        </p>
      )}
      <ul className="jp-tfenv-env-list">
        {envs.map(env => (
          <EnvironmentRow key={env.id} {...props} env={env} />
        ))}
      </ul>
      {model.problems.length > 0 && (
        <div className="jp-tfenv-problems">
          <h4>{trans.__('Left out of the catalog')}</h4>
          <ul>
            {model.problems.map((p, i) => (
              <li key={i} className="jp-tfenv-problem">
                <span className="jp-tfenv-mono">
                  {[p.source, p.entry, p.field].filter(Boolean).join(': ')}
                </span>
                <span>{p.message}</span>
              </li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}

function EnvironmentRow(
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
              ? trans.__('not pulled')
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
      </div>
      <div className="jp-tfenv-env-image jp-tfenv-mono" title={env.image}>
        <Breakable text={env.image} />
      </div>
      {progress && <PullProgress {...props} progress={progress} env={env} />}
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
        {model.pullCapability.allowed && (
          <button
            className={`jp-mod-styled jp-tfenv-pull${present === false ? ' jp-mod-accept' : ''}`}
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
      {!model.pullCapability.allowed && present === false && (
        <div className="jp-tfenv-env-hint jp-tfenv-pull-by-admin">
          {adminPullText(model.pullCapability, env.id)}
        </div>
      )}
    </li>
  );
}

function PullProgress(
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

/**
 * A labelled bar with its text.
 */
function Meter(props: {
  className: string;
  label: string;
  value: number | null;
  text: string;
}): JSX.Element {
  const level =
    props.value === null
      ? 'unknown'
      : props.value >= 0.9
        ? 'high'
        : props.value >= 0.7
          ? 'medium'
          : 'low';
  return (
    <div
      className={`jp-tfenv-meter ${props.className}`}
      data-tfenv-level={level}
    >
      <div className="jp-tfenv-line">
        <span className="jp-tfenv-line-label">{props.label}</span>
        <span className="jp-tfenv-meter-text">{props.text}</span>
      </div>
      <div
        className="jp-tfenv-bar"
        role="meter"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={
          props.value === null ? undefined : Math.round(props.value * 100)
        }
      >
        <div
          className="jp-tfenv-bar-fill"
          style={{ width: `${Math.round((props.value ?? 0) * 100)}%` }}
        />
      </div>
    </div>
  );
}

function IconButton(props: {
  className: string;
  icon: LabIcon;
  title: string;
  onClick: () => void;
}): JSX.Element {
  return (
    <button
      className={`jp-tfenv-icon-button ${props.className}`}
      title={props.title}
      aria-label={props.title}
      onClick={props.onClick}
    >
      <props.icon.react tag="span" elementSize="normal" />
    </button>
  );
}

/**
 * The one-line code hint of the empty checkpoint list (code: not translated).
 */
/**
 * A long value (image reference, path, code) that wraps at its separators in
 * a narrow sidebar instead of being cut off or broken inside a word; its text
 * is the value unchanged.
 */
function Breakable(props: { text: string }): JSX.Element {
  return (
    <>
      {breakableParts(props.text).map((part, i) => (
        <React.Fragment key={i}>
          {i > 0 && <wbr />}
          {part}
        </React.Fragment>
      ))}
    </>
  );
}

const CHECKPOINT_HINT =
  "tf.train.CheckpointManager(ckpt, os.environ['TFENV_CHECKPOINT_DIR'] + '/run1', max_to_keep=3)";

interface ICheckpointFetch {
  env: string;
  listing: ICheckpointListing | null;
  error: string | null;
  loading: boolean;
}

/**
 * The active environment's checkpoints: fetched when the environment changes
 * and then at most once per model refresh interval (on the model's changes),
 * and after a delete.
 */
function CheckpointSection(
  props: IViewProps & { env: IEnvironmentSummary; refreshes: number }
): JSX.Element {
  const { model, trans, env, refreshes } = props;
  const version = useModel(model);
  const client = model.client;
  const [data, setData] = React.useState<ICheckpointFetch>({
    env: env.id,
    listing: null,
    error: null,
    loading: true
  });
  const [notice, setNotice] = React.useState<string | null>(null);
  const last = React.useRef<{ env: string; at: number; inFlight: boolean }>({
    env: '',
    at: 0,
    inFlight: false
  });
  const mounted = React.useRef(true);
  const section = React.useRef<HTMLElement>(null);
  React.useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);

  const fetchNow = React.useCallback(
    (envId: string): void => {
      if (!client.checkpoints) {
        setData({
          env: envId,
          listing: null,
          error: trans.__('This client cannot list checkpoints.'),
          loading: false
        });
        return;
      }
      last.current = { env: envId, at: Date.now(), inFlight: true };
      client.checkpoints(envId).then(
        listing => {
          if (last.current.env === envId) {
            last.current.inFlight = false;
          }
          if (mounted.current && last.current.env === envId) {
            setData({ env: envId, listing, error: null, loading: false });
          }
        },
        (error: unknown) => {
          if (last.current.env === envId) {
            last.current.inFlight = false;
          }
          if (mounted.current && last.current.env === envId) {
            setData({
              env: envId,
              listing: null,
              error: error instanceof Error ? error.message : String(error),
              loading: false
            });
          }
        }
      );
    },
    [client, trans]
  );

  React.useEffect(() => {
    const now = Date.now();
    const interval = model.refreshInterval;
    const envChanged = last.current.env !== env.id;
    if (envChanged) {
      setData({ env: env.id, listing: null, error: null, loading: true });
      setNotice(null);
      fetchNow(env.id);
      return;
    }
    // Never faster than the model polls (and not at all while it does not
    // poll), and not while the panel is hidden (the status bar keeps polling).
    const hidden =
      section.current !== null && section.current.offsetParent === null;
    const due =
      !hidden && interval > 0 && now - last.current.at >= interval * 0.9;
    if (due && !last.current.inFlight) {
      fetchNow(env.id);
    }
  }, [version, env.id, fetchNow, model]);

  // The refresh button: now.
  const seenRefreshes = React.useRef(refreshes);
  React.useEffect(() => {
    if (refreshes !== seenRefreshes.current) {
      seenRefreshes.current = refreshes;
      if (!last.current.inFlight) {
        fetchNow(env.id);
      }
    }
  }, [refreshes, env.id, fetchNow]);

  const remove = async (item: ICheckpointItem): Promise<void> => {
    const label = checkpointLabel(item);
    const result = await showDialog({
      title: trans.__('Delete checkpoint'),
      body: trans.__(
        'Delete "%1" of "%2" with all its files? This cannot be undone.',
        label,
        env.display_name
      ),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (!result.button.accept || !client.deleteCheckpoint) {
      return;
    }
    try {
      await client.deleteCheckpoint(env.id, item.name, item.etag);
      setNotice(null);
    } catch (error) {
      const status = error instanceof TfEnvApiError ? error.status : null;
      setNotice(
        status === 412
          ? trans.__(
              '"%1" changed since it was listed (a save may be running); nothing was deleted. Check the refreshed list and try again.',
              label
            )
          : trans.__(
              'Deleting "%1" failed: %2',
              label,
              error instanceof Error ? error.message : String(error)
            )
      );
    }
    fetchNow(env.id);
  };

  const listing = data.env === env.id ? data.listing : null;
  const containerPath = listing?.container_path || CONTAINER_CHECKPOINT_DIR;
  const items = listing ? sortCheckpoints(listing.checkpoints ?? []) : [];
  let body: JSX.Element;
  if (data.error && data.env === env.id) {
    body = (
      <div className="jp-tfenv-checkpoints-error" role="alert">
        <div>{trans.__('The checkpoints could not be listed:')}</div>
        <pre className="jp-tfenv-server-message">{data.error}</pre>
      </div>
    );
  } else if (!listing) {
    body = (
      <div className="jp-tfenv-checkpoints-loading">
        {trans.__('Reading the checkpoints…')}
      </div>
    );
  } else if (items.length === 0) {
    body = (
      <div className="jp-tfenv-checkpoints-empty">
        <div>
          {trans.__('No checkpoints yet — save to %1', '$TFENV_CHECKPOINT_DIR')}
        </div>
        <code className="jp-tfenv-checkpoints-hint" title={CHECKPOINT_HINT}>
          <Breakable text={CHECKPOINT_HINT} />
        </code>
      </div>
    );
  } else {
    body = (
      <ul className="jp-tfenv-checkpoint-list">
        {items.map(item => (
          <CheckpointRow
            key={item.name}
            item={item}
            trans={trans}
            onDelete={() => void remove(item)}
          />
        ))}
      </ul>
    );
  }
  return (
    <section
      ref={section}
      className="jp-tfenv-section jp-tfenv-checkpoints"
      data-tfenv-env={env.id}
    >
      <h3 className="jp-tfenv-section-title">{trans.__('Checkpoints')}</h3>
      <dl className="jp-tfenv-facts">
        <dt>{trans.__('In the container')}</dt>
        <dd>
          <code className="jp-tfenv-checkpoints-container-path">
            <Breakable text={containerPath} />
          </code>
        </dd>
        <dt>{trans.__('On the host')}</dt>
        <dd>
          <code
            className="jp-tfenv-checkpoints-location"
            title={listing?.location ?? undefined}
          >
            <Breakable text={listing?.location ?? '—'} />
          </code>
        </dd>
      </dl>
      {notice && (
        <div className="jp-tfenv-checkpoints-notice" role="alert">
          {notice}
        </div>
      )}
      {listing?.truncated && (
        <div className="jp-tfenv-checkpoints-truncated">
          {trans.__('The folder is too large: only part of it was read.')}
        </div>
      )}
      {body}
      <OtherCheckpointsGroup {...props} />
    </section>
  );
}

interface IOtherFetch {
  key: string;
  listings: Record<string, ICheckpointListing | string>;
}

/**
 * The user's other environments' checkpoints, as the active kernel has them:
 * read-only at `/tfenv/checkpoints-of/<environment>` (the kernel's
 * `checkpoints.others`), grouped by environment, with the line that restores
 * the latest of a TF set. Listed when the kernel or the set of environments
 * changes, and on the panel's refresh button.
 */
function OtherCheckpointsGroup(
  props: IViewProps & { env: IEnvironmentSummary; refreshes: number }
): JSX.Element | null {
  const { model, trans, refreshes } = props;
  useModel(model);
  const client = model.client;
  const kernel = model.kernelStatus;
  const others: IOtherCheckpoints[] = kernel?.checkpoints?.others ?? [];
  const key = `${kernel?.kernel_id ?? ''}:${others
    .map(o => o.environment)
    .join(',')}:${refreshes}`;
  const [data, setData] = React.useState<IOtherFetch>({
    key: '',
    listings: {}
  });
  React.useEffect(() => {
    if (!others.length || !client.checkpoints) {
      return;
    }
    let current = true;
    const envs = others.map(o => o.environment);
    void Promise.all(
      envs.map(id =>
        client.checkpoints!(id).then(
          listing => listing as ICheckpointListing | string,
          (error: unknown) =>
            error instanceof Error ? error.message : String(error)
        )
      )
    ).then(results => {
      if (current) {
        const listings: Record<string, ICheckpointListing | string> = {};
        envs.forEach((id, i) => (listings[id] = results[i]));
        setData({ key, listings });
      }
    });
    return () => {
      current = false;
    };
  }, [key, client]);
  if (!others.length) {
    return null;
  }
  const name = (id: string): string =>
    model.environments?.find(e => e.id === id)?.display_name ?? id;
  return (
    <div className="jp-tfenv-checkpoints-others">
      <h4 className="jp-tfenv-checkpoints-others-title">
        {trans.__('Other environments (read-only)')}
      </h4>
      {others.map(other => {
        const got = data.listings[other.environment];
        const items =
          got && typeof got !== 'string'
            ? sortCheckpoints(got.checkpoints ?? [])
            : [];
        const set = items.find(i => i.kind === 'tf_checkpoint_set');
        const folder = set?.path ?? '';
        const hint = set
          ? `tf.train.latest_checkpoint('${other.container_path}${
              folder ? `/${folder}` : ''
            }')`
          : null;
        return (
          <div
            key={other.environment}
            className="jp-tfenv-checkpoints-other"
            data-tfenv-env={other.environment}
          >
            <div className="jp-tfenv-checkpoints-other-head">
              <span className="jp-tfenv-checkpoints-other-name">
                {name(other.environment)}
              </span>
              <code
                className="jp-tfenv-checkpoints-other-path"
                title={other.host_path ?? other.volume ?? undefined}
              >
                <Breakable text={other.container_path} />
              </code>
            </div>
            {typeof got === 'string' ? (
              <div className="jp-tfenv-checkpoints-error" role="alert">
                <pre className="jp-tfenv-server-message">{got}</pre>
              </div>
            ) : !got ? (
              <div className="jp-tfenv-checkpoints-loading">
                {trans.__('Reading the checkpoints…')}
              </div>
            ) : items.length === 0 ? (
              <div className="jp-tfenv-checkpoints-empty">
                {trans.__('No checkpoints')}
              </div>
            ) : (
              <ul className="jp-tfenv-checkpoint-list">
                {items.map(item => (
                  <CheckpointRow key={item.name} item={item} trans={trans} />
                ))}
              </ul>
            )}
            {hint && (
              <code className="jp-tfenv-checkpoints-hint" title={hint}>
                <Breakable text={hint} />
              </code>
            )}
          </div>
        );
      })}
    </div>
  );
}

function CheckpointRow(props: {
  item: ICheckpointItem;
  trans: TranslationBundle;
  /**
   * Without it the row has no delete button (another environment's, read-only).
   */
  onDelete?: () => void;
}): JSX.Element {
  const { item, trans } = props;
  const step = checkpointStep(item);
  const incomplete = isIncomplete(item);
  const kept = item.checkpoints?.length ?? 0;
  return (
    <li
      className="jp-tfenv-checkpoint"
      data-tfenv-checkpoint={item.name}
      data-tfenv-kind={item.kind}
      data-tfenv-complete={incomplete ? 'false' : 'true'}
      data-tfenv-etag={item.etag}
    >
      <div className="jp-tfenv-checkpoint-head">
        <span className="jp-tfenv-badge jp-tfenv-checkpoint-kind">
          {checkpointKindLabel(item.kind)}
        </span>
        <span className="jp-tfenv-checkpoint-name" title={item.name}>
          <Breakable text={checkpointLabel(item)} />
        </span>
        {incomplete && (
          <span className="jp-tfenv-badge jp-tfenv-checkpoint-incomplete">
            {trans.__('incomplete')}
          </span>
        )}
        {props.onDelete && (
          <IconButton
            className="jp-tfenv-checkpoint-delete"
            icon={deleteIcon}
            title={trans.__('Delete…')}
            onClick={props.onDelete}
          />
        )}
      </div>
      <div className="jp-tfenv-checkpoint-meta">
        {step !== null && (
          <span className="jp-tfenv-checkpoint-step">
            {trans.__('step %1', step)}
          </span>
        )}
        {kept > 1 && (
          <span className="jp-tfenv-checkpoint-kept">
            {trans.__('%1 kept', kept)}
          </span>
        )}
        <span className="jp-tfenv-checkpoint-size">
          {formatBytes(item.size)}
        </span>
        <span className="jp-tfenv-checkpoint-time">
          {formatCheckpointTime(item.mtime)}
        </span>
      </div>
    </li>
  );
}
