import * as React from 'react';

import { EngineWarning } from '../components/EngineWarning';
import {
  DAEMON_JSON_LINE,
  liveRestoreWarning,
  normalizeEngine
} from '../liverestore';

/**
 * The translator's bundle as the panel gets it, without JupyterLab: `%1`
 * replaced by the first argument, and so on.
 */
const trans = {
  __: (text: string, ...args: unknown[]): string =>
    args.reduce<string>(
      (out, arg, i) => out.replace(`%${i + 1}`, String(arg)),
      text
    )
} as any;

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
});
