import type { IDisposable } from '@lumino/disposable';

import type { IBuild } from './builds';
import type { ICheckpointListing } from './checkpoints';
import type { IEnvironmentsReply, IImageStatus, IProbe } from './environments';
import type { IGpuOverview } from './gpus';
import type { IKernelStatus } from './kernels';
import type { IPull, IPullFollower } from './pulls';
import type {
  ILogListing,
  ITensorBoard,
  TensorBoardTarget
} from './tensorboards';

/**
 * The REST client the model talks to (see `TfEnvClient` in `request.ts`).
 */
export interface ITfEnvClient {
  environments(): Promise<IEnvironmentsReply>;
  imageStatus(envId: string): Promise<IImageStatus>;
  /**
   * The cached probe (`run: false`, never starts a container) or a probe run
   * now (`run: true`, a throwaway container; cached by image id).
   */
  probe(envId: string, run: boolean): Promise<IProbe>;
  startPull(envId: string): Promise<IPull>;
  getPull(pullId: string): Promise<IPull>;
  listPulls(): Promise<IPull[]>;
  cancelPull(pullId: string): Promise<IPull>;
  /**
   * Start building a derived environment (docs/building.md) on the server's
   * engine: the build job (the one running already, if any). Absent from
   * clients that cannot build.
   */
  build?(envId: string): Promise<IBuild>;
  /**
   * Follow a build's server-sent events (falling back to polling
   * `GET /tfenv/builds/{id}`), as {@link followPull}; dispose to stop
   * following (the build goes on).
   */
  followBuild?(buildId: string, follower: IPullFollower): IDisposable;
  /**
   * The server's builds (running, and the last finished ones).
   */
  listBuilds?(): Promise<IBuild[]>;
  kernel(kernelId: string): Promise<IKernelStatus>;
  gpus(): Promise<IGpuOverview>;
  /**
   * Follow a pull's server-sent events (falling back to polling); dispose to
   * stop following (the pull goes on).
   */
  followPull(pullId: string, follower: IPullFollower): IDisposable;
  /**
   * The user's checkpoints of an environment.
   */
  checkpoints?(envId: string): Promise<ICheckpointListing>;
  /**
   * Delete a checkpoint item; `etag` as listed (sent as `If-Match`).
   */
  deleteCheckpoint?(
    envId: string,
    name: string,
    etag: string
  ): Promise<unknown>;
  /**
   * Start (or reuse) the user's TensorBoard of an environment or of the
   * comparison view: `POST /tfenv/tensorboards` (202 starting, 200 reused).
   */
  startTensorBoard?(target: TensorBoardTarget): Promise<ITensorBoard>;
  /**
   * One TensorBoard by name (`env-<id>`, `compare`): poll it while starting.
   */
  getTensorBoard?(name: string): Promise<ITensorBoard>;
  /**
   * The user's TensorBoards.
   */
  listTensorBoards?(): Promise<ITensorBoard[]>;
  /**
   * Stop a TensorBoard (`DELETE /tfenv/tensorboards/{name}`).
   */
  stopTensorBoard?(name: string): Promise<unknown>;
  /**
   * The runs of an environment's log folder.
   */
  logRuns?(envId: string): Promise<ILogListing>;
  /**
   * Delete one log run; `etag` as listed (sent as `If-Match`).
   */
  deleteLogRun?(envId: string, run: string, etag: string): Promise<unknown>;
}
