import type { IGpuOverview, IKernelStatus } from '../api';
import { holderRows, requestedDevices } from '../gpuholders';

/**
 * A `GET /tfenv/gpus` reply shaped as the server gives it, four devices from
 * the admin's `gpu_devices` (no NVML): the user's kernel k1 on #0, another
 * user's kernel on #1, #2 shared by the user's k2 and someone else's.
 */
function overview(): IGpuOverview {
  return {
    state: 'no_nvml_library',
    message: 'NVML is not installed',
    gpus: [],
    allocation: [
      {
        id: '0',
        index: 0,
        uuid: null,
        holders: [
          {
            kernel_id: 'k1',
            owner: 'ann',
            environment: 'tf',
            sharing: 'exclusive'
          }
        ]
      },
      {
        id: '1',
        index: 1,
        holders: [{ kernel_id: null, owner: null, sharing: 'exclusive' }]
      },
      {
        id: '2',
        index: 2,
        holders: [
          {
            kernel_id: 'k2',
            owner: 'ann',
            environment: 'tf',
            sharing: 'shared:2'
          },
          { kernel_id: null, owner: null, sharing: 'shared:2' }
        ]
      },
      { id: 'MIG-4f1c', index: 3, mig: true, holders: [] }
    ]
  };
}

function kernel(id: string, deviceIds: string[] = []): IKernelStatus {
  return {
    kernel_id: id,
    environment: { id: 'tf', display_name: 'TF' } as any,
    live: {
      status: 'running',
      running: true,
      gpu: {
        requested: [
          { count: null, device_ids: deviceIds, capabilities: [['gpu']] }
        ],
        state: null,
        message: null,
        devices: []
      }
    }
  };
}

describe('holderRows', () => {
  it('names the notebook kernel, the user’s others and other users’', () => {
    const rows = holderRows(overview(), kernel('k2', ['2']));
    expect(rows.map(r => r.label)).toEqual(['#0', '#1', '#2', 'MIG-4f1c']);
    expect(rows[0].holders.map(h => h.kind)).toEqual(['mine']);
    expect(rows[1].holders).toEqual([
      { kind: 'other', kernelId: null, environment: null, sharing: 'exclusive' }
    ]);
    expect(rows[2].holders.map(h => [h.kind, h.sharing])).toEqual([
      ['this', 'shared:2'],
      ['other', 'shared:2']
    ]);
    expect(rows[3].holders).toEqual([]);
  });

  it('finds a pool kernel by the devices its container was given', () => {
    // A kernel taken from the warm pool: its container's labels carry the
    // pool kernel's id, not the notebook kernel's.
    const rows = holderRows(overview(), kernel('notebook-kernel', ['0']));
    expect(rows[0].holders.map(h => h.kind)).toEqual(['this']);
    expect(rows[2].holders.map(h => h.kind)).toEqual(['mine', 'other']);
  });

  it('has no rows without an allocation, and no "this" without a kernel', () => {
    expect(holderRows(null, null)).toEqual([]);
    expect(holderRows({ state: 'ok', message: '', gpus: [] }, null)).toEqual(
      []
    );
    const rows = holderRows(overview(), null);
    expect(rows.flatMap(r => r.holders).some(h => h.kind === 'this')).toBe(
      false
    );
  });
});

describe('requestedDevices', () => {
  it('collects the device ids of every device request', () => {
    expect([...requestedDevices(kernel('k', ['1', 'GPU-abc']))]).toEqual([
      '1',
      'GPU-abc'
    ]);
    expect(requestedDevices(null).size).toBe(0);
  });
});
