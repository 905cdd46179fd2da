import type { IKernelStatus, ILastRestart } from '../api/kernels';
import {
  INoticeStorage,
  RestartNotices,
  restartKey,
  restartToast,
  TOLD_KEY
} from '../restartnotice';
import { trans } from './fixtures/trans';

const RESTART: ILastRestart = {
  reason: 'engine-restart',
  at: '2026-12-07T03:38:11+00:00',
  message:
    'The Docker engine restarted at 03:38 UTC; the kernel was restarted in a new container; variables are lost; checkpoints in $TFENV_CHECKPOINT_DIR are kept.'
};

const status = (
  kernelId: string,
  lastRestart: ILastRestart | null
): IKernelStatus =>
  ({
    kernel_id: kernelId,
    environment: { id: 'py' },
    last_restart: lastRestart
  }) as unknown as IKernelStatus;

class MemoryStorage implements INoticeStorage {
  items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
}

describe('RestartNotices', () => {
  it('tells a restart once, however often the status is read', () => {
    const told: string[] = [];
    const notices = new RestartNotices({
      notify: restart => told.push(restart.message)
    });
    notices.seen(null);
    notices.seen(status('k1', null));
    expect(told).toEqual([]);
    notices.seen(status('k1', RESTART));
    notices.seen(status('k1', RESTART));
    expect(told).toEqual([RESTART.message]);
  });

  it('tells the next restart of the same kernel, and another kernel’s', () => {
    const told: string[] = [];
    const notices = new RestartNotices({
      notify: (restart, kernelId) => told.push(`${kernelId} ${restart.at}`)
    });
    const later = { ...RESTART, at: '2026-12-07T05:01:00+00:00' };
    notices.seen(status('k1', RESTART));
    notices.seen(status('k2', RESTART));
    notices.seen(status('k1', later));
    notices.seen(status('k1', RESTART));
    expect(told).toEqual([
      `k1 ${RESTART.at}`,
      `k2 ${RESTART.at}`,
      `k1 ${later.at}`
    ]);
  });

  it('does not tell again after a reload (storage), and survives a broken one', () => {
    const storage = new MemoryStorage();
    const first: string[] = [];
    new RestartNotices({
      notify: r => first.push(r.message),
      storage
    }).seen(status('k1', RESTART));
    expect(JSON.parse(storage.getItem(TOLD_KEY) ?? '[]')).toEqual([
      restartKey('k1', RESTART)
    ]);
    const again: string[] = [];
    new RestartNotices({ notify: r => again.push(r.message), storage }).seen(
      status('k1', RESTART)
    );
    expect([first.length, again.length]).toEqual([1, 0]);

    storage.setItem(TOLD_KEY, '{not json');
    const broken: string[] = [];
    new RestartNotices({ notify: r => broken.push(r.message), storage }).seen(
      status('k1', RESTART)
    );
    expect(broken).toEqual([RESTART.message]);
  });
});

describe('restartToast', () => {
  it('says the restart in what a toast shows (140 characters)', () => {
    const text = restartToast(RESTART, trans);
    expect(text.length).toBeLessThanOrEqual(140);
    expect(text).toMatch(/^Docker engine restarted at \d\d:\d\d: /);
    expect(text).toContain('kernel restarted in a new container');
    expect(text).toContain('variables lost');
    expect(text).toContain('$TFENV_CHECKPOINT_DIR kept');
  });

  it('tells a pod the cluster ended in the server’s words', () => {
    const evicted: ILastRestart = {
      reason: 'pod-evicted',
      at: '2026-12-07T03:38:11+00:00',
      message:
        "The Kubernetes cluster evicted the kernel's pod at 03:38 UTC (Evicted: The node was low on resource: memory.); the kernel was restarted in a new pod; variables are lost; checkpoints on its checkpoint claim ($TFENV_CHECKPOINT_DIR) are kept."
    };
    const text = restartToast(evicted, trans);
    expect(text).toHaveLength(140);
    expect(text).toMatch(
      /^The Kubernetes cluster evicted the kernel's pod at 03:38 UTC \(Evicted: The node was low on resource: memory\.\)/
    );
    const told: string[] = [];
    const notices = new RestartNotices({
      notify: restart => told.push(restart.reason)
    });
    notices.seen(status('k1', evicted));
    notices.seen(status('k1', evicted));
    expect(told).toEqual(['pod-evicted']);
  });

  it('falls back to the server’s words, cut to fit', () => {
    const odd = { ...RESTART, reason: 'other', message: 'y'.repeat(200) };
    expect(restartToast(odd, trans)).toHaveLength(140);
    const bad = { ...RESTART, at: 'not a time', message: 'short' };
    expect(restartToast(bad, trans)).toBe('short');
  });
});
