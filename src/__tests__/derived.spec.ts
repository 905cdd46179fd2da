import { derivedPackagesText, notBuiltText } from '../derived';
import { TfEnvModel } from '../model';
import type { ITfEnvClient } from '../api/client';
import environmentsReply from './fixtures/environments.json';
import type { IEnvironment } from '../api';
import type { ITrans } from '../state';

const trans: ITrans = {
  __: (msgid, ...args) =>
    msgid.replace(/%(\d)/g, (_, i) => String(args[Number(i) - 1])),
  _n: (single, plural, n) => (n === 1 ? single : plural)
};

// What GET /tfenv/environments answers for a derived entry (docs/building.md).
const derived: IEnvironment = {
  id: 'ds',
  kernel_name: 'tfenv-ds',
  display_name: 'Python 3.11 (test) + 2 packages',
  image: 'tfenv-derived/ds:v1-096b5b1d65c2bca98ee4b9b7',
  gpus: 'none',
  gpu_label: 'CPU',
  derived: {
    base: 'py',
    base_image: 'tfenv-test/python:3.11-jupyter',
    packages: [
      { name: 'six', version: '1.16.0' },
      { name: 'tomli', version: '2.0.1' }
    ],
    inputs: '096b5b1d65c2bca98ee4b9b7'
  }
};

describe('derivedPackagesText', () => {
  it('lists the added packages at their pinned versions', () => {
    expect(derivedPackagesText(derived)).toBe('six 1.16.0 · tomli 2.0.1');
  });

  it('is null for a plain image', () => {
    expect(derivedPackagesText({ ...derived, derived: null })).toBeNull();
    expect(derivedPackagesText({ ...derived, derived: undefined })).toBeNull();
  });
});

describe('notBuiltText', () => {
  it('names the build command where this server builds', () => {
    expect(notBuiltText(derived, true, trans)).toContain(
      '`jupyter tfenv build ds`'
    );
  });

  it('asks the admin in a JupyterHub', () => {
    const text = notBuiltText(derived, false, trans);
    expect(text).toContain('ask your admin');
    expect(text).toContain('`jupyter tfenv build ds --push`');
  });
});

describe('TfEnvModel.build', () => {
  function setUp(end: 'done' | 'error', resume = false) {
    let emit: (type: string, data: any) => void = () => undefined;
    const job = {
      id: 'b1',
      environment: 'ds',
      image: derived.image,
      state: 'building',
      step: 'resolve',
      steps: ['resolve', 'download', 'build', 'verify', 'tag'],
      message: 'Building ds',
      seq: 1
    };
    // What GET /tfenv/builds answers when the page (re)loads.
    const running = resume
      ? [job, { ...job, id: 'b0', environment: 'other', state: 'done' }]
      : [];
    const client = {
      environments: jest.fn(async () =>
        JSON.parse(JSON.stringify(environmentsReply))
      ),
      gpus: jest.fn(async () => ({ gpus: [] })),
      listPulls: jest.fn(async () => []),
      build: jest.fn(async () => job),
      listBuilds: jest.fn(async () => running),
      followBuild: jest.fn((_id: string, follower: any) => {
        emit = follower.onEvent;
        return { isDisposed: false, dispose: jest.fn() };
      })
    } as unknown as ITfEnvClient;
    const model = new TfEnvModel({
      client,
      refreshInterval: 0,
      isHidden: () => false
    });
    const finish = () =>
      end === 'done'
        ? emit('done', {
            ...job,
            state: 'done',
            step: 'tag',
            seq: 9,
            result: {
              image: 'repo/ds:v2-x',
              image_id: 'sha256:1',
              already_built: false
            }
          })
        : emit('error', {
            ...job,
            state: 'error',
            step: 'download',
            seq: 9,
            message: 'pip exit 1: no six==0.0.1'
          });
    return {
      client,
      model,
      job,
      step: (data: any) => emit('progress', { ...job, ...data }),
      finish
    };
  }

  it('follows the build step by step, then reloads the catalog', async () => {
    const { client, model, step, finish } = setUp('done');
    await model.ready;
    const loads = (client.environments as jest.Mock).mock.calls.length;
    const done = model.build('ds');
    expect(model.building.has('ds')).toBe(true);
    await model.build('ds'); // a second click while it runs: nothing more
    expect(client.build).toHaveBeenCalledTimes(1);
    await new Promise(resolve => setTimeout(resolve, 0));
    step({ step: 'download', wheels: { done: 1, total: 2 }, seq: 3 });
    expect(model.builds.get('ds')!.wheels).toEqual({ done: 1, total: 2 });
    finish();
    await done;
    expect(model.building.has('ds')).toBe(false);
    expect(model.builds.get('ds')!.state).toBe('done');
    expect((client.environments as jest.Mock).mock.calls.length).toBe(
      loads + 1
    );
    model.clearBuild('ds');
    expect(model.builds.has('ds')).toBe(false);
    model.dispose();
  });

  it('follows a build the server runs when the page loads', async () => {
    const { client, model, step, finish } = setUp('done', true);
    await model.ready;
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(client.followBuild).toHaveBeenCalledTimes(1);
    expect(client.followBuild).toHaveBeenCalledWith('b1', expect.anything());
    expect(model.builds.get('ds')!.state).toBe('building');
    expect(model.builds.has('other')).toBe(false); // finished: not shown
    const loads = (client.environments as jest.Mock).mock.calls.length;
    step({ step: 'build', seq: 4 });
    expect(model.builds.get('ds')!.step).toBe('build');
    finish();
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(model.builds.get('ds')!.state).toBe('done');
    expect(
      (client.environments as jest.Mock).mock.calls.length
    ).toBeGreaterThan(loads);
    model.dispose();
  });

  it('rejects with the build’s own message when it fails', async () => {
    const { model, finish } = setUp('error');
    await model.ready;
    const done = model.build('ds');
    await new Promise(resolve => setTimeout(resolve, 0));
    finish();
    await expect(done).rejects.toThrow('pip exit 1: no six==0.0.1');
    expect(model.builds.get('ds')!.state).toBe('error');
    model.dispose();
  });
});
