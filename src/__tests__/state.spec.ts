import {
  adminPullText,
  deriveState,
  gpuProblem,
  gpuRows,
  gpuViewState,
  IStateInput,
  ITrans,
  lockInfo,
  sortEnvironments,
  statusLabel,
  statusParts,
  wantsGpu
} from '../state';
import type {
  IEnvironment,
  IGpuOverview,
  IImageStatus,
  IKernelStatus
} from '../api';

// Real payloads of a server with the demo catalog, on a host without GPU.
import environmentsReply from './fixtures/environments.json';
import gpusNoDriver from './fixtures/gpus-no-driver.json';
import imageTf220 from './fixtures/image-tf220.json';
import kernelTf220 from './fixtures/kernel-tf220.json';

const envs = environmentsReply.environments as IEnvironment[];
const env = (id: string): IEnvironment => envs.find(e => e.id === id)!;
const kernel = kernelTf220 as unknown as IKernelStatus;
const noDriver = gpusNoDriver as IGpuOverview;

const trans: ITrans = {
  __: (msgid, ...args) =>
    msgid.replace(/%(\d)/g, (_, i) => String(args[Number(i) - 1])),
  _n: (single, plural, n, ...args) =>
    (n === 1 ? single : plural)
      .replace(/%1/g, String(n))
      .replace(/%(\d)/g, (_, i) => String(args[Number(i) - 2]))
};

const GPU_OK: IGpuOverview = {
  state: 'ok',
  message: '2 GPUs',
  runtime: { nvidia: true },
  driver_version: '550.54.15',
  cuda_driver_version: '12.4',
  gpus: [
    {
      index: 0,
      name: 'NVIDIA A100-SXM4-40GB',
      memory_used: 30 * 2 ** 30,
      memory_total: 40 * 2 ** 30,
      utilization_gpu: 87,
      temperature: 64
    },
    {
      index: 1,
      name: 'NVIDIA A100-SXM4-40GB',
      memory_used: 0,
      memory_total: 40 * 2 ** 30,
      utilization_gpu: 0,
      temperature: 31
    }
  ]
};

/**
 * The input of a running, healthy CPU kernel.
 */
function running(overrides: Partial<IStateInput> = {}): IStateInput {
  return {
    extensionMissing: false,
    hasSession: true,
    kernelName: 'tfenv-tf-2.20-cpu',
    environment: env('tf-2.20-cpu'),
    kernelId: kernel.kernel_id,
    displayStatus: 'idle',
    starting: false,
    startError: null,
    kernelStatus: kernel,
    kernelError: null,
    probe: kernel.probe ?? null,
    probing: false,
    probeError: null,
    imagePresent: true,
    gpus: noDriver,
    ...overrides
  };
}

describe('wantsGpu', () => {
  it('reads the catalog gpus field', () => {
    expect(wantsGpu(env('tf-2.20-cpu'))).toBe(false);
    expect(wantsGpu(env('tf-2.20-gpu'))).toBe(true);
    expect(wantsGpu({ ...env('tf-2.20-cpu'), gpus: 2 })).toBe(true);
    expect(wantsGpu({ ...env('tf-2.20-cpu'), gpus: 0 })).toBe(false);
    expect(wantsGpu({ ...env('tf-2.20-cpu'), gpus: ['GPU-1'] })).toBe(true);
    expect(wantsGpu({ ...env('tf-2.20-cpu'), gpus: [] })).toBe(false);
    expect(wantsGpu({ ...env('tf-2.20-cpu'), gpus: null })).toBe(false);
    expect(wantsGpu(null)).toBe(false);
  });
});

describe('gpuProblem', () => {
  it('is the server message when the host has no usable GPU', () => {
    expect(gpuProblem(noDriver)).toMatch(/No NVIDIA driver/);
    expect(
      gpuProblem({
        ...GPU_OK,
        runtime: { nvidia: false, message: 'no runtime' }
      })
    ).toBe('no runtime');
    expect(gpuProblem(GPU_OK)).toBeNull();
    expect(gpuProblem(null)).toBeNull();
  });
});

describe('deriveState', () => {
  it('is ok for a running kernel with its status', () => {
    expect(deriveState(running())).toMatchObject({ state: 'ok', reason: 'ok' });
  });

  it('says when the server extension is missing', () => {
    expect(deriveState(running({ extensionMissing: true })).state).toBe(
      'no-extension'
    );
  });

  it('has no tfenv kernel without a session, kernel or environment', () => {
    expect(deriveState(running({ hasSession: false }))).toMatchObject({
      state: 'no-kernel',
      reason: 'no-session'
    });
    expect(deriveState(running({ kernelName: null }))).toMatchObject({
      state: 'no-kernel',
      reason: 'no-kernel-selected'
    });
    expect(
      deriveState(running({ kernelName: 'python3', environment: null }))
    ).toMatchObject({ state: 'no-kernel', reason: 'not-tfenv' });
    expect(
      deriveState(running({ kernelId: null, kernelStatus: null }))
    ).toMatchObject({ state: 'no-kernel', reason: 'not-started' });
  });

  it('is restarting while a restart replaces the container, whatever was read before', () => {
    // The last status read is the old container's, still "running".
    for (const displayStatus of ['restarting', 'autorestarting']) {
      expect(deriveState(running({ displayStatus }))).toMatchObject({
        state: 'loading',
        reason: 'restarting'
      });
    }
  });

  it('says the server does not answer rather than what it said before', () => {
    expect(
      deriveState(running({ serverUnreachable: 'Failed to fetch' }))
    ).toMatchObject({
      state: 'error',
      reason: 'server-unreachable',
      message: 'Failed to fetch'
    });
    expect(
      deriveState(
        running({ hasSession: false, serverUnreachable: 'Failed to fetch' })
      ).reason
    ).toBe('server-unreachable');
    expect(deriveState(running({ serverUnreachable: null })).state).toBe('ok');
  });

  it('says the engine does not answer, not that the kernel died, and clears with it', () => {
    const outage = {
      message:
        'Cannot reach the Docker engine at unix:///run/docker.sock: Connection refused. Start the Docker engine (`sudo systemctl start docker`, or Docker Desktop)…',
      since: Date.UTC(2026, 11, 7, 1, 30)
    };
    expect(deriveState(running({ engineUnreachable: outage }))).toEqual({
      state: 'engine-unreachable',
      reason: 'engine-unreachable',
      message: outage.message,
      detail: '2026-12-07T01:30:00.000Z'
    });
    // The last status read said "running"; the failed read is no death.
    expect(
      deriveState(
        running({
          engineUnreachable: outage,
          kernelError: outage.message,
          displayStatus: 'busy'
        })
      ).reason
    ).toBe('engine-unreachable');
    // Also with no kernel: nothing can start or be pulled meanwhile.
    expect(
      deriveState(
        running({
          kernelId: null,
          kernelStatus: null,
          engineUnreachable: outage
        })
      ).state
    ).toBe('engine-unreachable');
    // The server itself not answering says more.
    expect(
      deriveState(
        running({
          engineUnreachable: outage,
          serverUnreachable: 'Failed to fetch'
        })
      ).reason
    ).toBe('server-unreachable');
    expect(deriveState(running({ engineUnreachable: null })).state).toBe('ok');
  });

  it('is loading while starting, fetching or probing', () => {
    expect(
      deriveState(
        running({ kernelId: null, kernelStatus: null, starting: true })
      )
    ).toMatchObject({ state: 'loading', reason: 'starting' });
    expect(
      deriveState(
        running({
          kernelId: null,
          kernelStatus: null,
          displayStatus: 'initializing'
        })
      )
    ).toMatchObject({ state: 'loading', reason: 'initializing' });
    // Switching from a running kernel shows "starting" at once.
    expect(deriveState(running({ starting: true })).reason).toBe('starting');
    expect(deriveState(running({ kernelStatus: null })).reason).toBe(
      'fetching'
    );
    expect(
      deriveState(running({ kernelStatus: { ...kernel, kernel_id: 'old' } }))
        .reason
    ).toBe('fetching');
    expect(deriveState(running({ probe: null, probing: true }))).toMatchObject({
      state: 'loading',
      reason: 'probe'
    });
  });

  it('shows a failed start with the server message', () => {
    const startError = {
      kernelName: 'tfenv-broken',
      message: "The image tfenv-test/nopython:1 has no 'python3' …"
    };
    expect(
      deriveState(
        running({
          kernelName: 'tfenv-broken',
          environment: env('broken'),
          kernelId: null,
          kernelStatus: null,
          startError
        })
      )
    ).toEqual({
      state: 'error',
      reason: 'start-failed',
      message: startError.message,
      detail: null
    });
  });

  it('shows a failed GPU start as no-gpu, with the host reason', () => {
    const state = deriveState(
      running({
        kernelName: 'tfenv-tf-2.20-gpu',
        environment: env('tf-2.20-gpu'),
        kernelId: null,
        kernelStatus: null,
        startError: {
          kernelName: 'tfenv-tf-2.20-gpu',
          message: "Environment 'tf-2.20-gpu' asks for GPUs …"
        }
      })
    );
    expect(state.state).toBe('no-gpu');
    expect(state.reason).toBe('start-failed');
    expect(state.message).toMatch(/asks for GPUs/);
    expect(state.detail).toMatch(/No NVIDIA driver/);
  });

  it('says the image is not pulled', () => {
    expect(
      deriveState(
        running({ kernelId: null, kernelStatus: null, imagePresent: false })
      )
    ).toMatchObject({ state: 'not-pulled', message: null });
    expect(
      deriveState(
        running({
          kernelId: null,
          kernelStatus: null,
          imagePresent: false,
          startError: { kernelName: 'x', message: 'not on this engine' }
        })
      )
    ).toMatchObject({ state: 'not-pulled', message: 'not on this engine' });
  });

  it('says the kernel is dead', () => {
    expect(deriveState(running({ displayStatus: 'dead' })).state).toBe('dead');
    const live = kernel.live!;
    expect(
      deriveState(
        running({
          kernelStatus: {
            ...kernel,
            live: { ...live, status: 'exited', running: false, exit_code: 137 }
          }
        })
      )
    ).toMatchObject({
      state: 'dead',
      reason: 'container-exited',
      detail: '137'
    });
    expect(
      deriveState(
        running({
          kernelStatus: {
            ...kernel,
            live: {
              ...live,
              status: 'exited',
              running: false,
              oom_killed: true
            }
          }
        })
      ).reason
    ).toBe('oom-killed');
    expect(
      deriveState(
        running({
          kernelStatus: {
            ...kernel,
            live: { status: 'gone', running: false, message: 'gone away' }
          }
        })
      )
    ).toMatchObject({
      state: 'dead',
      reason: 'container-gone',
      message: 'gone away'
    });
  });

  it('shows a kernel status error', () => {
    expect(
      deriveState(running({ kernelStatus: null, kernelError: 'Docker down' }))
    ).toMatchObject({
      state: 'error',
      reason: 'status-failed',
      message: 'Docker down'
    });
  });

  it('says no GPU for a running GPU kernel on a host without one', () => {
    const gpuEnv = env('tf-2.20-gpu');
    expect(
      deriveState(running({ environment: gpuEnv, gpus: noDriver }))
    ).toMatchObject({ state: 'no-gpu', reason: 'no-gpu' });
    expect(
      deriveState(
        running({
          environment: gpuEnv,
          gpus: GPU_OK,
          probe: {
            ...kernel.probe,
            gpu_state: { state: 'not_visible', message: 'TF sees none' }
          }
        })
      )
    ).toMatchObject({ state: 'no-gpu', message: 'TF sees none' });
    expect(
      deriveState(
        running({
          environment: gpuEnv,
          gpus: GPU_OK,
          probe: { ...kernel.probe, gpu_state: { state: 'ok', message: '' } }
        })
      ).state
    ).toBe('ok');
  });

  it('is ok with a probe error, keeping the message', () => {
    expect(
      deriveState(running({ probe: null, probeError: 'probe failed' }))
    ).toMatchObject({
      state: 'ok',
      reason: 'probe-failed',
      message: 'probe failed'
    });
  });
});

describe('gpuViewState', () => {
  it('names the GPU situation', () => {
    expect(gpuViewState(env('tf-2.20-cpu'), noDriver)).toBe('not-requested');
    expect(gpuViewState(env('tf-2.20-gpu'), noDriver)).toBe('no-driver');
    expect(gpuViewState(null, noDriver)).toBe('no-driver');
    expect(gpuViewState(null, null)).toBe('unknown');
    expect(gpuViewState(env('tf-2.20-gpu'), GPU_OK)).toBe('ok');
    expect(
      gpuViewState(env('tf-2.20-gpu'), {
        ...GPU_OK,
        runtime: { nvidia: false, message: '' }
      })
    ).toBe('no-runtime');
    expect(
      gpuViewState(null, { state: 'no_nvml_library', message: '', gpus: [] })
    ).toBe('no-nvml-library');
  });
});

describe('gpuRows', () => {
  it('marks the GPUs the kernel holds and their compute capability', () => {
    const status: IKernelStatus = {
      ...kernel,
      live: {
        ...kernel.live!,
        gpu: {
          state: 'ok',
          message: '',
          devices: [
            { index: 1, name: 'NVIDIA A100-SXM4-40GB', used_memory: 2 ** 30 }
          ]
        }
      }
    };
    const rows = gpuRows(GPU_OK, status, {
      gpus: [
        {
          name: 'NVIDIA A100-SXM4-40GB',
          device: '/physical_device:GPU:0',
          compute_capability: '8.0'
        }
      ]
    });
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({
      index: 0,
      held: false,
      computeCapability: '8.0',
      memoryRatio: 0.75,
      utilization: 87
    });
    expect(rows[1]).toMatchObject({
      index: 1,
      held: true,
      heldMemory: 2 ** 30
    });
  });

  it('is empty without GPUs', () => {
    expect(gpuRows(noDriver, kernel, kernel.probe ?? null)).toEqual([]);
    expect(gpuRows(null, null, null)).toEqual([]);
  });
});

describe('lockInfo', () => {
  const image = imageTf220 as IImageStatus;
  it('reads an unlocked local image', () => {
    expect(lockInfo(env('tf-2.20-cpu'), image)).toEqual({
      state: 'unlocked',
      digest: null,
      locked: null
    });
  });

  it('reads locked, mismatched and digest-pinned images', () => {
    const d1 = 'sha256:' + '1'.repeat(64);
    const d2 = 'sha256:' + '2'.repeat(64);
    expect(
      lockInfo(env('tf-2.20-cpu'), {
        ...image,
        lock: { locked: d1, local: [d1], matches: true }
      })
    ).toEqual({ state: 'locked', digest: d1, locked: d1 });
    expect(
      lockInfo(env('tf-2.20-cpu'), {
        ...image,
        lock: { locked: d1, local: [d2], matches: false }
      })
    ).toEqual({ state: 'mismatch', digest: d2, locked: d1 });
    expect(lockInfo({ ...env('tf-2.20-cpu'), digest: d1 }, null)).toMatchObject(
      { state: 'pinned-by-digest', digest: d1 }
    );
    expect(
      lockInfo(env('tf-2.20-cpu'), {
        ...image,
        repo_digests: [`tensorflow/tensorflow@${d2}`]
      }).digest
    ).toBe(d2);
    expect(lockInfo(env('tf-2.20-cpu'), null).state).toBe('unknown');
  });
});

describe('status bar label', () => {
  it('reads "TF 2.20.0 · CPU" for a CPU kernel', () => {
    const parts = statusParts(env('tf-2.20-cpu'), kernel.probe ?? null, kernel);
    expect(statusLabel(parts, trans)).toBe('TF 2.20.0 · CPU');
  });

  it('reads "TF 2.20.0 · CUDA 12.x · 1 GPU" for a GPU kernel', () => {
    const probe = {
      tensorflow: '2.20.0',
      build: { cuda_version: '12.5.1', is_cuda_build: true },
      gpus: [{ device: 'GPU:0', name: 'A100' }]
    };
    const parts = statusParts(env('tf-2.20-gpu'), probe, null);
    expect(parts).toEqual({
      tensorflow: '2.20.0',
      gpu: true,
      cuda: 'CUDA 12.x',
      gpuCount: 1
    });
    expect(statusLabel(parts, trans)).toBe('TF 2.20.0 · CUDA 12.x · 1 GPU');
    expect(statusLabel({ ...parts, gpuCount: 2 }, trans)).toBe(
      'TF 2.20.0 · CUDA 12.x · 2 GPUs'
    );
    expect(statusLabel({ ...parts, gpuCount: 0 }, trans)).toBe(
      'TF 2.20.0 · CUDA 12.x · no GPU'
    );
  });

  it('counts the GPUs the kernel holds first', () => {
    const status: IKernelStatus = {
      ...kernel,
      live: {
        ...kernel.live!,
        gpu: {
          state: 'ok',
          message: '',
          devices: [{ index: 0 }, { index: 1 }] as any
        }
      }
    };
    expect(statusParts(env('tf-2.20-gpu'), { gpus: [] }, status).gpuCount).toBe(
      2
    );
  });

  it('falls back to the catalog before the probe', () => {
    expect(
      statusLabel(statusParts(env('tf-2.20-gpu'), null, null), trans)
    ).toBe('TF 2.20.0 · GPU');
    expect(
      statusLabel(
        statusParts({ ...env('tf-2.20-cpu'), tensorflow: null }, null, null),
        trans
      )
    ).toBe('TF ? · CPU');
  });
});

describe('sortEnvironments', () => {
  it('puts the newest TensorFlow first and unknown versions last', () => {
    const sorted = sortEnvironments([
      { ...env('tf-2.19-cpu') },
      { ...env('tf-2.20-cpu'), tensorflow: null, display_name: 'B' },
      { ...env('tf-2.20-gpu') },
      {
        ...env('tf-2.20-cpu'),
        id: 'x',
        display_name: 'A',
        tensorflow: '2.9.0'
      },
      { ...env('tf-2.20-cpu') }
    ]);
    expect(sorted.map(e => `${e.tensorflow}:${e.display_name}`)).toEqual([
      '2.20.0:TensorFlow 2.20.0 (all GPUs)',
      '2.20.0:TensorFlow 2.20.0 (CPU)',
      '2.19.0:TensorFlow 2.19.0 (CPU)',
      '2.9.0:A',
      'null:B'
    ]);
  });
});

describe('adminPullText', () => {
  it("names the environment in the server's message", () => {
    expect(
      adminPullText(
        {
          allowed: false,
          message:
            'ask them to run `jupyter tfenv pull <environment>` on the host.'
        },
        'tf220'
      )
    ).toBe('ask them to run `jupyter tfenv pull tf220` on the host.');
  });

  it('has a message of its own when the server sends none', () => {
    expect(adminPullText({ allowed: false, message: null }, 'tf219')).toContain(
      'tf219'
    );
  });
});
