import type { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { cellExecutorPlugin } from './plugins/cellexecutor';
import { choicesPlugin } from './plugins/choices';
import { commandsPlugin } from './plugins/commands';
import { kernelPickerPlugin } from './plugins/kernelpicker';
import { launcherPlugin } from './plugins/launcher';
import { modelPlugin } from './plugins/model';
import { moduleHintPlugin } from './plugins/modulehint';
import { panelPlugin } from './plugins/panel';
import { provenancePlugin } from './plugins/provenance';
import { statusPlugin } from './plugins/status';
import { tensorBoardPlugin } from './plugins/tensorboard';

export * from './api';
export * from './cellexecutor';
export * from './choices';
export * from './format';
export * from './kernelpicker';
export { TfEnvModel } from './model';
export * from './provenance';
export * from './pullprogress';
export { requestAPI, TfEnvClient, normalizeEnvironments } from './api/request';
export * from './state';
export * from './tensorboard';
export * from './tokens';

/**
 * The extension's plugins: `jupyter-tfenv:model`, `:panel`, `:status`,
 * `:commands`, `:provenance`, `:launcher`, `:kernel-picker`,
 * `:cell-executor`, `:choices`, `:module-hint` and `:tensorboard`.
 */
const plugins: JupyterFrontEndPlugin<any>[] = [
  modelPlugin,
  panelPlugin,
  statusPlugin,
  commandsPlugin,
  provenancePlugin,
  launcherPlugin,
  kernelPickerPlugin,
  cellExecutorPlugin,
  choicesPlugin,
  moduleHintPlugin,
  tensorBoardPlugin
];

export default plugins;
