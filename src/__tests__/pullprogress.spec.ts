import * as fs from 'fs';
import * as path from 'path';

import {
  isPullFinished,
  IPullProgress,
  pullFromPayload,
  reducePullEvent
} from '../pullprogress';

/**
 * A real event stream of `GET /tfenv/pulls/{id}/events`, recorded from a
 * pull of a 286 MiB layer from a registry on loopback.
 */
function recordedEvents(): { type: string; data: any }[] {
  const text = fs.readFileSync(
    path.join(__dirname, 'fixtures', 'pull-events.txt'),
    'utf8'
  );
  return text
    .split('\n\n')
    .map(block => ({
      type: /^event: (.*)$/m.exec(block)?.[1] ?? '',
      data: /^data: (.*)$/m.exec(block)?.[1] ?? ''
    }))
    .filter(e => e.type && e.data)
    .map(e => ({ type: e.type, data: JSON.parse(e.data) }));
}

const START = {
  id: 'p1',
  environment: 'py-registry',
  image: '127.0.0.1:5099/fe/py:3.11-jupyter',
  reference: '127.0.0.1:5099/fe/py:3.11-jupyter',
  state: 'pulling' as const,
  layers: {},
  current: 0,
  total: 0,
  percent: 0,
  message: 'Pulling 127.0.0.1:5099/fe/py:3.11-jupyter'
};

describe('reducePullEvent on a recorded stream', () => {
  const events = recordedEvents();

  it('goes from the snapshot to done at 100%', () => {
    let progress: IPullProgress | null = null;
    const seen: number[] = [];
    for (const { type, data } of events) {
      progress = reducePullEvent(progress, type, data);
      seen.push(progress!.percent);
    }
    expect(events[0].type).toBe('snapshot');
    expect(events[events.length - 1].type).toBe('done');
    expect(progress!.state).toBe('done');
    expect(progress!.percent).toBe(100);
    expect(progress!.layers).toBe(4);
    expect(progress!.layersDone).toBe(4);
    expect(progress!.digest).toMatch(/^sha256:/);
    expect(progress!.message).toMatch(/^Pulled /);
    expect(isPullFinished(progress)).toBe(true);
    // Downloading then extracting: the estimate rises to the end.
    expect(seen[0]).toBeLessThan(10);
    expect(Math.max(...seen.slice(0, -1))).toBeLessThanOrEqual(100);
    expect(seen.filter(p => p >= 50).length).toBeGreaterThan(5);
  });

  it('keeps bytes and layer counts from layer events', () => {
    const snapshot = events[0];
    const layer = events.find(e => e.type === 'layer')!;
    const progress = reducePullEvent(
      reducePullEvent(null, snapshot.type, snapshot.data),
      layer.type,
      layer.data
    )!;
    expect(progress.total).toBe(layer.data.progress.total);
    expect(progress.current).toBe(layer.data.progress.current);
    expect(progress.layers).toBe(4);
    expect(progress.layersDone).toBe(3);
    expect(progress.seq).toBe(layer.data.seq);
  });

  it('ignores duplicate and out-of-order events', () => {
    const layers = events.filter(e => e.type === 'layer');
    let progress = reducePullEvent(null, events[0].type, events[0].data);
    progress = reducePullEvent(progress, 'layer', layers[5].data);
    const before = progress;
    expect(reducePullEvent(progress, 'layer', layers[5].data)).toBe(before);
    expect(reducePullEvent(progress, 'layer', layers[2].data)).toBe(before);
  });

  it('ignores everything after the final event', () => {
    let progress: IPullProgress | null = null;
    for (const { type, data } of events) {
      progress = reducePullEvent(progress, type, data);
    }
    const done = progress;
    expect(reducePullEvent(done, 'layer', events[3].data)).toBe(done);
    expect(reducePullEvent(done, 'cancelled', { ...START })).toBe(done);
  });
});

describe('reducePullEvent', () => {
  it('starts from a start event or the POST reply', () => {
    const progress = reducePullEvent(null, 'start', { ...START, seq: 1 })!;
    expect(progress).toMatchObject({
      pullId: 'p1',
      environment: 'py-registry',
      state: 'pulling',
      percent: 0,
      seq: 1
    });
    expect(pullFromPayload(START).pullId).toBe('p1');
  });

  it('takes status lines as the message', () => {
    let progress = pullFromPayload(START);
    progress = reducePullEvent(progress, 'status', {
      seq: 2,
      type: 'status',
      status: 'Digest: sha256:abc',
      progress: { current: 1, total: 2, percent: 25, layers: 2, layers_done: 1 }
    })!;
    expect(progress.message).toBe('Digest: sha256:abc');
    expect(progress.percent).toBe(25);
    expect(progress.layersDone).toBe(1);
  });

  it('follows the server estimate down when a late layer shows up', () => {
    let progress = pullFromPayload(START);
    progress = reducePullEvent(progress, 'layer', {
      seq: 2,
      progress: { percent: 75, current: 0, total: 0, layers: 4, layers_done: 3 }
    })!;
    progress = reducePullEvent(progress, 'layer', {
      seq: 3,
      progress: {
        percent: 8,
        current: 9,
        total: 100,
        layers: 4,
        layers_done: 3
      }
    })!;
    expect(progress.percent).toBe(8);
  });

  it('ends with an error and its message', () => {
    const progress = reducePullEvent(pullFromPayload(START), 'error', {
      ...START,
      seq: 5,
      state: 'error',
      percent: 12,
      message:
        'Pulling … failed: the registry 127.0.0.1:5099 has no such image.'
    })!;
    expect(progress.state).toBe('error');
    expect(progress.percent).toBe(12);
    expect(progress.message).toMatch(/no such image/);
    expect(isPullFinished(progress)).toBe(true);
  });

  it('ends cancelled (DELETE reply or event)', () => {
    const progress = reducePullEvent(pullFromPayload(START), 'cancelled', {
      ...START,
      state: 'cancelled',
      message: 'The pull was cancelled.'
    })!;
    expect(progress.state).toBe('cancelled');
    expect(progress.message).toBe('The pull was cancelled.');
  });

  it('accepts polled snapshots of the same pull', () => {
    let progress = pullFromPayload(START);
    progress = reducePullEvent(progress, 'snapshot', {
      ...START,
      percent: 40,
      current: 40,
      total: 100,
      layers: {
        a: { status: 'Pull complete', current: 1, total: 1 },
        b: { status: 'Downloading', current: 39, total: 99 }
      }
    })!;
    expect(progress.percent).toBe(40);
    expect(progress.layers).toBe(2);
    expect(progress.layersDone).toBe(1);
  });

  it('ignores unknown events and bad data', () => {
    const progress = pullFromPayload(START);
    expect(reducePullEvent(progress, 'mystery', { seq: 9 })).toBe(progress);
    expect(reducePullEvent(progress, 'layer', null)).toBe(progress);
    expect(reducePullEvent(null, 'snapshot', { seq: 1 })).toBeNull();
  });

  it('clamps percentages', () => {
    expect(pullFromPayload({ ...START, percent: 140 }).percent).toBe(100);
    expect(pullFromPayload({ ...START, percent: -3 }).percent).toBe(0);
    expect(
      pullFromPayload({ ...START, state: 'done', percent: 99 }).percent
    ).toBe(100);
  });
});
