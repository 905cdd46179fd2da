import * as React from 'react';

import { formatBytes, formatPercent, ratio } from '../format';
import { missingLabel, missingReadings } from '../livereadings';

import { Meter } from './common';
import type { IViewProps } from './types';

/**
 * CPU and memory of the container against its limits.
 */
export function ResourcesSection(props: IViewProps): JSX.Element | null {
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
      {missingReadings(live).map(missing => (
        <div
          key={missing.kind}
          className="jp-tfenv-line jp-tfenv-missing-reading"
          data-tfenv-missing={missing.kind}
        >
          <span className="jp-tfenv-line-label">
            {missingLabel(missing.kind, trans)}
          </span>
          <span>{missing.message}</span>
        </div>
      ))}
    </section>
  );
}
