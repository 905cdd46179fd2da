/* eslint-disable jupyter/no-untranslated-string -- JupyterLab's own group labels, as its dialog passes them */
import { arrangeKernelOptions, IKernelOptions } from '../kernelpicker';
import { environmentAvailability, ITrans, sortEnvironments } from '../state';
import type { IEnvironment, IGpuOverview } from '../api';

// Real payloads of a server with the demo catalog, on a host without GPU.
import environmentsReply from './fixtures/environments.json';
import gpusNoDriver from './fixtures/gpus-no-driver.json';

const envs = environmentsReply.environments as IEnvironment[];
const noDriver = gpusNoDriver as IGpuOverview;
const trans: ITrans = {
  __: (msgid, ...args) =>
    msgid.replace(/%(\d)/g, (_, i) => String(args[Number(i) - 1])),
  _n: (single, plural, n) => (n === 1 ? single : plural)
};

/**
 * What JupyterLab's `SessionContextDialogs.kernelOptions` gives for a new
 * notebook (no language, no kernel yet): every kernelspec by display name,
 * nothing selected.
 */
function jupyterLabOptions(): IKernelOptions {
  const specs = [
    { name: 'python3', display_name: 'Python 3 (ipykernel)' },
    ...envs.map(env => ({
      name: env.kernel_name,
      display_name: env.display_name
    }))
  ].sort((a, b) => a.display_name.localeCompare(b.display_name));
  return {
    disabled: false,
    groups: [
      {
        label: 'Start Kernel',
        options: specs.map(spec => ({
          text: spec.display_name,
          value: JSON.stringify({ name: spec.name })
        }))
      },
      {
        label: 'Use No Kernel',
        options: [{ text: 'No Kernel', value: 'null' }]
      },
      { label: 'Connect to Existing Kernel', options: [] }
    ]
  };
}

const texts = (options: IKernelOptions, group: number): string[] =>
  options.groups[group].options.map(o => o.text);
const selected = (options: IKernelOptions): string[] =>
  options.groups
    .map(g => g.options.filter(o => o.selected).map(o => o.text))
    .reduce((a, b) => a.concat(b), []);

describe('environmentAvailability', () => {
  const env = (id: string): IEnvironment => envs.find(e => e.id === id)!;

  it('says why a GPU environment cannot run on a host without a driver', () => {
    expect(environmentAvailability(env('tf-2.20-gpu'), noDriver)).toEqual({
      available: false,
      reason: 'no-driver',
      message: noDriver.message
    });
    // A CPU environment runs; before the GPU check answered, so does the GPU one.
    expect(
      environmentAvailability(env('tf-2.20-cpu'), noDriver).available
    ).toBe(true);
    expect(environmentAvailability(env('tf-2.20-gpu'), null).available).toBe(
      true
    );
  });

  it('names the missing NVIDIA runtime when the driver is there', () => {
    const gpus = { ...noDriver, state: 'ok', message: '' };
    expect(environmentAvailability(env('tf-2.20-gpu'), gpus)).toEqual({
      available: false,
      reason: 'no-runtime',
      message: noDriver.runtime!.message
    });
  });

  it('says an image that is not on the engine is not pulled', () => {
    expect(environmentAvailability(env('missing'), null)).toEqual({
      available: false,
      reason: 'not-pulled',
      message: null
    });
  });
});

describe('sortEnvironments with the GPU check', () => {
  it('puts the environments that can run here first', () => {
    expect(sortEnvironments(envs, noDriver).map(e => e.id)).toEqual([
      'tf-2.20-cpu',
      'tf-2.19-cpu',
      'broken',
      'py-registry',
      'tf-2.20-gpu',
      'missing'
    ]);
  });
});

describe('arrangeKernelOptions', () => {
  it('preselects the server default for a new notebook, environments first in the panel order', () => {
    const arranged = arrangeKernelOptions(jupyterLabOptions(), {
      environments: envs,
      gpus: noDriver,
      defaultKernel: 'tfenv-tf-2.20-cpu',
      trans
    });
    expect(texts(arranged, 0)).toEqual([
      'TensorFlow 2.20.0 (CPU)',
      'TensorFlow 2.19.0 (CPU)',
      'Broken (no python)',
      'Python 3.11 (from the local registry)',
      'Python 3 (ipykernel)'
    ]);
    expect(arranged.groups[1]).toMatchObject({
      label: 'Cannot run on this server',
      kind: 'unavailable'
    });
    expect(texts(arranged, 1)).toEqual([
      'TensorFlow 2.20.0 (all GPUs) — unavailable: no NVIDIA driver',
      'Missing in registry — unavailable: image not pulled'
    ]);
    expect(arranged.groups[1].options[0].title).toBe(noDriver.message);
    expect(arranged.groups[1].options[0]).toMatchObject({
      environment: 'tf-2.20-gpu',
      available: false
    });
    expect(arranged.groups.slice(2).map(g => g.label)).toEqual([
      'Use No Kernel',
      'Connect to Existing Kernel'
    ]);
    expect(selected(arranged)).toEqual(['TensorFlow 2.20.0 (CPU)']);
  });

  it('moves the selection off an environment that cannot run here', () => {
    const options = jupyterLabOptions();
    options.groups[0].options.find(
      o => o.text === 'TensorFlow 2.20.0 (all GPUs)'
    )!.selected = true;
    const arranged = arrangeKernelOptions(options, {
      environments: envs,
      gpus: noDriver,
      defaultKernel: 'python3',
      trans
    });
    expect(selected(arranged)).toEqual(['Python 3 (ipykernel)']);
    const noDefault = arrangeKernelOptions(options, {
      environments: envs,
      gpus: noDriver,
      defaultKernel: 'tfenv-tf-2.20-gpu',
      trans
    });
    expect(selected(noDefault)).toEqual(['TensorFlow 2.20.0 (CPU)']);
  });

  it('keeps a selection that can run', () => {
    const options = jupyterLabOptions();
    options.groups[0].options.find(
      o => o.text === 'TensorFlow 2.19.0 (CPU)'
    )!.selected = true;
    const arranged = arrangeKernelOptions(options, {
      environments: envs,
      gpus: noDriver,
      defaultKernel: 'tfenv-tf-2.20-cpu',
      trans
    });
    expect(selected(arranged)).toEqual(['TensorFlow 2.19.0 (CPU)']);
  });
});
