// Derived environments (docs/building.md): a base plus pinned pip packages,
// built by `jupyter tfenv build`. Pure helpers for the panel's environment row.

import type { IEnvironmentSummary } from './api';
import type { ITrans } from './state';

/**
 * "six 1.16.0 · tomli 2.0.1": the packages a derived environment adds, at
 * their pinned versions; null for a plain image.
 */
export function derivedPackagesText(env: IEnvironmentSummary): string | null {
  const derived = env.derived;
  if (!derived || derived.packages.length === 0) {
    return null;
  }
  return derived.packages.map(p => `${p.name} ${p.version}`).join(' · ');
}

/**
 * What the row says of a derived environment whose image is not on the
 * engine: it is built (or pulled once pushed), never pulled from a tag alone.
 * `canBuild`: this server's user runs the engine (local mode); in a
 * JupyterHub an admin builds and pushes.
 */
export function notBuiltText(
  env: IEnvironmentSummary,
  canBuild: boolean,
  trans: ITrans
): string {
  return canBuild
    ? trans.__(
        "Not built yet: run `jupyter tfenv build %1` on the server's host (or `jupyter tfenv pull %1` once it was pushed and locked).",
        env.id
      )
    : trans.__(
        'Not built yet: ask your admin to run `jupyter tfenv build %1 --push` and pull it on the host.',
        env.id
      );
}
