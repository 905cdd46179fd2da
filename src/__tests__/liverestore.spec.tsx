import * as React from 'react';

import { EngineWarning } from '../components/EngineWarning';
import {
  DAEMON_JSON_LINE,
  DISMISSED_KEY,
  dismissWarning,
  isDismissed,
  liveRestoreWarning,
  normalizeEngine
} from '../liverestore';
import { trans } from './fixtures/trans';

const OFF = {
  host: 'unix:///var/run/docker.sock',
  version: '20.10.24',
  live_restore: false
};

describe('normalizeEngine', () => {
  it('keeps a well-formed engine', () => {
    expect(normalizeEngine(OFF)).toEqual(OFF);
    expect(normalizeEngine({ ...OFF, live_restore: true })).toEqual({
      ...OFF,
      live_restore: true
    });
  });

  it('is null for an absent, null or unknown shape', () => {
    expect(normalizeEngine(undefined)).toBeNull();
    expect(normalizeEngine(null)).toBeNull();
    expect(normalizeEngine('on')).toBeNull();
    expect(normalizeEngine({ host: 'x', live_restore: null })).toBeNull();
    expect(normalizeEngine({ host: 'x', live_restore: 'false' })).toBeNull();
  });

  it('fills what an answer leaves out', () => {
    expect(normalizeEngine({ live_restore: false })).toEqual({
      host: '',
      version: null,
      live_restore: false
    });
  });
});

/**
 * localStorage's two methods over a Map.
 */
function memoryStorage() {
  const items = new Map<string, string>();
  return {
    items,
    getItem: (key: string) => items.get(key) ?? null,
    setItem: (key: string, value: string) => void items.set(key, value)
  };
}

describe('dismissing the warning', () => {
  it('hides it for that engine and version only', () => {
    const storage = memoryStorage();
    expect(liveRestoreWarning(OFF, storage)).toBe(OFF);
    dismissWarning(OFF, storage);
    expect(isDismissed(OFF, storage)).toBe(true);
    expect(liveRestoreWarning(OFF, storage)).toBeNull();
    // Another engine, or this one upgraded: warned again.
    const other = { ...OFF, host: 'tcp://gpu-server:2376' };
    expect(liveRestoreWarning(other, storage)).toBe(other);
    const upgraded = { ...OFF, version: '27.0.1' };
    expect(liveRestoreWarning(upgraded, storage)).toBe(upgraded);
  });

  it('survives a broken or refusing storage', () => {
    const storage = memoryStorage();
    storage.items.set(DISMISSED_KEY, '{not json');
    expect(liveRestoreWarning(OFF, storage)).toBe(OFF);
    const full = {
      getItem: () => null,
      setItem: () => {
        throw new Error('QuotaExceededError');
      }
    };
    expect(() => dismissWarning(OFF, full)).not.toThrow();
    expect(liveRestoreWarning(OFF, full)).toBe(OFF);
    expect(liveRestoreWarning(OFF, null)).toBe(OFF);
  });

  it('keeps the last 20 engines', () => {
    const storage = memoryStorage();
    for (let i = 0; i < 25; i++) {
      dismissWarning({ ...OFF, host: `tcp://h${i}:2376` }, storage);
    }
    const kept = JSON.parse(storage.items.get(DISMISSED_KEY)!);
    expect(kept).toHaveLength(20);
    expect(isDismissed({ ...OFF, host: 'tcp://h24:2376' }, storage)).toBe(true);
    expect(isDismissed({ ...OFF, host: 'tcp://h0:2376' }, storage)).toBe(false);
  });
});

describe('liveRestoreWarning', () => {
  it('warns only about an engine that said live-restore is off', () => {
    expect(liveRestoreWarning(OFF)).toBe(OFF);
    expect(liveRestoreWarning({ ...OFF, live_restore: true })).toBeNull();
    expect(liveRestoreWarning(null)).toBeNull(); // unreachable, or a JupyterHub
    expect(liveRestoreWarning(undefined)).toBeNull();
  });
});

/**
 * The text of a rendered element tree (the component is a plain function).
 */
function textOf(node: React.ReactNode): string {
  if (node === null || node === undefined || typeof node === 'boolean') {
    return '';
  }
  if (typeof node === 'string' || typeof node === 'number') {
    return String(node);
  }
  if (Array.isArray(node)) {
    return node.map(textOf).join('');
  }
  const element = node as React.ReactElement<{ children?: React.ReactNode }>;
  return textOf(element.props?.children);
}

describe('EngineWarning', () => {
  it('says what is lost and what to do', () => {
    const element = EngineWarning({ engine: OFF, trans });
    const props = element.props as { [key: string]: unknown };
    expect(props['data-tfenv-live-restore']).toBe('false');
    expect(props['data-tfenv-engine-host']).toBe('unix:///var/run/docker.sock');
    expect(props.title).toBe(
      'Docker engine 20.10.24 at unix:///var/run/docker.sock'
    );
    const text = textOf(element);
    expect(text).toContain(
      "The Docker engine's live-restore is off: an engine restart or upgrade restarts every kernel; variables are lost."
    );
    expect(DAEMON_JSON_LINE).toBe('"live-restore": true');
    expect(text).toContain(
      'add "live-restore": true to /etc/docker/daemon.json'
    );
    expect(text).toContain('sudo systemctl reload docker');
    expect(text).toContain('docs/operations.md');
  });

  it('names the engine without a version when it gave none', () => {
    const element = EngineWarning({
      engine: { ...OFF, version: null },
      trans
    });
    expect((element.props as { title: string }).title).toBe(
      'Docker engine at unix:///var/run/docker.sock'
    );
  });

  it('offers Dismiss where the panel can remember it', () => {
    expect(textOf(EngineWarning({ engine: OFF, trans }))).not.toContain(
      'Dismiss'
    );
    const onDismiss = jest.fn();
    const element = EngineWarning({ engine: OFF, trans, onDismiss });
    const children = React.Children.toArray(
      (element.props as { children: React.ReactNode }).children
    ) as React.ReactElement<{ onClick?: () => void }>[];
    const button = children.find(c => textOf(c) === 'Dismiss');
    expect(button).toBeDefined();
    button!.props.onClick!();
    expect(onDismiss).toHaveBeenCalledTimes(1);
  });
});
