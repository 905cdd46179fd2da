import type { ICheckpointItem } from './api';

/**
 * The checkpoint root inside every tfenv container (`TFENV_CHECKPOINT_DIR`).
 */
export const CONTAINER_CHECKPOINT_DIR = '/tfenv/checkpoints';

/**
 * Short badge text of a checkpoint kind (not translated: these are format names).
 */
export function checkpointKindLabel(kind: string): string {
  switch (kind) {
    case 'tf_checkpoint_set':
      return 'TF set';
    case 'tf_checkpoint':
      return 'TF';
    case 'saved_model':
      return 'SavedModel';
    case 'keras':
      return 'Keras';
    case 'keras_weights':
      return 'weights.h5';
    case 'keras_h5':
      return 'HDF5';
    case 'partial':
      return 'partial';
    default:
      return kind;
  }
}

/**
 * The step shown for an item: its latest checkpoint's, else its own.
 */
export function checkpointStep(item: ICheckpointItem): number | null {
  const step = item.latest?.step ?? item.step;
  return typeof step === 'number' && Number.isFinite(step) ? step : null;
}

/**
 * Is the item incomplete (a partial save, a missing shard)? `null`
 * (not known) counts as complete.
 */
export function isIncomplete(item: ICheckpointItem): boolean {
  return item.kind === 'partial' || item.complete === false;
}

function time(mtime: string | null | undefined): number {
  const t = mtime ? Date.parse(mtime) : NaN;
  return Number.isFinite(t) ? t : -Infinity;
}

/**
 * Newest first (by modification time), then by name; partial saves last.
 */
export function sortCheckpoints(items: ICheckpointItem[]): ICheckpointItem[] {
  return [...items].sort((a, b) => {
    const pa = a.kind === 'partial' ? 1 : 0;
    const pb = b.kind === 'partial' ? 1 : 0;
    if (pa !== pb) {
      return pa - pb;
    }
    const dt = time(b.mtime) - time(a.mtime);
    if (dt !== 0 && !Number.isNaN(dt)) {
      return dt;
    }
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
}

/**
 * A compact local time ("2026-11-25 13:05"), `—` when unknown.
 */
export function formatCheckpointTime(mtime: string | null | undefined): string {
  const t = time(mtime);
  if (!Number.isFinite(t)) {
    return '—';
  }
  const d = new Date(t);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}`
  );
}

/**
 * The name to show: the item's `path` (folder, prefix or file), else its name.
 */
export function checkpointLabel(item: ICheckpointItem): string {
  return item.path || item.name;
}
