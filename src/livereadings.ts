// Which live readings of a kernel are missing and why (issue 22: Kubernetes
// pods without the metrics API or a DCGM exporter): pure, unit-tested in
// __tests__/livereadings.spec.tsx.

import type { ILiveStatus, IMissingReading } from './api/kernels';

/**
 * `live.missing_readings` as the panel shows it: well-formed entries only, in
 * a fixed order (CPU and memory, then GPUs, then any other kind).
 */
export function missingReadings(
  live: ILiveStatus | null | undefined
): IMissingReading[] {
  const raw = (live as { missing_readings?: unknown } | null | undefined)
    ?.missing_readings;
  if (!Array.isArray(raw)) {
    return [];
  }
  const order = (kind: string): number =>
    kind === 'cpu_memory' ? 0 : kind === 'gpu' ? 1 : 2;
  return raw
    .filter(
      (entry): entry is IMissingReading =>
        typeof entry === 'object' &&
        entry !== null &&
        typeof entry.kind === 'string' &&
        typeof entry.message === 'string' &&
        entry.message !== ''
    )
    .map(entry => ({ kind: entry.kind, message: entry.message }))
    .sort((a, b) => order(a.kind) - order(b.kind));
}

/**
 * The label of a missing reading's line.
 */
export function missingLabel(
  kind: string,
  trans: { __: (text: string, ...args: unknown[]) => string }
): string {
  switch (kind) {
    case 'cpu_memory':
      return trans.__('CPU and memory not measured');
    case 'gpu':
      return trans.__('GPU use not measured');
    default:
      return trans.__('%1 not measured', kind);
  }
}
