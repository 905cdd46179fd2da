// A hint where the user hits the wall (issue 21 item 5): a ModuleNotFoundError
// in a tfenv kernel points at the catalog's `pip` field once per environment
// and module. Pure: the plugin (plugins/modulehint.ts) shows what this returns.

import type { ITrans } from './state';

/**
 * The kernelspec prefix of tfenv kernels.
 */
const PREFIX = 'tfenv-';

/**
 * The top-level module of a ModuleNotFoundError's value: `No module named
 * 'pandas.core'` → `pandas`; null when the value says no name.
 */
export function missingModule(evalue: string): string | null {
  const match = /No module named ['"]([^'"]+)['"]/.exec(evalue);
  if (!match) {
    return null;
  }
  return match[1].split('.')[0] || null;
}

/**
 * The hint for an error reply of kernel `kernelName`, with the key that
 * says whether it was shown already; null when there is none to give (not
 * a tfenv kernel, not a ModuleNotFoundError).
 */
export function moduleHint(
  kernelName: string | null | undefined,
  ename: string,
  evalue: string,
  trans: ITrans
): { key: string; text: string; detail: string } | null {
  if (!kernelName?.startsWith(PREFIX) || ename !== 'ModuleNotFoundError') {
    return null;
  }
  const module = missingModule(evalue);
  if (!module) {
    return null;
  }
  const envId = kernelName.slice(PREFIX.length);
  return {
    key: `${envId}:${module}`,
    // Short: JupyterLab cuts notifications at 140 characters.
    text: trans.__(
      "No '%1' in '%2': kernels cannot pip install. Add %1==<version> to the catalog's pip.",
      module,
      envId
    ),
    detail: trans.__(
      "'%1' is not in the environment '%2', and a kernel cannot install it (no network, and the image is shared by everyone who uses it). Ask for it in the catalog: a derived environment with base: %2 and pip: [<package>==<version>], built by `jupyter tfenv build` (docs/building.md).",
      module,
      envId
    )
  };
}
