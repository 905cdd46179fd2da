import type { TranslationBundle } from '@jupyterlab/translation';

import type { TfEnvModel } from '../model';

/**
 * What the panel needs besides the model.
 */
export interface IPanelActions {
  /**
   * Switch the active session to an environment.
   */
  switchTo(envId: string): void;
  pull(envId: string): void;
  cancelPull(envId: string): void;
  /**
   * Build a derived environment (local mode).
   */
  build(envId: string): void;
  /**
   * Compare an environment with another one the user picks (`compare.tsx`).
   */
  compare?(envId: string): void;
  /**
   * Open the environment's TensorBoard in a main-area tab.
   */
  tensorboard?(envId: string): void;
  /**
   * Open one TensorBoard over every environment's logs.
   */
  compareTensorBoards?(): void;
  refresh(): void;
  /**
   * Restart the active kernel.
   */
  restart(): void;
  /**
   * Keep the current environment despite the provenance notice.
   */
  keepCurrent(): void;
}

export interface IViewProps {
  model: TfEnvModel;
  actions: IPanelActions;
  trans: TranslationBundle;
}
