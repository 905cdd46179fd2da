import {
  checkpointKindLabel,
  checkpointLabel,
  checkpointStep,
  formatCheckpointTime,
  isIncomplete,
  sortCheckpoints
} from '../checkpoints';
import type { ICheckpointItem } from '../api';

function item(partial: Partial<ICheckpointItem>): ICheckpointItem {
  return { name: 'x', kind: 'keras', etag: 'e', ...partial };
}

describe('checkpointKindLabel', () => {
  it.each([
    ['tf_checkpoint_set', 'TF set'],
    ['tf_checkpoint', 'TF'],
    ['saved_model', 'SavedModel'],
    ['keras', 'Keras'],
    ['keras_weights', 'weights.h5'],
    ['keras_h5', 'HDF5'],
    ['partial', 'partial'],
    ['something_new', 'something_new']
  ])('%p → %p', (kind, label) => {
    expect(checkpointKindLabel(kind)).toBe(label);
  });
});

describe('checkpointStep', () => {
  it('prefers the latest checkpoint step', () => {
    expect(
      checkpointStep(
        item({ step: 1, latest: { prefix: 'run1/ckpt-3', step: 3 } })
      )
    ).toBe(3);
  });
  it('falls back to the item step, or null', () => {
    expect(checkpointStep(item({ step: 7 }))).toBe(7);
    expect(checkpointStep(item({ step: null }))).toBeNull();
    expect(checkpointStep(item({}))).toBeNull();
  });
});

describe('isIncomplete', () => {
  it('marks partial and incomplete items', () => {
    expect(isIncomplete(item({ kind: 'partial', complete: false }))).toBe(true);
    expect(isIncomplete(item({ complete: false }))).toBe(true);
    expect(isIncomplete(item({ complete: true }))).toBe(false);
    expect(isIncomplete(item({ complete: null }))).toBe(false);
  });
});

describe('sortCheckpoints', () => {
  it('puts the newest first, partial saves last, ties by name', () => {
    const items = [
      item({ name: 'old', mtime: '2026-01-01T00:00:00Z' }),
      item({ name: 'tmp', kind: 'partial', mtime: '2026-12-01T00:00:00Z' }),
      item({ name: 'new', mtime: '2026-06-01T00:00:00Z' }),
      item({ name: 'b', mtime: null }),
      item({ name: 'a', mtime: 'garbage' })
    ];
    expect(sortCheckpoints(items).map(i => i.name)).toEqual([
      'new',
      'old',
      'a',
      'b',
      'tmp'
    ]);
    expect(items[0].name).toBe('old');
  });
});

describe('formatCheckpointTime', () => {
  it('formats a local time', () => {
    const iso = '2026-11-25T13:05:09Z';
    const d = new Date(iso);
    const pad = (n: number): string => String(n).padStart(2, '0');
    expect(formatCheckpointTime(iso)).toBe(
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(
        d.getHours()
      )}:${pad(d.getMinutes())}`
    );
  });
  it('shows a dash when unknown', () => {
    expect(formatCheckpointTime(null)).toBe('—');
    expect(formatCheckpointTime('nope')).toBe('—');
  });
});

describe('checkpointLabel', () => {
  it('shows the path, else the name', () => {
    expect(
      checkpointLabel(item({ name: 'run1/checkpoint', path: 'run1' }))
    ).toBe('run1');
    expect(checkpointLabel(item({ name: 'a.keras' }))).toBe('a.keras');
  });
});
