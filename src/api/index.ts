/**
 * The REST API of the jupyter_tfenv server extension: the shapes of its
 * answers (one file per resource), its error, and the client interface. The
 * client itself is `request.ts` (imported directly: it needs the JupyterLab
 * services).
 */
export * from './builds';
export * from './checkpoints';
export * from './choices';
export * from './client';
export * from './environments';
export * from './errors';
export * from './gpus';
export * from './kernels';
export * from './pulls';
export * from './tensorboards';
