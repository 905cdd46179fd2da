import * as React from 'react';

import type { IEnvironmentSummary } from '../api';
import { formatBytes, formatPercent, ratio } from '../format';
import { holderRows, IHolderView } from '../gpuholders';
import { gpuRows, gpuViewState } from '../state';

import { Meter } from './common';
import type { IViewProps } from './types';

/**
 * The host's GPUs, or why there are none.
 */
export function GpuSection(
  props: IViewProps & { env: IEnvironmentSummary | null }
): JSX.Element {
  const { model, trans, env } = props;
  const overview = model.gpus;
  const view = gpuViewState(env, overview);
  const rows = gpuRows(overview, model.kernelStatus, model.activeProbe);
  const holders = holderRows(overview, model.kernelStatus);
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
      {holders.length > 0 && (
        <div className="jp-tfenv-gpu-holders">
          <h4 className="jp-tfenv-gpu-holders-title">
            {trans.__('Who holds the GPUs')}
          </h4>
          <ul>
            {holders.map(row => (
              <li
                key={row.id}
                data-tfenv-device={row.id}
                data-tfenv-free={row.holders.length === 0 ? 'true' : 'false'}
                title={row.name ?? row.id}
              >
                <span className="jp-tfenv-gpu-name">{row.label}</span>{' '}
                {row.holders.length === 0 ? (
                  <span className="jp-tfenv-muted">{trans.__('free')}</span>
                ) : (
                  row.holders.map((h, i) => (
                    <span
                      key={i}
                      className="jp-tfenv-holder"
                      data-tfenv-holder={h.kind}
                    >
                      {holderText(h, trans)}
                    </span>
                  ))
                )}
              </li>
            ))}
          </ul>
        </div>
      )}
      {overview?.allocation_error && (
        <p className="jp-tfenv-gpu-message">{overview.allocation_error}</p>
      )}
    </section>
  );
}

/**
 * One holder of a device, as its viewer may know it: other users' kernels
 * are anonymous.
 */
function holderText(h: IHolderView, trans: IViewProps['trans']): string {
  const shared = /^shared:(\d+)$/.exec(h.sharing);
  const how = shared ? ` · ${trans.__('shared, %1 per GPU', shared[1])}` : '';
  if (h.kind === 'other') {
    return trans.__('another user’s kernel') + how;
  }
  const env = h.environment ? ` (${h.environment})` : '';
  if (h.kind === 'this') {
    return trans.__('this kernel') + env + how;
  }
  return trans.__('your kernel %1', (h.kernelId ?? '').slice(0, 8)) + env + how;
}
