import { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';

import { TfEnvModel } from '../model';
import {
  ICheckpointListing,
  IEnvironmentsReply,
  IKernelStatus,
  IPull,
  IPullFollower,
  ITfEnvClient,
  TfEnvApiError
} from '../api';

import environmentsReply from './fixtures/environments.json';
import gpusNoDriver from './fixtures/gpus-no-driver.json';
import imageTf220 from './fixtures/image-tf220.json';
import kernelTf220 from './fixtures/kernel-tf220.json';

const KERNEL = kernelTf220 as unknown as IKernelStatus;

/**
 * A checkpoint listing of an environment: one TF checkpoint set.
 */
function listingOf(envId: string, etag = 'e1'): ICheckpointListing {
  return {
    environment: envId,
    exists: true,
    location: `/host/checkpoints/${envId}`,
    container_path: '/tfenv/checkpoints',
    checkpoints: [
      { name: 'run1', kind: 'tf_checkpoint_set', path: 'run1', etag, step: 7 }
    ]
  };
}

/**
 * A REST client answering with recorded payloads.
 */
class FakeClient implements ITfEnvClient {
  environments = jest.fn(async (): Promise<IEnvironmentsReply> =>
    JSON.parse(JSON.stringify(environmentsReply))
  );
  imageStatus = jest.fn(async () => imageTf220 as any);
  probe = jest.fn(async (envId: string, run: boolean): Promise<any> =>
    run ? { ...KERNEL.probe, cached: false } : { state: 'not_probed' }
  );
  startPull = jest.fn(async (envId: string): Promise<IPull> => ({
    id: 'pull-1',
    environment: envId,
    image: 'img',
    state: 'pulling',
    percent: 0
  }));
  getPull = jest.fn();
  listPulls = jest.fn(async (): Promise<IPull[]> => []);
  cancelPull = jest.fn(async (pullId: string): Promise<IPull> => ({
    id: pullId,
    environment: 'py-registry',
    image: 'img',
    state: 'cancelled',
    message: 'The pull was cancelled.'
  }));
  kernel = jest.fn(async (id: string): Promise<IKernelStatus> => ({
    ...KERNEL,
    kernel_id: id
  }));
  gpus = jest.fn(async () => gpusNoDriver as any);
  checkpoints? = jest.fn(async (envId: string): Promise<ICheckpointListing> =>
    listingOf(envId)
  );
  deleteCheckpoint? = jest.fn(
    async (envId: string, name: string, etag: string): Promise<unknown> => ({
      deleted: name
    })
  );
  follower: IPullFollower | null = null;
  followPull = jest.fn(
    (pullId: string, follower: IPullFollower): IDisposable => {
      this.follower = follower;
      let disposed = false;
      return {
        get isDisposed() {
          return disposed;
        },
        dispose: () => {
          disposed = true;
        }
      };
    }
  );
}

/**
 * The parts of a SessionContext the model uses.
 */
class FakeContext {
  kernelChanged = new Signal<this, any>(this);
  statusChanged = new Signal<this, any>(this);
  sessionChanged = new Signal<this, any>(this);
  disposed = new Signal<this, void>(this);
  isDisposed = false;
  hasNoKernel = false;
  kernelPreference: { name?: string } = { name: 'tfenv-tf-2.20-cpu' };
  kernelDisplayStatus = 'idle';
  session: any = { kernel: { id: 'k1', name: 'tfenv-tf-2.20-cpu' } };
  failWith: string | null = null;

  async _changeKernel(options: { name?: string } = {}): Promise<any> {
    if (this.failWith) {
      this.session = null;
      this.kernelChanged.emit(null);
      throw Object.assign(new Error(this.failWith), { traceback: 'tb' });
    }
    this.session = { kernel: { id: `k-${options.name}`, name: options.name } };
    this.kernelChanged.emit(null);
    return this.session.kernel;
  }

  changeKernel(options: { name?: string }): Promise<any> {
    return this._changeKernel(options);
  }
}

const tick = (ms = 0): Promise<void> =>
  new Promise(resolve => setTimeout(resolve, ms));

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await tick();
  }
}

function makeModel(client = new FakeClient()): {
  model: TfEnvModel;
  client: FakeClient;
} {
  const model = new TfEnvModel({
    client,
    refreshInterval: 0,
    isHidden: () => false
  });
  return { model, client };
}

describe('TfEnvModel', () => {
  let model: TfEnvModel;
  afterEach(() => model?.dispose());

  it('loads the catalog once, even without views', async () => {
    const made = makeModel();
    model = made.model;
    await model.ready;
    await settle();
    expect(model.environments?.map(e => e.id)).toContain('tf-2.20-cpu');
    expect(model.problems).toHaveLength(1);
    expect(made.client.environments).toHaveBeenCalledTimes(1);
    expect(made.client.kernel).not.toHaveBeenCalled();
    expect(model.state.state).toBe('no-kernel');
  });

  it('knows whether the server pulls images (not in a JupyterHub)', async () => {
    const made = makeModel();
    model = made.model;
    await model.ready;
    expect(model.pullCapability).toEqual({ allowed: true, message: null });
    model.dispose();

    const client = new FakeClient();
    client.environments.mockResolvedValue({
      ...JSON.parse(JSON.stringify(environmentsReply)),
      pulls: {
        allowed: false,
        message:
          'In this JupyterHub, images are pulled by an admin: ask them to run `jupyter tfenv pull <environment>` on the host.'
      }
    });
    model = makeModel(client).model;
    await model.ready;
    await settle();
    expect(model.pullCapability.allowed).toBe(false);
    expect(model.pullCapability.message).toContain('pulled by an admin');
  });

  it('knows when kernels cannot write into files made in JupyterLab', async () => {
    const made = makeModel();
    model = made.model;
    await model.ready;
    expect(model.filesWarning).toBeNull();
    model.dispose();

    const client = new FakeClient();
    const files = {
      server_uid: 0,
      kernel_uid: 1001,
      message: 'this server runs as uid 0 but its kernels run as uid 1001 …'
    };
    client.environments.mockResolvedValue({
      ...JSON.parse(JSON.stringify(environmentsReply)),
      files
    });
    model = makeModel(client).model;
    await model.ready;
    await settle();
    expect(model.filesWarning).toEqual(files);
  });

  it("keeps the engine's live-restore the listing says, or null", async () => {
    const made = makeModel();
    model = made.model;
    await model.ready;
    expect(model.engineState).toBeNull(); // the fixture is older than the field
    model.dispose();

    const client = new FakeClient();
    const engine = {
      host: 'unix:///var/run/docker.sock',
      version: '20.10.24',
      live_restore: false
    };
    client.environments.mockResolvedValue({
      ...JSON.parse(JSON.stringify(environmentsReply)),
      engine
    });
    model = makeModel(client).model;
    await model.ready;
    await settle();
    expect(model.engineState).toEqual(engine);

    client.environments.mockResolvedValue({
      ...JSON.parse(JSON.stringify(environmentsReply)),
      engine: null
    });
    await model.refresh();
    expect(model.engineState).toBeNull();
  });

  it('says when the server extension is missing, and stops', async () => {
    const client = new FakeClient();
    client.environments.mockRejectedValue(new TfEnvApiError('Not Found', 404));
    model = makeModel(client).model;
    const lease = model.acquire('panel');
    await model.ready;
    await settle();
    expect(model.extensionMissing).toBe(true);
    expect(model.state.state).toBe('no-extension');
    await model.refresh();
    expect(client.kernel).not.toHaveBeenCalled();
    lease.dispose();
  });

  it('follows the active kernel and its status', async () => {
    const made = makeModel();
    model = made.model;
    const changes = jest.fn();
    model.changed.connect(changes);
    const lease = model.acquire('status');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    expect(model.activeEnvironment?.id).toBe('tf-2.20-cpu');
    expect(made.client.kernel).toHaveBeenCalledWith('k1');
    expect(model.kernelStatus?.kernel_id).toBe('k1');
    expect(model.activeProbe?.tensorflow).toBe('2.20.0');
    expect(model.state).toMatchObject({ state: 'ok', reason: 'ok' });
    expect(changes).toHaveBeenCalled();
    // The status bar alone needs no GPU overview for a CPU kernel.
    expect(made.client.gpus).not.toHaveBeenCalled();
    lease.dispose();
  });

  it('knows a tfenv kernel from its kernelspec before the catalog', () => {
    model = new TfEnvModel({
      client: new FakeClient(),
      specEnvironment: name =>
        name === 'tfenv-x'
          ? {
              id: 'x',
              kernel_name: 'tfenv-x',
              display_name: 'X',
              image: 'i',
              gpus: 'none',
              gpu_label: 'CPU'
            }
          : null
    });
    expect(model.environmentOfKernel('tfenv-x')?.id).toBe('x');
    expect(model.environmentOfKernel('python3')).toBeNull();
  });

  it('probes the image once when the kernel status has none', async () => {
    const client = new FakeClient();
    client.kernel.mockImplementation(async id => ({
      ...KERNEL,
      kernel_id: id,
      probe: null
    }));
    let release: () => void = () => undefined;
    client.probe.mockImplementation(
      (envId: string, run: boolean) =>
        new Promise(resolve => {
          release = () => resolve({ ...KERNEL.probe, keras: '3.15.1' });
        })
    );
    model = makeModel(client).model;
    const lease = model.acquire('panel');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    expect(client.probe).toHaveBeenCalledTimes(1);
    expect(client.probe).toHaveBeenCalledWith('tf-2.20-cpu', true);
    expect(model.state).toMatchObject({ state: 'loading', reason: 'probe' });
    await model.refresh();
    expect(client.probe).toHaveBeenCalledTimes(1);
    release();
    await settle();
    expect(model.activeProbe?.keras).toBe('3.15.1');
    expect(model.state.state).toBe('ok');
    lease.dispose();
  });

  it('keeps the server message of a failed kernel start', async () => {
    model = makeModel().model;
    await model.ready;
    const context = new FakeContext();
    model.setSessionContext(context as any);
    context.failWith = "Environment 'tf-2.20-gpu' asks for GPUs …";
    await expect(model.switchTo('tf-2.20-gpu')).rejects.toThrow(
      /asks for GPUs/
    );
    expect(model.startError).toEqual({
      kernelName: 'tfenv-tf-2.20-gpu',
      message: "Environment 'tf-2.20-gpu' asks for GPUs …",
      traceback: 'tb'
    });
    expect(model.activeEnvironment?.id).toBe('tf-2.20-gpu');
    await settle();
    expect(model.state.reason).toBe('start-failed');
    // A start that succeeds clears it.
    context.failWith = null;
    await model.switchTo('tf-2.19-cpu');
    expect(model.startError).toBeNull();
    expect(model.activeEnvironment?.id).toBe('tf-2.19-cpu');
  });

  it('follows a pull to its end and refreshes the catalog', async () => {
    const made = makeModel();
    model = made.model;
    await model.ready;
    const ended = jest.fn();
    model.pullEnded.connect((_, progress) => ended(progress.state));
    await model.pull('py-registry');
    expect(made.client.followPull).toHaveBeenCalledWith(
      'pull-1',
      expect.anything()
    );
    const follower = made.client.follower!;
    follower.onEvent('layer', {
      seq: 3,
      pull_id: 'pull-1',
      progress: {
        percent: 40,
        current: 4,
        total: 10,
        layers: 2,
        layers_done: 1
      }
    });
    expect(model.pulls.get('py-registry')).toMatchObject({
      state: 'pulling',
      percent: 40
    });
    // Events of another pull are not this one's.
    follower.onEvent('layer', {
      seq: 4,
      pull_id: 'other',
      progress: { percent: 90 }
    });
    expect(model.pulls.get('py-registry')?.percent).toBe(40);
    const calls = made.client.environments.mock.calls.length;
    follower.onEvent('done', {
      seq: 9,
      pull_id: 'pull-1',
      id: 'pull-1',
      environment: 'py-registry',
      image: 'img',
      state: 'done',
      digest: 'sha256:abc',
      message: 'Pulled img'
    });
    expect(ended).toHaveBeenCalledWith('done');
    expect(model.pulls.get('py-registry')).toMatchObject({
      state: 'done',
      percent: 100
    });
    await settle();
    expect(made.client.environments.mock.calls.length).toBe(calls + 1);
    model.clearPull('py-registry');
    expect(model.pulls.has('py-registry')).toBe(false);
  });

  it('cancels a pull', async () => {
    const made = makeModel();
    model = made.model;
    await model.pull('py-registry');
    await model.cancelPull('py-registry');
    expect(made.client.cancelPull).toHaveBeenCalledWith('pull-1');
    expect(model.pulls.get('py-registry')).toMatchObject({
      state: 'cancelled',
      message: 'The pull was cancelled.'
    });
  });

  it('shows a pull that could not start as an error', async () => {
    const client = new FakeClient();
    client.startPull.mockRejectedValue(
      new TfEnvApiError('Cannot reach the Docker engine', 503)
    );
    model = makeModel(client).model;
    await expect(model.pull('py-registry')).rejects.toThrow(/Docker engine/);
    expect(model.pulls.get('py-registry')).toMatchObject({
      state: 'error',
      message: 'Cannot reach the Docker engine'
    });
  });

  it('resumes the server’s running pulls', async () => {
    const client = new FakeClient();
    client.listPulls.mockResolvedValue([
      {
        id: 'p9',
        environment: 'missing',
        image: 'i',
        state: 'pulling',
        percent: 12
      },
      { id: 'p8', environment: 'tf-2.19-cpu', image: 'i', state: 'done' }
    ]);
    model = makeModel(client).model;
    await model.ready;
    await settle();
    expect(client.followPull).toHaveBeenCalledTimes(1);
    expect(client.followPull).toHaveBeenCalledWith('p9', expect.anything());
    expect(model.pulls.get('missing')?.percent).toBe(12);
    expect(model.pulls.has('tf-2.19-cpu')).toBe(false);
  });

  it('polls only while a view holds a lease', async () => {
    const made = makeModel();
    model = made.model;
    model.refreshInterval = 500;
    model.setSessionContext(new FakeContext() as any);
    await settle();
    expect(made.client.kernel).not.toHaveBeenCalled();
    const lease = model.acquire('panel');
    await tick(1200);
    const calls = made.client.kernel.mock.calls.length;
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(made.client.gpus).toHaveBeenCalled();
    lease.dispose();
    await tick(1100);
    expect(made.client.kernel.mock.calls.length).toBeLessThanOrEqual(calls + 1);
  });

  it('forgets the kernel status when the kernel changes', async () => {
    const made = makeModel();
    model = made.model;
    const lease = model.acquire('status');
    const context = new FakeContext();
    model.setSessionContext(context as any);
    await settle();
    expect(model.kernelStatus?.kernel_id).toBe('k1');
    context.session = { kernel: { id: 'k2', name: 'tfenv-tf-2.19-cpu' } };
    context.kernelChanged.emit(null);
    expect(model.kernelStatus).toBeNull();
    expect(model.state.state).toBe('loading');
    await settle();
    expect(model.kernelStatus?.kernel_id).toBe('k2');
    expect(model.activeEnvironment?.id).toBe('tf-2.19-cpu');
    lease.dispose();
  });

  it('shows a restart as it is, then the new container', async () => {
    const made = makeModel();
    model = made.model;
    const lease = model.acquire('status');
    const context = new FakeContext();
    model.setSessionContext(context as any);
    await settle();
    expect(model.state.state).toBe('ok');
    const old = model.kernelStatus?.container_id;
    made.client.kernel.mockImplementation(async (id: string) => ({
      ...KERNEL,
      kernel_id: id,
      container_id: 'new-container'
    }));
    context.kernelDisplayStatus = 'restarting';
    context.statusChanged.emit('restarting');
    // Not "Running" with the old container's id.
    expect(model.state).toMatchObject({
      state: 'loading',
      reason: 'restarting'
    });
    expect(model.kernelStatus).toBeNull();
    await settle();
    expect(model.state.reason).toBe('restarting');
    context.kernelDisplayStatus = 'idle';
    context.statusChanged.emit('idle');
    await settle();
    expect(model.state.state).toBe('ok');
    expect(model.kernelStatus?.container_id).toBe('new-container');
    expect(old).not.toBe('new-container');
    lease.dispose();
  });

  it('says the server does not answer once it stopped, and recovers', async () => {
    const made = makeModel();
    model = made.model;
    const lease = model.acquire('status');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    expect(model.state.state).toBe('ok');
    made.client.kernel.mockRejectedValue(
      new TfEnvApiError('Failed to fetch', null)
    );
    await model.refresh();
    expect(model.state).toMatchObject({
      state: 'error',
      reason: 'server-unreachable',
      message: 'Failed to fetch'
    });
    made.client.kernel.mockImplementation(async (id: string) => ({
      ...KERNEL,
      kernel_id: id
    }));
    await model.refresh();
    expect(model.state.state).toBe('ok');
    lease.dispose();
  });

  it('keeps the engine’s outage (the server’s 503) until the engine answers again', async () => {
    const made = makeModel();
    model = made.model;
    const lease = model.acquire('status');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    expect(model.state.state).toBe('ok');
    const before = model.kernelStatus;
    const message =
      'Cannot reach the Docker engine at unix:///tmp/e.sock: Connection refused. Start the Docker engine (`sudo systemctl start docker`, or Docker Desktop)…';
    const outage = new TfEnvApiError(message, 503, 'DockerUnavailableError');
    made.client.kernel.mockRejectedValue(outage);
    made.client.imageStatus.mockRejectedValue(outage);
    await model.refresh();
    expect(model.state).toMatchObject({
      state: 'engine-unreachable',
      reason: 'engine-unreachable',
      message
    });
    const since = model.engineUnreachable?.since;
    expect(since).toEqual(expect.any(Number));
    // What was read before stays, as stale facts; the time is the first one.
    expect(model.kernelStatus).toBe(before);
    await model.refresh();
    expect(model.engineUnreachable).toEqual({ message, since });

    made.client.kernel.mockImplementation(async (id: string) => ({
      ...KERNEL,
      kernel_id: id
    }));
    made.client.imageStatus.mockResolvedValue(imageTf220 as any);
    await model.refresh();
    expect(model.engineUnreachable).toBeNull();
    expect(model.state.state).toBe('ok');
    lease.dispose();
  });

  it('takes other 503s for what they are, not for the engine', async () => {
    const made = makeModel();
    model = made.model;
    const lease = model.acquire('status');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    made.client.kernel.mockRejectedValue(
      new TfEnvApiError('kubernetes unavailable', 503, 'KubernetesUnavailable')
    );
    await model.refresh();
    expect(model.engineUnreachable).toBeNull();
    expect(model.kernelError).toBe('kubernetes unavailable');
    expect(model.state.state).not.toBe('engine-unreachable');
    lease.dispose();
  });

  it('reads the outage from the catalog listing when no kernel runs', async () => {
    const made = makeModel();
    model = made.model;
    const lease = model.acquire('panel');
    await settle();
    const reply = JSON.parse(JSON.stringify(environmentsReply));
    const message =
      'Cannot reach the Docker engine at unix:///tmp/e.sock: Connection refused.';
    for (const env of reply.environments) {
      env.image_status = { present: null, error: message };
    }
    made.client.environments.mockResolvedValue(reply);
    made.client.imageStatus.mockRejectedValue(
      new TfEnvApiError(message, 503, 'DockerUnavailableError')
    );
    await model.refresh();
    expect(model.state).toMatchObject({
      state: 'engine-unreachable',
      message
    });
    // A refusal the engine answered is not an outage.
    for (const env of reply.environments) {
      env.image_status = { present: null, error: 'API error 500: no space' };
    }
    made.client.imageStatus.mockResolvedValue(imageTf220 as any);
    await model.refresh();
    expect(model.engineUnreachable).toBeNull();
    expect(model.state.state).toBe('no-kernel');
    lease.dispose();
  });

  it('shows a dead kernel', async () => {
    model = makeModel().model;
    const lease = model.acquire('status');
    const context = new FakeContext();
    model.setSessionContext(context as any);
    await settle();
    context.kernelDisplayStatus = 'dead';
    context.statusChanged.emit('dead');
    expect(model.state.state).toBe('dead');
    lease.dispose();
  });
});

describe('TfEnvModel checkpoints', () => {
  let model: TfEnvModel;
  afterEach(() => model?.dispose());

  it('lists the active environment’s checkpoints while the panel is shown', async () => {
    const made = makeModel();
    model = made.model;
    const checkpoints = made.client.checkpoints!;
    const status = model.acquire('status');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    // The status bar needs no checkpoints.
    expect(checkpoints).not.toHaveBeenCalled();
    expect(model.checkpoints).toEqual({
      environment: 'tf-2.20-cpu',
      listing: null,
      error: null,
      loading: true
    });
    const panel = model.acquire('panel');
    await settle();
    expect(checkpoints).toHaveBeenCalledTimes(1);
    expect(checkpoints).toHaveBeenCalledWith('tf-2.20-cpu');
    expect(model.checkpoints).toEqual({
      environment: 'tf-2.20-cpu',
      listing: listingOf('tf-2.20-cpu'),
      error: null,
      loading: false
    });
    // No periodic refresh (interval 0): only the refresh button lists again.
    await model.refresh();
    await settle();
    expect(checkpoints).toHaveBeenCalledTimes(2);
    await model.refreshCheckpoints();
    expect(checkpoints).toHaveBeenCalledTimes(3);
    panel.dispose();
    status.dispose();
  });

  it('has none without an active environment', async () => {
    model = makeModel().model;
    const panel = model.acquire('panel');
    await settle();
    expect(model.checkpoints).toBeNull();
    panel.dispose();
  });

  it('polls the listing at the refresh interval, only while shown', async () => {
    const made = makeModel();
    model = made.model;
    const checkpoints = made.client.checkpoints!;
    model.refreshInterval = 500;
    model.setSessionContext(new FakeContext() as any);
    const status = model.acquire('status');
    const panel = model.acquire('panel');
    await tick(1200);
    const calls = checkpoints.mock.calls.length;
    expect(calls).toBeGreaterThanOrEqual(2);
    // Never faster than the model polls.
    expect(calls).toBeLessThanOrEqual(4);
    panel.dispose();
    await tick(1100);
    expect(checkpoints.mock.calls.length).toBe(calls);
    status.dispose();
  });

  it('lists another environment when the kernel changes, and drops a late answer', async () => {
    const client = new FakeClient();
    const answers = new Map<string, (listing: ICheckpointListing) => void>();
    client.checkpoints!.mockImplementation(
      (envId: string) =>
        new Promise<ICheckpointListing>(resolve => answers.set(envId, resolve))
    );
    model = makeModel(client).model;
    const panel = model.acquire('panel');
    const context = new FakeContext();
    model.setSessionContext(context as any);
    await settle();
    expect(answers.has('tf-2.20-cpu')).toBe(true);
    context.session = { kernel: { id: 'k2', name: 'tfenv-tf-2.19-cpu' } };
    context.kernelChanged.emit(null);
    await settle();
    expect(client.checkpoints).toHaveBeenLastCalledWith('tf-2.19-cpu');
    expect(model.checkpoints).toMatchObject({
      environment: 'tf-2.19-cpu',
      listing: null,
      loading: true
    });
    answers.get('tf-2.20-cpu')!(listingOf('tf-2.20-cpu'));
    await settle();
    expect(model.checkpoints?.listing).toBeNull();
    answers.get('tf-2.19-cpu')!(listingOf('tf-2.19-cpu'));
    await settle();
    expect(model.checkpoints).toMatchObject({
      environment: 'tf-2.19-cpu',
      listing: { environment: 'tf-2.19-cpu' },
      loading: false
    });
    panel.dispose();
  });

  it('keeps why a listing failed', async () => {
    const client = new FakeClient();
    client.checkpoints!.mockRejectedValue(
      new TfEnvApiError('Permission denied: /host/checkpoints', 500)
    );
    model = makeModel(client).model;
    const panel = model.acquire('panel');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    expect(model.checkpoints).toEqual({
      environment: 'tf-2.20-cpu',
      listing: null,
      error: 'Permission denied: /host/checkpoints',
      loading: false
    });
    panel.dispose();
  });

  it('lists the other environments the kernel mounted, once per kernel', async () => {
    const client = new FakeClient();
    client.kernel.mockImplementation(async (id: string) => ({
      ...KERNEL,
      kernel_id: id,
      checkpoints: {
        mode: 'bind',
        others_dir: '/tfenv/checkpoints-of',
        others: [
          {
            environment: 'tf-2.19-cpu',
            container_path: '/tfenv/checkpoints-of/tf-2.19-cpu'
          },
          { environment: 'gone', container_path: '/tfenv/checkpoints-of/gone' }
        ]
      }
    }));
    client.checkpoints!.mockImplementation(async (envId: string) => {
      if (envId === 'gone') {
        throw new TfEnvApiError("No environment 'gone'", 404);
      }
      return listingOf(envId);
    });
    model = makeModel(client).model;
    const panel = model.acquire('panel');
    const context = new FakeContext();
    model.setSessionContext(context as any);
    await settle();
    expect(model.otherCheckpoints.get('tf-2.19-cpu')).toEqual(
      listingOf('tf-2.19-cpu')
    );
    expect(model.otherCheckpoints.get('gone')).toBe("No environment 'gone'");
    const of219 = (): number =>
      client.checkpoints!.mock.calls.filter(([id]) => id === 'tf-2.19-cpu')
        .length;
    expect(of219()).toBe(1);
    // Another tick for the same kernel: not again.
    context.statusChanged.emit('busy');
    await settle();
    expect(of219()).toBe(1);
    // The refresh button: again.
    await model.refresh();
    await settle();
    expect(of219()).toBe(2);
    panel.dispose();
  });

  it('deletes with the listed etag and lists again, also when refused', async () => {
    const made = makeModel();
    model = made.model;
    const client = made.client;
    const panel = model.acquire('panel');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    const item = model.checkpoints!.listing!.checkpoints[0];
    client.checkpoints!.mockResolvedValue({
      ...listingOf('tf-2.20-cpu'),
      checkpoints: []
    });
    await model.deleteCheckpoint('tf-2.20-cpu', item);
    expect(client.deleteCheckpoint).toHaveBeenCalledWith(
      'tf-2.20-cpu',
      'run1',
      'e1'
    );
    await settle();
    expect(client.checkpoints).toHaveBeenCalledTimes(2);
    expect(model.checkpoints?.listing?.checkpoints).toEqual([]);

    client.deleteCheckpoint!.mockRejectedValue(
      new TfEnvApiError('Precondition Failed', 412)
    );
    await expect(
      model.deleteCheckpoint('tf-2.20-cpu', item)
    ).rejects.toMatchObject({ status: 412 });
    await settle();
    expect(client.checkpoints).toHaveBeenCalledTimes(3);
    panel.dispose();
  });

  it('says when the client cannot list checkpoints', async () => {
    const client = new FakeClient();
    delete client.checkpoints;
    delete client.deleteCheckpoint;
    model = makeModel(client).model;
    const panel = model.acquire('panel');
    model.setSessionContext(new FakeContext() as any);
    await settle();
    expect(model.canListCheckpoints).toBe(false);
    expect(model.checkpoints).toMatchObject({
      environment: 'tf-2.20-cpu',
      listing: null,
      loading: false
    });
    panel.dispose();
  });
});
