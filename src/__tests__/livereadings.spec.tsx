import * as React from 'react';

import { ResourcesSection } from '../components/ResourcesSection';
import { missingLabel, missingReadings } from '../livereadings';
import { trans } from './fixtures/trans';

/**
 * The translator's bundle as the panel gets it, without JupyterLab.
 */
const NO_METRICS =
  'the cluster does not serve the metrics API (metrics.k8s.io): install metrics-server';
const NO_EXPORTER =
  'no DCGM exporter is configured: set c.TFEnvBroker.kubernetes_dcgm_exporter_url';

/**
 * A kernel pod's live status as the broker answers it without metrics-server
 * and without a DCGM exporter.
 */
const POD_LIVE = {
  status: 'running',
  running: true,
  cpu_percent: null,
  cpu_limit: 2,
  memory_used: null,
  memory_limit: 4 * 2 ** 30,
  missing_readings: [
    { kind: 'gpu', message: NO_EXPORTER },
    { kind: 'cpu_memory', message: NO_METRICS }
  ]
};

/**
 * Every element of a rendered tree whose props hold `data-tfenv-missing`.
 */
function missingLines(node: React.ReactNode): React.ReactElement[] {
  if (node === null || node === undefined || typeof node !== 'object') {
    return [];
  }
  if (Array.isArray(node)) {
    return node.flatMap(missingLines);
  }
  const element = node as React.ReactElement<{ [key: string]: any }>;
  const own = element.props?.['data-tfenv-missing'] ? [element] : [];
  return [...own, ...missingLines(element.props?.children)];
}

function textOf(node: React.ReactNode): string {
  if (node === null || node === undefined || typeof node === 'boolean') {
    return '';
  }
  if (typeof node === 'string' || typeof node === 'number') {
    return String(node);
  }
  if (Array.isArray(node)) {
    return node.map(textOf).join('');
  }
  const element = node as React.ReactElement<{ children?: React.ReactNode }>;
  return textOf(element.props?.children);
}

describe('missingReadings', () => {
  it('orders CPU and memory before GPUs', () => {
    expect(missingReadings(POD_LIVE as any)).toEqual([
      { kind: 'cpu_memory', message: NO_METRICS },
      { kind: 'gpu', message: NO_EXPORTER }
    ]);
  });

  it('is empty for Docker answers, absent or malformed fields', () => {
    expect(missingReadings(null)).toEqual([]);
    expect(missingReadings(undefined)).toEqual([]);
    expect(missingReadings({ status: 'running', running: true })).toEqual([]);
    expect(
      missingReadings({
        status: 'running',
        running: true,
        missing_readings: 'unavailable' as any
      })
    ).toEqual([]);
    expect(
      missingReadings({
        status: 'running',
        running: true,
        missing_readings: [
          null,
          { kind: 'gpu' },
          { kind: 'gpu', message: '' },
          { kind: 'other', message: 'why' }
        ] as any
      })
    ).toEqual([{ kind: 'other', message: 'why' }]);
  });

  it('labels each kind', () => {
    expect(missingLabel('cpu_memory', trans)).toBe(
      'CPU and memory not measured'
    );
    expect(missingLabel('gpu', trans)).toBe('GPU use not measured');
    expect(missingLabel('disk', trans)).toBe('disk not measured');
  });
});

describe('ResourcesSection', () => {
  it('says which readings are missing and why, below the limits', () => {
    const element = ResourcesSection({
      model: { kernelStatus: { live: POD_LIVE } },
      trans
    } as any);
    const lines = missingLines(element);
    expect(lines.map(l => l.props['data-tfenv-missing'])).toEqual([
      'cpu_memory',
      'gpu'
    ]);
    expect(textOf(lines[0])).toBe('CPU and memory not measured' + NO_METRICS);
    expect(textOf(lines[1])).toBe('GPU use not measured' + NO_EXPORTER);
  });

  it('shows no such line where every reading came', () => {
    const element = ResourcesSection({
      model: {
        kernelStatus: {
          live: {
            ...POD_LIVE,
            cpu_percent: 150.3,
            memory_used: 2 ** 29,
            missing_readings: []
          }
        }
      },
      trans
    } as any);
    expect(element).not.toBeNull();
    expect(missingLines(element)).toEqual([]);
  });
});
