/* eslint-disable jupyter/no-untranslated-string -- JupyterLab's own group labels, as its dialog passes them */
import {
  compatDetail,
  compatLabel,
  compatMark,
  compatTitle,
  ICompatEnvironment
} from '../compat';
import { arrangeKernelOptions, IKernelOptions } from '../kernelpicker';
import { ITrans, sortEnvironments } from '../state';
import type { ICompatibility, IEnvironment } from '../api';

// Real payloads of a server with the demo catalog (no `compatibility` field:
// a server older than it).
import environmentsReply from './fixtures/environments.json';

const envs = environmentsReply.environments as IEnvironment[];
const trans: ITrans = {
  __: (msgid, ...args) =>
    msgid.replace(/%(\d)/g, (_, i) => String(args[Number(i) - 1])),
  _n: (single, plural, n) => (n === 1 ? single : plural)
};
const env = (id: string): IEnvironment => envs.find(e => e.id === id)!;
const withCompat = (
  id: string,
  compatibility: ICompatibility | null | undefined
): IEnvironment => ({ ...env(id), compatibility });

// What the server says for an image built for a newer CUDA than the driver.
const INCOMPATIBLE: ICompatibility = {
  state: 'incompatible',
  message:
    'The image is built for CUDA 12.5 but the NVIDIA driver supports CUDA 12.2 at most: update the driver to 555 or later, or use an image built for CUDA 12.2'
};
const UNKNOWN: ICompatibility = {
  state: 'unknown',
  message: 'No NVML on this host: probe the image to check'
};

describe('compatMark', () => {
  it('gives no mark without the field (older servers)', () => {
    for (const e of envs) {
      expect(compatMark(e, trans)).toBeNull();
      expect(compatDetail(e, trans)).toBeNull();
    }
    expect(compatMark(withCompat('tf-2.20-gpu', null), trans)).toBeNull();
    expect(compatMark(null, trans)).toBeNull();
  });

  it('marks an incompatible environment with the server message', () => {
    expect(compatMark(withCompat('tf-2.20-gpu', INCOMPATIBLE), trans)).toEqual({
      state: 'incompatible',
      label: 'GPU incompatible',
      message: INCOMPATIBLE.message
    });
  });

  it('says what to do when the server has no message', () => {
    const mark = compatMark(
      withCompat('tf-2.20-gpu', { state: 'incompatible', message: '  ' }),
      trans
    );
    expect(mark?.state).toBe('incompatible');
    expect(mark?.message).toMatch(/another image or a newer NVIDIA driver/);
  });

  it('marks unknown quietly on a GPU environment only', () => {
    expect(compatMark(withCompat('tf-2.20-gpu', UNKNOWN), trans)).toEqual({
      state: 'unknown',
      label: 'GPU compatibility unknown',
      message: UNKNOWN.message
    });
    expect(
      compatMark(withCompat('tf-2.20-gpu', { state: 'unknown' }), trans)
        ?.message
    ).toBe('Probe the image to check');
    expect(compatMark(withCompat('tf-2.20-cpu', UNKNOWN), trans)).toBeNull();
  });

  it('gives no mark for ok, not_applicable and states it does not know', () => {
    for (const state of ['ok', 'not_applicable', 'later'] as const) {
      const compatibility = { state, message: 'x' } as ICompatibility;
      expect(
        compatMark(withCompat('tf-2.20-gpu', compatibility), trans)
      ).toBeNull();
    }
  });
});

describe('compatDetail', () => {
  it('adds a subtle "GPU compatible" for ok on a GPU environment', () => {
    expect(
      compatDetail(
        withCompat('tf-2.20-gpu', { state: 'ok', message: 'CUDA 12.5 ≤ 12.8' }),
        trans
      )
    ).toEqual({
      state: 'ok',
      label: 'GPU compatible',
      message: 'CUDA 12.5 ≤ 12.8'
    });
    expect(
      compatDetail(withCompat('tf-2.20-cpu', { state: 'ok' }), trans)
    ).toBeNull();
    expect(
      compatDetail(
        withCompat('tf-2.20-cpu', { state: 'not_applicable', message: 'CPU' }),
        trans
      )
    ).toBeNull();
    expect(
      compatDetail(withCompat('tf-2.20-gpu', INCOMPATIBLE), trans)?.state
    ).toBe('incompatible');
  });
});

describe('compatLabel and compatTitle', () => {
  const name = 'TensorFlow 2.20.0 (all GPUs)';

  it('puts the warning in the label of an incompatible environment only', () => {
    const bad = compatMark(withCompat('tf-2.20-gpu', INCOMPATIBLE), trans);
    const unknown = compatMark(withCompat('tf-2.20-gpu', UNKNOWN), trans);
    expect(compatLabel(name, bad, trans)).toBe(`${name} — GPU incompatible`);
    expect(compatLabel(name, unknown, trans)).toBe(name);
    expect(compatLabel(name, null, trans)).toBe(name);
    expect(compatTitle(bad, trans)).toBe(
      `GPU incompatible: ${INCOMPATIBLE.message}`
    );
    expect(compatTitle(unknown, trans)).toBe(
      `GPU compatibility unknown: ${UNKNOWN.message}`
    );
    expect(compatTitle(null, trans)).toBe('');
    const ok: ICompatEnvironment = withCompat('tf-2.20-gpu', { state: 'ok' });
    expect(compatTitle(compatDetail(ok, trans), trans)).toBe('');
  });
});

describe('sortEnvironments with compatibility', () => {
  it('puts an incompatible environment after the others that can run', () => {
    const listed = envs.map(e =>
      e.id === 'tf-2.20-gpu' ? withCompat(e.id, INCOMPATIBLE) : e
    );
    expect(sortEnvironments(listed, null).map(e => e.id)).toEqual([
      'tf-2.20-cpu',
      'tf-2.19-cpu',
      'broken',
      'py-registry',
      'tf-2.20-gpu',
      'missing'
    ]);
    // Unknown does not move it.
    const unknown = envs.map(e =>
      e.id === 'tf-2.20-gpu' ? withCompat(e.id, UNKNOWN) : e
    );
    expect(sortEnvironments(unknown, null)[0].id).toBe('tf-2.20-gpu');
  });
});

describe('arrangeKernelOptions with compatibility', () => {
  function options(): IKernelOptions {
    return {
      disabled: false,
      groups: [
        {
          label: 'Start Kernel',
          options: [
            { text: 'Python 3 (ipykernel)', value: '{"name":"python3"}' },
            ...envs.map(e => ({
              text: e.display_name,
              value: JSON.stringify({ name: e.kernel_name })
            }))
          ]
        },
        {
          label: 'Use No Kernel',
          options: [{ text: 'No Kernel', value: 'null' }]
        }
      ]
    };
  }
  const listed = (compatibility: ICompatibility): IEnvironment[] =>
    envs.map(e =>
      e.id === 'tf-2.20-gpu' ? withCompat(e.id, compatibility) : e
    );
  const option = (arranged: IKernelOptions, id: string) =>
    arranged.groups
      .map(g => g.options)
      .reduce((a, b) => a.concat(b), [])
      .find(o => o.environment === id)!;

  it('keeps an incompatible environment selectable, marked, with the message', () => {
    const arranged = arrangeKernelOptions(options(), {
      environments: listed(INCOMPATIBLE),
      gpus: null,
      defaultKernel: 'tfenv-tf-2.20-cpu',
      trans
    });
    const gpu = option(arranged, 'tf-2.20-gpu');
    expect(gpu).toMatchObject({
      text: 'TensorFlow 2.20.0 (all GPUs) — GPU incompatible',
      title: `GPU incompatible: ${INCOMPATIBLE.message}`,
      available: true,
      compat: 'incompatible'
    });
    // In the first group, after the compatible environments.
    expect(arranged.groups[0].options.indexOf(gpu)).toBe(4);
    expect(arranged.groups[0].options[0].environment).toBe('tf-2.20-cpu');
    // Without a compatibility answer, nothing changes.
    expect(option(arranged, 'tf-2.20-cpu').compat).toBeUndefined();
    expect(option(arranged, 'tf-2.20-cpu').title).toBeUndefined();
  });

  it('puts unknown in the title only', () => {
    const arranged = arrangeKernelOptions(options(), {
      environments: listed(UNKNOWN),
      gpus: null,
      defaultKernel: null,
      trans
    });
    expect(option(arranged, 'tf-2.20-gpu')).toMatchObject({
      text: 'TensorFlow 2.20.0 (all GPUs)',
      title: `GPU compatibility unknown: ${UNKNOWN.message}`,
      compat: 'unknown'
    });
  });

  it('does not preselect an incompatible default kernel', () => {
    const arranged = arrangeKernelOptions(options(), {
      environments: listed(INCOMPATIBLE),
      gpus: null,
      defaultKernel: 'tfenv-tf-2.20-gpu',
      trans
    });
    const chosen = arranged.groups[0].options.filter(o => o.selected);
    expect(chosen.map(o => o.environment)).toEqual(['tf-2.20-cpu']);
    expect(option(arranged, 'tf-2.20-gpu').selected).toBeFalsy();
  });
});
