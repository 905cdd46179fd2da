import type { ISessionContext } from '@jupyterlab/apputils';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { CheckpointListing } from './checkpointlisting';
import { EngineOutage } from './engineoutage';
import { normalizeEngine } from './liverestore';
import type { IProvenanceVerdict } from './provenance';
import {
  buildFromPayload,
  IBuildProgress,
  isBuildFinished,
  reduceBuildEvent
} from './buildprogress';
import {
  IPullProgress,
  isPullFinished,
  pullFromPayload,
  reducePullEvent
} from './pullprogress';
import {
  deriveState,
  IEngineOutage,
  IPanelState,
  IStartError,
  wantsGpu
} from './state';
import {
  IBuild,
  ICatalogProblem,
  ICheckpointItem,
  ICheckpointListing,
  IPullCapability,
  IEnvironment,
  IEngineState,
  IFilesWarning,
  IEnvironmentSummary,
  IGpuOverview,
  IImageStatus,
  IKernelStatus,
  IProbe,
  ITfEnvClient,
  TfEnvApiError
} from './api';
import { Consumer, ICheckpointsState, ITfEnvModel } from './tokens';

/**
 * How long an image status stays fresh, in ms (pulls and refreshes renew it).
 */
const IMAGE_STATUS_TTL = 60000;

/**
 * The extension's state: polls the server while a view needs it and emits
 * `changed`; views only render it.
 */
export class TfEnvModel implements ITfEnvModel {
  constructor(options: TfEnvModel.IOptions) {
    this._client = options.client;
    this._specEnvironment = options.specEnvironment ?? (() => null);
    this._refreshInterval = options.refreshInterval ?? 5000;
    this._isHidden =
      options.isHidden ??
      (() => typeof document !== 'undefined' && document.hidden === true);
    this._checkpoints = new CheckpointListing({
      client: this._client,
      interval: () => this._refreshInterval,
      changed: () => this._emit()
    });
    this._state = this._derive();
    this._schedule(0);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get pullEnded(): ISignal<this, IPullProgress> {
    return this._pullEnded;
  }

  get ready(): Promise<void> {
    return this._ready.promise;
  }

  /**
   * The REST client.
   */
  get client(): ITfEnvClient {
    return this._client;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  get refreshInterval(): number {
    return this._refreshInterval;
  }

  set refreshInterval(value: number) {
    const ms = Number.isFinite(value) && value > 0 ? Math.max(500, value) : 0;
    if (ms === this._refreshInterval) {
      return;
    }
    this._refreshInterval = ms;
    this._schedule(0);
  }

  get environments(): IEnvironment[] | null {
    return this._environments;
  }

  get pullCapability(): IPullCapability {
    return this._pullCapability;
  }

  get filesWarning(): IFilesWarning | null {
    return this._filesWarning;
  }

  get engineState(): IEngineState | null {
    return this._engineState;
  }

  get problems(): ICatalogProblem[] {
    return this._problems;
  }

  get environmentsError(): string | null {
    return this._environmentsError;
  }

  get extensionMissing(): boolean {
    return this._extensionMissing;
  }

  get gpus(): IGpuOverview | null {
    return this._gpus;
  }

  /**
   * The GPU check's answer, asked once when it is unknown and an environment
   * wants a GPU: the Launcher and the kernel pickers mark the GPU environments
   * that cannot run here without waiting for the panel to be opened.
   */
  async ensureGpus(): Promise<IGpuOverview | null> {
    await this.ready;
    if (
      this._gpus === null &&
      this._gpusError === null &&
      (this._environments ?? []).some(env => wantsGpu(env))
    ) {
      if (!this._gpusRequest) {
        this._gpusRequest = this._fetchGpus().then(() => this._emit());
      }
      await this._gpusRequest;
    }
    return this._gpus;
  }

  get gpusError(): string | null {
    return this._gpusError;
  }

  get sessionContext(): ISessionContext | null {
    return this._context;
  }

  get activeKernelName(): string | null {
    const context = this._context;
    if (!context || context.isDisposed) {
      return null;
    }
    const kernel = context.session?.kernel;
    if (kernel) {
      return kernel.name;
    }
    if (this._starting.has(context)) {
      return this._starting.get(context) ?? null;
    }
    const error = this._startErrors.get(context);
    if (error) {
      return error.kernelName;
    }
    if (context.hasNoKernel) {
      return null;
    }
    return context.kernelPreference?.name ?? null;
  }

  get activeKernelId(): string | null {
    return this._context?.session?.kernel?.id ?? null;
  }

  get activeEnvironment(): IEnvironmentSummary | null {
    return this.environmentOfKernel(this.activeKernelName);
  }

  get startError(): IStartError | null {
    return this._context
      ? (this._startErrors.get(this._context) ?? null)
      : null;
  }

  get kernelStatus(): IKernelStatus | null {
    const status = this._kernelStatus;
    return status && status.kernel_id === this.activeKernelId ? status : null;
  }

  get kernelError(): string | null {
    return this._kernelError;
  }

  get engineUnreachable(): IEngineOutage | null {
    return this._engine.current;
  }

  get activeProbe(): IProbe | null {
    const env = this.activeEnvironment;
    if (!env) {
      return null;
    }
    return (
      this.kernelStatus?.probe ??
      this._probes.get(env.id) ??
      this.environment(env.id)?.probe ??
      null
    );
  }

  get probing(): boolean {
    const env = this.activeEnvironment;
    return env !== null && this._probing.has(env.id);
  }

  get probeError(): string | null {
    const env = this.activeEnvironment;
    return env ? (this._probeErrors.get(env.id) ?? null) : null;
  }

  get activeImage(): IImageStatus | null {
    const env = this.activeEnvironment;
    return env ? (this._images.get(env.id)?.status ?? null) : null;
  }

  get state(): IPanelState {
    return this._state;
  }

  get pulls(): ReadonlyMap<string, IPullProgress> {
    return this._pulls;
  }

  get canListCheckpoints(): boolean {
    return this._checkpoints.canList;
  }

  get checkpoints(): ICheckpointsState | null {
    return this._checkpoints.stateOf(this.activeEnvironment?.id ?? null);
  }

  get otherCheckpoints(): ReadonlyMap<string, ICheckpointListing | string> {
    return this._checkpoints.others;
  }

  async refreshCheckpoints(): Promise<void> {
    await Promise.all([
      this._checkpoints.poll(this.activeEnvironment?.id ?? null, true),
      this._checkpoints.pollOthers(this.kernelStatus, true)
    ]);
  }

  deleteCheckpoint(envId: string, item: ICheckpointItem): Promise<void> {
    return this._checkpoints.remove(
      envId,
      item,
      id => id === this.activeEnvironment?.id
    );
  }

  get provenance(): IProvenanceVerdict | null {
    return this._context ? (this._provenance.get(this._context) ?? null) : null;
  }

  /**
   * Record (or clear) the provenance verdict of a notebook's session.
   */
  setProvenance(
    context: ISessionContext,
    verdict: IProvenanceVerdict | null
  ): void {
    if (verdict) {
      this._provenance.set(context, verdict);
    } else {
      this._provenance.delete(context);
    }
    if (context === this._context) {
      this._emit();
    }
  }

  environment(id: string): IEnvironment | null {
    return this._environments?.find(env => env.id === id) ?? null;
  }

  environmentOfKernel(
    kernelName: string | null | undefined
  ): IEnvironmentSummary | null {
    if (!kernelName) {
      return null;
    }
    const listed = this._environments?.find(
      env => env.kernel_name === kernelName
    );
    if (listed) {
      return listed;
    }
    const fromSpec = this._specEnvironment(kernelName);
    if (fromSpec) {
      return fromSpec;
    }
    const running = this._kernelStatus?.environment;
    return running && running.kernel_name === kernelName ? running : null;
  }

  /**
   * Start tracking a session context: its kernel start errors are kept
   * (also for starts the panel did not ask for: the kernel picker, the
   * notebook opening), so the panel can show the server's message.
   */
  watch(context: ISessionContext): void {
    if (this._watched.has(context)) {
      return;
    }
    this._watched.add(context);
    const target = context as any;
    // Every start goes through the private `_changeKernel` (startKernel,
    // changeKernel, the kernel picker); the public one is the fallback.
    const name =
      typeof target._changeKernel === 'function'
        ? '_changeKernel'
        : 'changeKernel';
    const original = target[name];
    if (typeof original !== 'function') {
      return;
    }
    target[name] = async (options: any = {}, ...rest: any[]) => {
      const kernelName =
        options && typeof options.name === 'string' ? options.name : null;
      this._starting.set(context, kernelName);
      this._startErrors.delete(context);
      this._contextChanged(context);
      try {
        const kernel = await original.call(context, options, ...rest);
        this._starting.delete(context);
        this._contextChanged(context);
        return kernel;
      } catch (error) {
        this._starting.delete(context);
        this._startErrors.set(context, {
          kernelName,
          message:
            (error as Error)?.message ?? String(error ?? 'Unknown error'),
          traceback: (error as any)?.traceback ?? undefined
        });
        this._contextChanged(context);
        throw error;
      }
    };
  }

  setSessionContext(context: ISessionContext | null): void {
    if (context === this._context) {
      return;
    }
    const old = this._context;
    if (old && !old.isDisposed) {
      old.kernelChanged.disconnect(this._onContextSignal, this);
      old.statusChanged.disconnect(this._onContextSignal, this);
      old.sessionChanged.disconnect(this._onContextSignal, this);
      old.disposed.disconnect(this._onContextDisposed, this);
    }
    this._context = context;
    if (context) {
      this.watch(context);
      context.kernelChanged.connect(this._onContextSignal, this);
      context.statusChanged.connect(this._onContextSignal, this);
      context.sessionChanged.connect(this._onContextSignal, this);
      context.disposed.connect(this._onContextDisposed, this);
    }
    this._kernelError = null;
    this._emit();
    this._schedule(0);
  }

  acquire(consumer: Consumer): IDisposable {
    this._consumers.set(consumer, (this._consumers.get(consumer) ?? 0) + 1);
    this._schedule(0);
    return new DisposableDelegate(() => {
      const count = (this._consumers.get(consumer) ?? 1) - 1;
      if (count > 0) {
        this._consumers.set(consumer, count);
      } else {
        this._consumers.delete(consumer);
      }
    });
  }

  async refresh(): Promise<void> {
    this._images.clear();
    this._probeErrors.clear();
    if (this._panelHeld) {
      void this._checkpoints.poll(this.activeEnvironment?.id ?? null, true);
    }
    await this._update(true);
    this._schedule(this._refreshInterval);
  }

  /**
   * The image status of an environment (cached for a minute).
   */
  async imageStatus(
    envId: string,
    fresh = false
  ): Promise<IImageStatus | null> {
    const cached = this._images.get(envId);
    if (!fresh && cached && Date.now() - cached.at < IMAGE_STATUS_TTL) {
      return cached.status;
    }
    try {
      const status = await this._client.imageStatus(envId);
      this._images.set(envId, { status, at: Date.now() });
      this._engine.answered();
      return status;
    } catch (error) {
      this._engine.failed(error);
      return cached?.status ?? null;
    }
  }

  /**
   * Probe an environment's image now (a throwaway container; the server
   * caches the result by image id). Failures are kept in `probeError`.
   */
  async probe(envId: string): Promise<void> {
    if (this._probing.has(envId)) {
      return;
    }
    this._probing.add(envId);
    this._probeErrors.delete(envId);
    this._emit();
    try {
      this._probes.set(envId, await this._client.probe(envId, true));
    } catch (error) {
      this._probeErrors.set(envId, (error as Error).message);
    } finally {
      this._probing.delete(envId);
      this._emit();
    }
  }

  async switchTo(envId: string): Promise<void> {
    const context = this._context;
    if (!context) {
      throw new Error('No notebook or console is active.');
    }
    const env = this.environment(envId);
    if (!env) {
      throw new Error(`No environment '${envId}' in the catalog.`);
    }
    await context.changeKernel({ name: env.kernel_name });
  }

  /**
   * Derived environments being built now (`build`).
   */
  get building(): ReadonlySet<string> {
    return new Set(
      [...this._builds.values()]
        .filter(b => !isBuildFinished(b))
        .map(b => b.environment)
    );
  }

  /**
   * The builds started from this page, by environment, with their progress
   * (`buildprogress.ts`); a finished one stays until dismissed or built again.
   */
  get builds(): ReadonlyMap<string, IBuildProgress> {
    return this._builds;
  }

  /**
   * Build a derived environment on the server's engine (a build job followed
   * by its events, as pulls are); resolves once it is built and the listing
   * refreshed, rejects with the build's own message when it fails.
   */
  async build(envId: string): Promise<void> {
    const running = this._builds.get(envId);
    if (running && !isBuildFinished(running)) {
      return;
    }
    const client = this._client;
    if (!client.build || !client.followBuild) {
      throw new Error('This server cannot build environments.');
    }
    // Building at once (a second click waits for this one), before the answer.
    const pending: IBuildProgress = {
      buildId: '',
      environment: envId,
      state: 'building',
      step: 'resolve',
      message: null,
      wheels: null,
      image: null,
      seq: 0
    };
    this._builds.set(envId, pending);
    this._emit();
    let job;
    try {
      job = await client.build(envId);
    } catch (error) {
      // Refused before it started (400, 403, 409): the server's message.
      this._builds.set(envId, {
        ...pending,
        state: 'error',
        message: (error as Error).message
      });
      this._emit();
      throw error;
    }
    this._builds.set(envId, buildFromPayload(job));
    this._emit();
    const ended = await this._followBuild(envId, job);
    await this.refresh();
    if (ended.state === 'error') {
      throw new Error(ended.message ?? 'The build failed.');
    }
  }

  /**
   * Forget a finished build (the view's "dismiss").
   */
  clearBuild(envId: string): void {
    if (isBuildFinished(this._builds.get(envId) ?? null)) {
      this._builds.delete(envId);
      this._emit();
    }
  }

  async pull(envId: string): Promise<void> {
    const running = this._pulls.get(envId);
    if (running && !isPullFinished(running)) {
      return;
    }
    const env = this.environment(envId);
    let pull;
    try {
      pull = await this._client.startPull(envId);
    } catch (error) {
      this._pulls.set(envId, {
        pullId: '',
        environment: envId,
        image: env?.image ?? '',
        reference: null,
        state: 'error',
        percent: 0,
        current: 0,
        total: 0,
        layers: 0,
        layersDone: 0,
        message: (error as Error).message,
        digest: null,
        imageId: null,
        seq: 0
      });
      this._emit();
      throw error;
    }
    this._pulls.set(envId, pullFromPayload(pull));
    this._emit();
    this._follow(envId, pull.id);
  }

  async cancelPull(envId: string): Promise<void> {
    const progress = this._pulls.get(envId);
    if (!progress || isPullFinished(progress) || !progress.pullId) {
      return;
    }
    const pull = await this._client.cancelPull(progress.pullId);
    this._onPullEvent(envId, pull.state, pull);
  }

  /**
   * Forget a finished pull (the view's "dismiss").
   */
  clearPull(envId: string): void {
    const progress = this._pulls.get(envId);
    if (progress && isPullFinished(progress)) {
      this._pulls.delete(envId);
      this._emit();
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    for (const follower of this._followers.values()) {
      follower.dispose();
    }
    this._followers.clear();
    this._checkpoints.dispose();
    this.setSessionContext(null);
    Signal.clearData(this);
  }

  // -------------------------------------------------------------- internals

  private _onContextSignal(): void {
    if (this._context) {
      this._contextChanged(this._context);
    }
  }

  private _onContextDisposed(): void {
    this.setSessionContext(null);
  }

  private _contextChanged(context: ISessionContext): void {
    if (context !== this._context || this._isDisposed) {
      return;
    }
    const id = this.activeKernelId;
    if (
      this._kernelStatus &&
      (this._kernelStatus.kernel_id !== id || this._isRestarting())
    ) {
      // Another kernel, or the same one in a new container: read it again.
      this._kernelStatus = null;
      this._kernelError = null;
    }
    // Switched to the environment with the recorded bits: nothing to tell.
    const verdict = this._provenance.get(context);
    if (
      verdict &&
      id &&
      verdict.candidate &&
      this.activeEnvironment?.id === verdict.candidate
    ) {
      this._provenance.delete(context);
    }
    this._emit();
    this._schedule(0);
  }

  private get _live(): boolean {
    return this._consumers.size > 0;
  }

  /**
   * Whether the panel is shown (it holds a lease only while visible).
   */
  private get _panelHeld(): boolean {
    return (this._consumers.get('panel') ?? 0) > 0;
  }

  private _schedule(delay: number): void {
    if (this._isDisposed || this._extensionMissing) {
      return;
    }
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    if (delay > 0 && !this._live) {
      return;
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this._tick();
    }, delay);
  }

  private async _tick(): Promise<void> {
    if (this._ticking) {
      this._again = true;
      return;
    }
    this._ticking = true;
    try {
      if (!this._isHidden() || this._environments === null) {
        await this._update(false);
      }
    } finally {
      this._ticking = false;
    }
    if (this._again) {
      this._again = false;
      this._schedule(0);
    } else if (this._live && this._refreshInterval > 0) {
      this._schedule(this._refreshInterval);
    }
  }

  private async _update(force: boolean): Promise<void> {
    if (this._isDisposed) {
      return;
    }
    const panel = force || this._panelHeld;
    if (this._panelHeld) {
      void this._checkpoints.poll(this.activeEnvironment?.id ?? null, false);
    }
    if (this._environments === null || panel) {
      await this._fetchEnvironments();
    }
    if (this._extensionMissing) {
      this._emit();
      return;
    }
    if (!this._resumed && this._environments !== null) {
      this._resumed = true;
      await this._resumePulls();
      await this._resumeBuilds();
    }
    const env = this.activeEnvironment;
    const kernelId = this.activeKernelId;
    const more: Promise<void>[] = [];
    if (panel || (env && wantsGpu(env) && this._live)) {
      more.push(this._fetchGpus());
    }
    if (env && (this._live || force)) {
      if (kernelId) {
        more.push(this._fetchKernel(kernelId));
      } else if (!this._probes.has(env.id)) {
        more.push(this._cachedProbe(env.id));
      }
      if (panel) {
        more.push(this.imageStatus(env.id).then(() => undefined));
      }
    }
    await Promise.all(more);
    this._engine.settled();
    this._maybeProbe();
    if (this._panelHeld) {
      // The active environment may be known only now (the catalog, the
      // kernel status); the kernel status says which others it mounted.
      void this._checkpoints.poll(this.activeEnvironment?.id ?? null, false);
      void this._checkpoints.pollOthers(this.kernelStatus, force);
    }
    this._emit();
  }

  private async _fetchEnvironments(): Promise<void> {
    try {
      const reply = await this._client.environments();
      this._environments = reply.environments;
      this._problems = reply.problems;
      this._pullCapability = reply.pulls ?? { allowed: true, message: null };
      this._filesWarning = reply.files ?? null;
      this._engineState = normalizeEngine(reply.engine);
      this._environmentsError = null;
      this._extensionMissing = false;
      this._unreachable = null;
      this._engine.listed(reply.environments);
    } catch (error) {
      if (error instanceof TfEnvApiError && error.status === 404) {
        this._extensionMissing = true;
      }
      this._noteUnreachable(error);
      this._engine.failed(error);
      this._environmentsError = (error as Error).message;
    }
    this._ready.resolve();
  }

  private async _fetchGpus(): Promise<void> {
    try {
      this._gpus = await this._client.gpus();
      this._gpusError = null;
    } catch (error) {
      this._gpusError = (error as Error).message;
      this._engine.failed(error);
    }
  }

  private async _fetchKernel(kernelId: string): Promise<void> {
    try {
      const status = await this._client.kernel(kernelId);
      this._unreachable = null;
      this._engine.answered();
      if (kernelId === this.activeKernelId && !this._isRestarting()) {
        this._kernelStatus = status;
        this._kernelError = null;
      }
    } catch (error) {
      this._noteUnreachable(error);
      this._engine.failed(error);
      if (kernelId === this.activeKernelId) {
        this._kernelError = (error as Error).message;
      }
    }
  }

  /**
   * A request that got no answer at all (`TfEnvApiError` without a status:
   * the server stopped, or the network is down).
   */
  private _noteUnreachable(error: unknown): void {
    if (error instanceof TfEnvApiError && error.status === null) {
      this._unreachable = error.message || 'The server did not answer.';
    }
  }

  private _isRestarting(): boolean {
    const status = this._context?.kernelDisplayStatus;
    return status === 'restarting' || status === 'autorestarting';
  }

  private async _cachedProbe(envId: string): Promise<void> {
    try {
      const probe = await this._client.probe(envId, false);
      if (probe && probe.state !== 'not_probed') {
        this._probes.set(envId, probe);
      }
    } catch {
      // Only a hint while no kernel runs; the kernel status brings it later.
    }
  }

  /**
   * Probe the active environment's image once when the running kernel's
   * status came without a cached probe (a throwaway container, seconds).
   */
  private _maybeProbe(): void {
    const env = this.activeEnvironment;
    const status = this.kernelStatus;
    if (
      !env ||
      !status ||
      status.probe ||
      this._probes.has(env.id) ||
      this._probing.has(env.id) ||
      this._probeErrors.has(env.id) ||
      !status.live?.running
    ) {
      return;
    }
    void this.probe(env.id);
  }

  /**
   * Follow a build's events until it ends (its progress in `builds`).
   */
  private _followBuild(envId: string, job: IBuild): Promise<IBuildProgress> {
    const client = this._client;
    return new Promise<IBuildProgress>(resolve => {
      const follower = client.followBuild!(job.id, {
        onEvent: (type, data) => {
          const next = reduceBuildEvent(
            this._builds.get(envId) ?? null,
            type,
            data
          );
          if (next) {
            this._builds.set(envId, next);
            this._emit();
            if (isBuildFinished(next)) {
              follower.dispose();
              resolve(next);
            }
          }
        },
        onFailure: error => {
          const prev = this._builds.get(envId) ?? buildFromPayload(job);
          const next: IBuildProgress = {
            ...prev,
            state: 'error',
            message: `Lost track of the build: ${error.message}`
          };
          this._builds.set(envId, next);
          this._emit();
          resolve(next);
        }
      });
    });
  }

  /**
   * Builds running on the server when the page (re)loads: shown and followed
   * as those started here; the listing is read again when each ends.
   */
  private async _resumeBuilds(): Promise<void> {
    const client = this._client;
    if (!client.listBuilds || !client.followBuild) {
      return;
    }
    let builds;
    try {
      builds = await client.listBuilds();
    } catch {
      return;
    }
    for (const job of builds) {
      if (job.state === 'building' && !this._builds.has(job.environment)) {
        this._builds.set(job.environment, buildFromPayload(job));
        void this._followBuild(job.environment, job).then(() => this.refresh());
      }
    }
    this._emit();
  }

  private async _resumePulls(): Promise<void> {
    let pulls;
    try {
      pulls = await this._client.listPulls();
    } catch {
      return;
    }
    for (const pull of pulls) {
      if (pull.state === 'pulling' && !this._followers.has(pull.environment)) {
        this._pulls.set(pull.environment, pullFromPayload(pull));
        this._follow(pull.environment, pull.id);
      }
    }
  }

  private _follow(envId: string, pullId: string): void {
    this._followers.get(envId)?.dispose();
    const follower = this._client.followPull(pullId, {
      onEvent: (type, data) => this._onPullEvent(envId, type, data),
      onFailure: error => {
        const progress = this._pulls.get(envId);
        if (progress && !isPullFinished(progress)) {
          this._pulls.set(envId, {
            ...progress,
            message: error.message
          });
          this._emit();
        }
        this._followers.delete(envId);
      }
    });
    this._followers.set(envId, follower);
  }

  private _onPullEvent(envId: string, type: string, data: any): void {
    const prev = this._pulls.get(envId) ?? null;
    if (prev && data?.pull_id && prev.pullId && data.pull_id !== prev.pullId) {
      return;
    }
    const next = reducePullEvent(prev, type, data);
    if (!next || next === prev) {
      return;
    }
    this._pulls.set(envId, next);
    if (isPullFinished(next)) {
      const context = this._context;
      const error = context ? this._startErrors.get(context) : undefined;
      if (
        next.state === 'done' &&
        context &&
        error &&
        error.kernelName === this.environment(envId)?.kernel_name
      ) {
        // The image it lacked is here now: the old error no longer applies.
        this._startErrors.delete(context);
      }
      this._followers.get(envId)?.dispose();
      this._followers.delete(envId);
      this._images.delete(envId);
      this._probeErrors.delete(envId);
      this._pullEnded.emit(next);
      void this._fetchEnvironments().then(() => this._emit());
    }
    this._emit();
  }

  private _derive(): IPanelState {
    const context = this._context;
    const env = this.activeEnvironment;
    const kernelPresent =
      env && this._environments
        ? (this.environment(env.id)?.image_status?.present ?? null)
        : null;
    return deriveState({
      extensionMissing: this._extensionMissing,
      hasSession: context !== null && !context.isDisposed,
      kernelName: this.activeKernelName,
      environment: env,
      kernelId: this.activeKernelId,
      displayStatus: context?.kernelDisplayStatus ?? 'unknown',
      starting: context !== null && this._starting.has(context),
      startError: this.startError,
      kernelStatus: this.kernelStatus,
      kernelError: this._kernelError,
      serverUnreachable: this._unreachable,
      engineUnreachable: this._engine.current,
      probe: this.activeProbe,
      probing: this.probing,
      probeError: this.probeError,
      imagePresent: this.activeImage?.present ?? kernelPresent,
      gpus: this._gpus
    });
  }

  private _emit(): void {
    if (this._isDisposed) {
      return;
    }
    this._state = this._derive();
    this._changed.emit();
  }

  private _client: ITfEnvClient;
  private _specEnvironment: (name: string) => IEnvironmentSummary | null;
  private _refreshInterval: number;
  private _isHidden: () => boolean;
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
  private _pullEnded = new Signal<this, IPullProgress>(this);
  private _ready = new Deferred();
  private _environments: IEnvironment[] | null = null;
  private _problems: ICatalogProblem[] = [];
  private _pullCapability: IPullCapability = { allowed: true, message: null };
  private _filesWarning: IFilesWarning | null = null;
  private _engineState: IEngineState | null = null;
  private _environmentsError: string | null = null;
  private _extensionMissing = false;
  private _gpus: IGpuOverview | null = null;
  private _gpusError: string | null = null;
  private _gpusRequest: Promise<void> | null = null;
  private _context: ISessionContext | null = null;
  private _watched = new WeakSet<ISessionContext>();
  private _starting = new WeakMap<ISessionContext, string | null>();
  private _startErrors = new WeakMap<ISessionContext, IStartError>();
  private _provenance = new WeakMap<ISessionContext, IProvenanceVerdict>();
  private _kernelStatus: IKernelStatus | null = null;
  private _kernelError: string | null = null;
  private _unreachable: string | null = null;
  private _engine = new EngineOutage();
  private _probes = new Map<string, IProbe>();
  private _probing = new Set<string>();
  private _probeErrors = new Map<string, string>();
  private _images = new Map<string, { status: IImageStatus; at: number }>();
  private _pulls = new Map<string, IPullProgress>();
  private _builds = new Map<string, IBuildProgress>();
  private _followers = new Map<string, IDisposable>();
  private _consumers = new Map<Consumer, number>();
  private _checkpoints: CheckpointListing;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _ticking = false;
  private _again = false;
  private _resumed = false;
  private _state: IPanelState;
}

/**
 * A promise with its resolver (resolves once).
 */
class Deferred {
  constructor() {
    this.promise = new Promise<void>(resolve => {
      this._resolve = resolve;
    });
  }
  readonly promise: Promise<void>;
  resolve(): void {
    this._resolve();
  }
  private _resolve: () => void = () => undefined;
}

/**
 * The model's statics.
 */
export namespace TfEnvModel {
  /**
   * Options of the model.
   */
  export interface IOptions {
    client: ITfEnvClient;
    /**
     * The tfenv environment of a kernelspec (its `metadata.tfenv`), so the
     * status bar knows a kernel before the catalog answered.
     */
    specEnvironment?: (kernelName: string) => IEnvironmentSummary | null;
    /**
     * Polling interval in ms (default 5000; 0: no periodic refresh).
     */
    refreshInterval?: number;
    /**
     * Whether the page is hidden (polling pauses); default `document.hidden`.
     */
    isHidden?: () => boolean;
  }
}
