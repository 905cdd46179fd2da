import type { TranslationBundle } from '@jupyterlab/translation';

import type { IKernelStatus, ILastRestart } from './api/kernels';

/**
 * Where the restarts already told are remembered across reloads (best
 * effort: a browser without storage tells a restart again after a reload).
 */
export interface INoticeStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/**
 * The storage key of the restarts already told.
 */
export const TOLD_KEY = 'jupyter-tfenv:restarts-told';

/**
 * How many told restarts are remembered (the oldest are forgotten).
 */
const KEEP = 50;

/**
 * Tells each restart of a kernel that tfenv restarted for a reason (the
 * Docker engine restarted under it) once: `seen()` takes every kernel status
 * the model reads and calls `notify` for a `last_restart` not told before.
 */
export class RestartNotices {
  constructor(options: RestartNotices.IOptions) {
    this._notify = options.notify;
    this._storage = options.storage ?? null;
    this._told = this._load();
  }

  /**
   * A kernel status the model read (null: none).
   */
  seen(status: IKernelStatus | null | undefined): void {
    const restart = status?.last_restart;
    if (!status || !restart || !restart.message) {
      return;
    }
    const key = restartKey(status.kernel_id, restart);
    if (this._told.includes(key)) {
      return;
    }
    this._told = [...this._told, key].slice(-KEEP);
    this._save();
    this._notify(restart, status.kernel_id);
  }

  private _load(): string[] {
    try {
      const raw = this._storage?.getItem(TOLD_KEY);
      const value: unknown = raw ? JSON.parse(raw) : [];
      return Array.isArray(value)
        ? value.filter((k): k is string => typeof k === 'string')
        : [];
    } catch {
      return [];
    }
  }

  private _save(): void {
    try {
      this._storage?.setItem(TOLD_KEY, JSON.stringify(this._told));
    } catch {
      // A full or refused storage: told again after a reload, no more.
    }
  }

  private _notify: RestartNotices.Notify;
  private _storage: INoticeStorage | null;
  private _told: string[];
}

/**
 * One restart: the kernel and when.
 */
export function restartKey(kernelId: string, restart: ILastRestart): string {
  return `${kernelId} ${restart.reason} ${restart.at}`;
}

export namespace RestartNotices {
  export type Notify = (restart: ILastRestart, kernelId: string) => void;

  export interface IOptions {
    notify: Notify;
    storage?: INoticeStorage | null;
  }
}

/**
 * The browser's localStorage, or null where it cannot be used.
 */
export function browserStorage(): INoticeStorage | null {
  try {
    return typeof window !== 'undefined' ? window.localStorage : null;
  } catch {
    return null;
  }
}

/**
 * A JupyterLab toast shows 140 characters: the restart in a few words, the
 * time in the browser's clock (the server's full message, with what an admin
 * can do, is in the panel's kernel section).
 */
export function restartToast(
  restart: ILastRestart,
  trans: Pick<TranslationBundle, '__'>
): string {
  const at = new Date(restart.at);
  if (restart.reason !== 'engine-restart' || isNaN(at.getTime())) {
    return restart.message.length > 140
      ? `${restart.message.slice(0, 139)}…`
      : restart.message;
  }
  const hhmm = at.toLocaleTimeString([], {
    hour: '2-digit',
    minute: '2-digit',
    hour12: false
  });
  return trans.__(
    'Docker engine restarted at %1: kernel restarted in a new container, variables lost; checkpoints in $TFENV_CHECKPOINT_DIR kept.',
    hhmm
  );
}
