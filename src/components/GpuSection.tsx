import * as React from 'react';

import type { IEnvironmentSummary } from '../api';
import { formatBytes, formatPercent, ratio } from '../format';
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
