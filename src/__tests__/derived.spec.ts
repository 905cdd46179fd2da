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
  it('marks the environment as building until the server answers, then reloads the catalog', async () => {
    let finish: () => void = () => undefined;
    const client = {
      environments: jest.fn(async () =>
        JSON.parse(JSON.stringify(environmentsReply))
      ),
      gpus: jest.fn(async () => ({ gpus: [] })),
      listPulls: jest.fn(async () => []),
      build: jest.fn(
        () =>
          new Promise<unknown>(resolve => {
            finish = () => resolve({ id: 'ds' });
          })
      )
    } as unknown as ITfEnvClient;
    const model = new TfEnvModel({
      client,
      refreshInterval: 0,
      isHidden: () => false
    });
    await model.ready;
    const loads = (client.environments as jest.Mock).mock.calls.length;
    const done = model.build('ds');
    expect(model.building.has('ds')).toBe(true);
    await model.build('ds'); // a second click while it runs: nothing more
    expect(client.build).toHaveBeenCalledTimes(1);
    finish();
    await done;
    expect(model.building.has('ds')).toBe(false);
    expect((client.environments as jest.Mock).mock.calls.length).toBe(
      loads + 1
    );
    model.dispose();
  });
});
