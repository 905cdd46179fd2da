/**
 * Resources chosen at launch (docs/choices.md): what an environment offers,
 * what a notebook recorded (`metadata.tfenv.choices`), what the dialog
 * preselects. Pure functions: no JupyterLab imports, so that jest tests them
 * directly.
 */

import type { IChoiceRequest, IChoices, ChoiceValue } from './api';
import type { ITrans } from './state';

/**
 * The resources an entry may offer, in the order the dialog shows them.
 */
export const CHOICE_KEYS = ['gpus', 'memory', 'cpus', 'shm_size'] as const;

/**
 * One value per offered resource.
 */
export type ChoiceValues = { [key: string]: ChoiceValue };

/**
 * `metadata.tfenv.choices`: the environment the values are for, and the
 * values.
 */
export interface IRecordedChoice {
  environment: string;
  values: ChoiceValues;
}

const UNITS: { [unit: string]: number } = {
  '': 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4
};

/**
 * A choice's value as a number (sizes in bytes), for comparisons; null when it
 * is not one.
 */
export function choiceAmount(key: string, value: unknown): number | null {
  if (typeof value === 'number') {
    return Number.isFinite(value) ? value : null;
  }
  if (typeof value !== 'string') {
    return null;
  }
  if (key === 'memory' || key === 'shm_size') {
    const match = /^([0-9]+(?:\.[0-9]+)?)([bkmgt]?)$/i.exec(value.trim());
    return match
      ? Math.floor(parseFloat(match[1]) * UNITS[match[2].toLowerCase()])
      : null;
  }
  const number = Number(value);
  return value.trim() !== '' && Number.isFinite(number) ? number : null;
}

/**
 * The offered value equal to `value` (`"8G"` is `8g`), or null.
 */
export function matchChoice(
  choices: IChoices,
  key: string,
  value: unknown
): ChoiceValue | null {
  const wanted = choiceAmount(key, value);
  if (wanted === null) {
    return null;
  }
  const offered = choices.options[key] ?? [];
  return offered.find(option => choiceAmount(key, option) === wanted) ?? null;
}

/**
 * Resource names in the dialog's order (unknown ones last).
 */
export function orderedKeys(keys: string[]): string[] {
  const known = CHOICE_KEYS.filter(key => keys.includes(key));
  const other = keys.filter(
    key => !(CHOICE_KEYS as readonly string[]).includes(key)
  );
  return [...known, ...other];
}

/**
 * The offered resources in the dialog's order.
 */
export function offeredKeys(choices: IChoices): string[] {
  return orderedKeys(Object.keys(choices.options));
}

/**
 * Read `metadata.tfenv.choices`; null when absent or malformed.
 */
export function readRecordedChoice(tfenv: unknown): IRecordedChoice | null {
  if (!tfenv || typeof tfenv !== 'object' || Array.isArray(tfenv)) {
    return null;
  }
  const choice = (tfenv as { choices?: unknown }).choices;
  if (!choice || typeof choice !== 'object' || Array.isArray(choice)) {
    return null;
  }
  const { environment, values } = choice as {
    environment?: unknown;
    values?: unknown;
  };
  if (
    typeof environment !== 'string' ||
    !values ||
    typeof values !== 'object' ||
    Array.isArray(values)
  ) {
    return null;
  }
  const kept: ChoiceValues = {};
  for (const [key, value] of Object.entries(values)) {
    if (typeof value === 'string' || typeof value === 'number') {
      kept[key] = value;
    }
  }
  return { environment, values: kept };
}

/**
 * What the dialog preselects for `envId`: per offered resource the value the
 * notebook recorded for this environment when it is still offered, else the
 * entry's default.
 */
export function preselectedChoice(
  envId: string,
  choices: IChoices,
  recorded: IRecordedChoice | null
): ChoiceValues {
  const values: ChoiceValues = {};
  const mine = recorded?.environment === envId ? recorded.values : {};
  for (const key of offeredKeys(choices)) {
    const kept = key in mine ? matchChoice(choices, key, mine[key]) : null;
    const fallback = choices.default[key] ?? choices.options[key]?.[0];
    if (kept !== null) {
      values[key] = kept;
    } else if (fallback !== undefined) {
      values[key] = fallback;
    }
  }
  return values;
}

/**
 * `metadata.tfenv` with the choice for `envId` recorded, every other field
 * (the provenance: image, digest, ...) kept.
 */
export function withRecordedChoice(
  tfenv: unknown,
  envId: string,
  values: ChoiceValues
): { [key: string]: unknown } {
  const base =
    tfenv && typeof tfenv === 'object' && !Array.isArray(tfenv)
      ? { ...(tfenv as { [key: string]: unknown }) }
      : {};
  return { ...base, choices: { environment: envId, values: { ...values } } };
}

/**
 * How a value reads in the dialog: `0` GPUs is "no GPU", sizes in binary
 * units ("16 GiB"), CPUs counted.
 */
export function choiceText(
  key: string,
  value: ChoiceValue,
  trans: ITrans
): string {
  if (key === 'gpus') {
    const n = Number(value);
    return n === 0 ? trans.__('no GPU') : trans._n('%1 GPU', '%1 GPUs', n);
  }
  if (key === 'memory' || key === 'shm_size') {
    const amount = choiceAmount(key, value);
    if (amount !== null) {
      for (const [unit, size] of [
        ['TiB', 1024 ** 4],
        ['GiB', 1024 ** 3],
        ['MiB', 1024 ** 2]
      ] as const) {
        if (amount >= size && amount % (size / 1024) === 0) {
          const n = amount / size;
          return `${Number.isInteger(n) ? n : n.toFixed(1)} ${unit}`;
        }
      }
    }
    return String(value);
  }
  if (key === 'cpus') {
    return trans._n('%1 CPU', '%1 CPUs', Number(value));
  }
  return String(value);
}

/**
 * A short summary for a tooltip or a log line: "2 GPUs, 16 GiB, 4 CPUs".
 */
export function choiceSummary(values: ChoiceValues, trans: ITrans): string {
  return orderedKeys(Object.keys(values))
    .map(key => choiceText(key, values[key], trans))
    .join(', ');
}

/**
 * `next` (a new provenance record) with the choice `old` (the notebook's
 * `metadata.tfenv` before) recorded, so that recording the provenance keeps
 * it.
 */
export function keepRecordedChoice(
  old: unknown,
  next: { [key: string]: unknown }
): { [key: string]: unknown } {
  const choice = readRecordedChoice(old);
  return choice
    ? withRecordedChoice(next, choice.environment, choice.values)
    : next;
}

/**
 * Where a choice is kept for its kernel start (`POST /tfenv/choices`): a
 * notebook by its path; a console, which has no file, by its session's path
 * and name (the server keeps it under the name jupyter_server gives the
 * kernel: `name` in the folder of `path`).
 */
export interface IChoiceTarget {
  path: string;
  /**
   * The console session's name ("Console 1"); absent for a notebook.
   */
  name?: string;
}

/**
 * The body of `POST /tfenv/choices` for `target`.
 */
export function choiceRequest(
  target: IChoiceTarget,
  envId: string,
  values: ChoiceValues
): IChoiceRequest {
  return {
    path: target.path,
    ...(target.name !== undefined ? { name: target.name } : {}),
    environment: envId,
    choices: { ...values }
  };
}

/**
 * The choices made in this page's consoles (a console has no file to record
 * them in): per console session path, and the last one per environment, which
 * a console that chose nothing for that environment yet preselects.
 */
export class ConsoleChoices {
  /**
   * Keep what console `path` chose for `envId`.
   */
  remember(path: string, envId: string, values: ChoiceValues): void {
    const choice = { environment: envId, values: { ...values } };
    this._byConsole.set(`${path}\n${envId}`, choice);
    this._lastByEnv.set(envId, choice);
  }

  /**
   * What console `path` chose for `envId`, else the last choice any console
   * made for it, else null.
   */
  recorded(path: string, envId: string): IRecordedChoice | null {
    return (
      this._byConsole.get(`${path}\n${envId}`) ??
      this._lastByEnv.get(envId) ??
      null
    );
  }

  /**
   * Drop console `path`'s choices (it was closed); the last per environment
   * stay.
   */
  forget(path: string): void {
    for (const key of Array.from(this._byConsole.keys())) {
      if (key.startsWith(`${path}\n`)) {
        this._byConsole.delete(key);
      }
    }
  }

  private _byConsole = new Map<string, IRecordedChoice>();
  private _lastByEnv = new Map<string, IRecordedChoice>();
}
