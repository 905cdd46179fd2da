/**
 * Who holds which GPU, from `GET /tfenv/gpus`'s `allocation`: one row per
 * device kernels may get, its holders as "this kernel", "your kernel" or
 * "another user's kernel". Pure: jest tests it directly.
 */

import type { IGpuAllocation, IGpuOverview, IKernelStatus } from './api';

/**
 * Whose a holder is, seen from the notebook's kernel.
 */
export type HolderKind = 'this' | 'mine' | 'other';

export interface IHolderView {
  kind: HolderKind;
  /**
   * The holder's kernel id (null for another user's kernel).
   */
  kernelId: string | null;
  environment: string | null;
  /**
   * `exclusive`, or `shared:N`.
   */
  sharing: string;
}

export interface IHolderRow {
  /**
   * The id Docker is given for the device.
   */
  id: string;
  /**
   * The device as users name it: its index, else its id (a UUID or a MIG
   * device).
   */
  label: string;
  name: string | null;
  holders: IHolderView[];
}

/**
 * The device ids the kernel's container was given (its Docker device
 * requests).
 */
export function requestedDevices(kernel: IKernelStatus | null): Set<string> {
  const ids = new Set<string>();
  for (const request of (kernel?.live?.gpu?.requested ?? []) as any[]) {
    for (const id of Array.isArray(request?.device_ids)
      ? request.device_ids
      : []) {
      ids.add(String(id));
    }
  }
  return ids;
}

function deviceLabel(device: IGpuAllocation): string {
  if (typeof device.index === 'number' && !device.mig) {
    return `#${device.index}`;
  }
  return device.id;
}

/**
 * One row per allocatable device with its holders. "this" is the
 * notebook's kernel: by its kernel id, or (a kernel taken from the warm pool
 * keeps its container's id) the one holder of the user's own on a device
 * the kernel's container was given.
 */
export function holderRows(
  overview: IGpuOverview | null,
  kernel: IKernelStatus | null
): IHolderRow[] {
  const devices = overview?.allocation ?? [];
  const given = requestedDevices(kernel);
  return devices.map(device => {
    const holders = Array.isArray(device.holders) ? device.holders : [];
    const own = holders.filter(h => !!h.kernel_id);
    const byId = kernel
      ? own.find(h => h.kernel_id === kernel.kernel_id)
      : undefined;
    const onGiven =
      !byId &&
      own.length === 1 &&
      (given.has(device.id) ||
        (typeof device.index === 'number' && given.has(String(device.index))) ||
        (!!device.uuid && given.has(device.uuid)))
        ? own[0]
        : undefined;
    const current = byId ?? onGiven;
    return {
      id: device.id,
      label: deviceLabel(device),
      name: device.name ?? null,
      holders: holders.map(h => ({
        kind: h === current ? 'this' : h.kernel_id ? 'mine' : 'other',
        kernelId: h.kernel_id ?? null,
        environment: h.environment ?? null,
        sharing: h.sharing ?? 'exclusive'
      }))
    };
  });
}
