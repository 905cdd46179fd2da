import type { ISessionContext } from '@jupyterlab/apputils';
import { Signal } from '@lumino/signaling';

import {
  IStartingContext,
  kernelStartPending,
  kernelStartSettled
} from '../cellexecutor';

/**
 * The session context states JupyterLab's `SessionContext` goes through, as
 * its getters report them (sessioncontext.ts, JupyterLab 4.6).
 */
function state(
  kernel: { status: string } | null,
  more: Partial<IStartingContext> = {}
): IStartingContext {
  return {
    isDisposed: false,
    hasNoKernel: false,
    kernelDisplayStatus: kernel ? kernel.status : 'initializing',
    kernelPreference: { name: 'tfenv-tf219' },
    session: kernel ? { kernel } : null,
    ...more
  };
}

describe('kernelStartPending', () => {
  it('is true while a new notebook waits for its session (POST /api/sessions)', () => {
    expect(kernelStartPending(state(null))).toBe(true);
  });

  it('is true while the context initializes to start the preferred kernel', () => {
    // Launcher: the notebook is open, its session context still looks for a
    // session of its path; "No Kernel" until the start begins.
    const initializing = state(null, { hasNoKernel: true });
    expect(kernelStartPending(initializing)).toBe(true);
    // Nothing to start (no preferred kernel): runCell asks, as it does.
    expect(kernelStartPending({ ...initializing, kernelPreference: {} })).toBe(
      false
    );
  });

  it('is false for "No Kernel", after a failed start and for a closed notebook', () => {
    const noKernel = { hasNoKernel: true, kernelDisplayStatus: 'unknown' };
    expect(kernelStartPending(state(null, noKernel))).toBe(false);
    expect(kernelStartPending(state(null, { isDisposed: true }))).toBe(false);
  });

  it("is true while the kernel is changed (the old one is still the session's)", () => {
    const old = { status: 'idle' };
    expect(
      kernelStartPending(state(old, { kernelDisplayStatus: 'starting' }))
    ).toBe(true);
  });

  it('is false once a kernel is there, also while it starts (JupyterLab queues then)', () => {
    expect(kernelStartPending(state({ status: 'idle' }))).toBe(false);
    expect(kernelStartPending(state({ status: 'busy' }))).toBe(false);
    expect(kernelStartPending(state({ status: 'starting' }))).toBe(false);
    expect(
      kernelStartPending(
        state({ status: 'unknown' }, { kernelDisplayStatus: 'connecting' })
      )
    ).toBe(false);
  });
});

/** A session context whose state the test sets, with the signals that announce it. */
class Context {
  current: IStartingContext = state(null);
  kernelChanged = new Signal<this, unknown>(this);
  sessionChanged = new Signal<this, unknown>(this);
  statusChanged = new Signal<this, unknown>(this);
  disposed = new Signal<this, void>(this);
  get isDisposed(): boolean {
    return this.current.isDisposed;
  }
  get hasNoKernel(): boolean {
    return this.current.hasNoKernel;
  }
  get kernelDisplayStatus(): string {
    return this.current.kernelDisplayStatus;
  }
  get session(): IStartingContext['session'] {
    return this.current.session;
  }
  get kernelPreference(): IStartingContext['kernelPreference'] {
    return this.current.kernelPreference;
  }
  ready = new Promise<void>(() => undefined);
}

describe('kernelStartSettled', () => {
  it('resolves when the kernel arrives, not before', async () => {
    const context = new Context();
    let settled = false;
    const done = kernelStartSettled(context as unknown as ISessionContext).then(
      () => {
        settled = true;
      }
    );
    context.statusChanged.emit('starting');
    await Promise.resolve();
    expect(settled).toBe(false);
    context.current = state({ status: 'starting' });
    context.kernelChanged.emit(undefined);
    await done;
    expect(settled).toBe(true);
  });

  it('resolves when the start failed (no kernel, "No Kernel")', async () => {
    const context = new Context();
    const done = kernelStartSettled(context as unknown as ISessionContext);
    context.current = state(null, {
      hasNoKernel: true,
      kernelDisplayStatus: 'unknown'
    });
    context.sessionChanged.emit(undefined);
    await done;
  });

  it('resolves at once when nothing is pending', async () => {
    const context = new Context();
    context.current = state({ status: 'idle' });
    await kernelStartSettled(context as unknown as ISessionContext);
  });
});
