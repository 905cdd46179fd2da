import { Clipboard } from '@jupyterlab/apputils';
import { copyIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { IEnvironmentSummary } from '../api';
import { compatDetail } from '../compat';
import { encryptionNote } from '../encryption';
import { shortDigest } from '../format';
import { lockInfo, wantsGpu } from '../state';

import { IconButton, Breakable } from './common';
import { FilesWarning } from './FilesWarning';
import type { IViewProps } from './types';

/**
 * Image, digest, lock, versions and the build's CUDA.
 */
export function KernelSection(
  props: IViewProps & { env: IEnvironmentSummary }
): JSX.Element {
  const { model, trans, env } = props;
  const probe = model.activeProbe;
  const image = model.activeImage;
  const lock = lockInfo(env, image);
  const compat = compatDetail(model.environment(env.id) ?? env, trans);
  const build = probe?.build ?? null;
  const loadingText = model.probing ? trans.__('probing…') : '—';
  const note =
    model.kernelStatus?.environment?.id === env.id
      ? encryptionNote(model.kernelStatus)
      : null;
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
      data-tfenv-stale={
        model.state.state === 'engine-unreachable' ? 'true' : undefined
      }
    >
      <h3 className="jp-tfenv-section-title">
        <span className="jp-tfenv-env-name">{env.display_name}</span>
        <span
          className="jp-tfenv-badge"
          data-tfenv-kind={wantsGpu(env) ? 'gpu' : 'cpu'}
        >
          {env.gpu_label}
        </span>
        {model.kernelStatus?.environment?.id === env.id &&
          model.kernelStatus.origin && (
            <span
              className="jp-tfenv-badge jp-tfenv-origin"
              data-tfenv-origin={model.kernelStatus.origin}
              title={
                model.kernelStatus.origin === 'adopted'
                  ? trans.__(
                      'Started by an earlier server and kept running across its restart: variables and running cells went on'
                    )
                  : trans.__(
                      'Started ahead of time by the warm pool, then given this notebook'
                    )
              }
            >
              {model.kernelStatus.origin === 'adopted'
                ? trans.__('adopted')
                : trans.__('from pool')}
            </span>
          )}
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
        {compat && (
          <>
            <dt>{trans.__('GPU compatibility')}</dt>
            <dd
              className="jp-tfenv-compat"
              data-tfenv-compat={compat.state}
              title={compat.message}
            >
              <span className="jp-tfenv-compat-label">{compat.label}</span>
              {compat.state !== 'ok' && compat.message && (
                <span className="jp-tfenv-compat-message">
                  {compat.message}
                </span>
              )}
            </dd>
          </>
        )}
      </dl>
      {model.kernelStatus?.environment?.id === env.id &&
        model.kernelStatus.last_restart && (
          <p
            className="jp-tfenv-message jp-tfenv-last-restart"
            data-tfenv-restart-reason={model.kernelStatus.last_restart.reason}
            data-tfenv-restart-at={model.kernelStatus.last_restart.at}
            title={trans.__('Why this kernel was restarted')}
          >
            {model.kernelStatus.last_restart.message}
          </p>
        )}
      {note && (
        <p
          className={
            note.state === 'clear'
              ? 'jp-tfenv-message jp-tfenv-encryption'
              : 'jp-tfenv-muted jp-tfenv-encryption'
          }
          data-tfenv-encryption={note.state}
          title={trans.__(
            "How the kernel's ZeroMQ traffic crosses the cluster network"
          )}
        >
          {note.state === 'clear'
            ? trans.__('Not encrypted: %1', note.detail)
            : trans.__('Kernel traffic encrypted (CurveZMQ)')}
        </p>
      )}
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
