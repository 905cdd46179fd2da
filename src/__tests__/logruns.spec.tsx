import * as React from 'react';

import type { ILogListing, ITfEnvClient } from '../api';
import { TfEnvApiError } from '../api';
import { LogRunList } from '../components/LogRunList';
import {
  type ILogRunsState,
  logRunLabel,
  LogRunsListing,
  sortLogRuns
} from '../logruns';
import { trans } from './fixtures/trans';

/**
 * A rendered tree as text: the text and the data-/class attributes of every
 * element, in order (components other than LogRunList are not expanded:
 * their props are listed).
 */
function renderToStaticMarkup(node: React.ReactNode): string {
  if (node === null || node === undefined || typeof node === 'boolean') {
    return '';
  }
  if (typeof node === 'string' || typeof node === 'number') {
    return String(node);
  }
  if (Array.isArray(node)) {
    return node.map(renderToStaticMarkup).join('');
  }
  const element = node as React.ReactElement<any>;
  if (element.type === LogRunList) {
    return renderToStaticMarkup(LogRunList(element.props));
  }
  const attrs = Object.entries(element.props ?? {})
    .filter(([k, v]) => k !== 'children' && typeof v === 'string')
    .map(([k, v]) => ` ${k === 'className' ? 'class' : k}="${v}"`)
    .join('');
  return `<x${attrs}>${renderToStaticMarkup(element.props?.children)}</x>`;
}

const LISTING: ILogListing = {
  environment: 'tf220',
  exists: true,
  location: '/home/u/tfenv/logs/u/tf220',
  container_path: '/tfenv/logs',
  runs: [
    {
      name: 'run1',
      last_write: '2026-01-01T10:00:00+00:00',
      size: 2048,
      files: 2,
      etag: 'e1'
    },
    {
      name: '.',
      last_write: '2026-01-01T09:00:00+00:00',
      size: 10,
      files: 1,
      etag: 'e0'
    },
    {
      name: 'run2',
      last_write: '2026-01-02T10:00:00+00:00',
      size: 512,
      files: 1,
      etag: 'e2'
    }
  ]
};

function state(extra: Partial<ILogRunsState> = {}): ILogRunsState {
  return {
    environment: 'tf220',
    listing: LISTING,
    error: null,
    notice: null,
    loading: false,
    ...extra
  };
}

describe('log runs in the panel', () => {
  it('lists the runs newest first with their last write and size', () => {
    expect(sortLogRuns(LISTING.runs).map(r => r.name)).toEqual([
      'run2',
      'run1',
      '.'
    ]);
    const html = renderToStaticMarkup(
      <LogRunList
        state={state()}
        trans={trans}
        deleteIcon={{} as any}
        onDelete={() => undefined}
      />
    );
    expect(html.indexOf('data-tfenv-run="run2"')).toBeLessThan(
      html.indexOf('data-tfenv-run="run1"')
    );
    expect(html).toContain('data-tfenv-etag="e1"');
    expect(html).toContain('2.00 KiB');
    expect(html).toContain('(files at the top of the log folder)');
    expect(html.match(/jp-tfenv-logrun-delete/g)).toHaveLength(3);
    expect(html).toMatch(/2026-01-0\d \d\d:\d\d/);
  });

  it('shows loading, empty and error states, never a blank section', () => {
    expect(
      renderToStaticMarkup(
        <LogRunList state={state({ listing: null })} trans={trans} />
      )
    ).toContain('Reading the log runs…');
    const empty = renderToStaticMarkup(
      <LogRunList
        state={state({ listing: { ...LISTING, runs: [] } })}
        trans={trans}
      />
    );
    expect(empty).toContain('No runs yet');
    expect(empty).toContain('TFENV_LOG_DIR');
    const failed = renderToStaticMarkup(
      <LogRunList
        state={state({ listing: null, error: 'Log storage is off' })}
        trans={trans}
      />
    );
    expect(failed).toContain('could not be listed');
    expect(failed).toContain('Log storage is off');
  });

  it('labels the top-level run', () => {
    expect(logRunLabel(LISTING.runs[1], trans)).toContain('top');
    expect(logRunLabel(LISTING.runs[0], trans)).toBe('run1');
  });
});

describe('LogRunsListing', () => {
  function make(client: Partial<ITfEnvClient>): {
    listing: LogRunsListing;
    seen: ILogRunsState[];
  } {
    const seen: ILogRunsState[] = [];
    const listing = new LogRunsListing({
      client: client as ITfEnvClient,
      trans,
      changed: s => seen.push(s)
    });
    return { listing, seen };
  }

  it('deletes a run with the ETag it listed, then lists again', async () => {
    const logRuns = jest.fn().mockResolvedValue(LISTING);
    const deleteLogRun = jest.fn().mockResolvedValue({});
    const { listing } = make({ logRuns, deleteLogRun });
    await listing.load('tf220');
    expect(listing.state.listing).toBe(LISTING);
    await listing.remove('tf220', LISTING.runs[0]);
    expect(deleteLogRun).toHaveBeenCalledWith('tf220', 'run1', 'e1');
    expect(logRuns).toHaveBeenCalledTimes(2);
    expect(listing.state.notice).toBeNull();
  });

  it('says a changed run was not deleted (412) and keeps the list', async () => {
    const { listing } = make({
      logRuns: jest.fn().mockResolvedValue(LISTING),
      deleteLogRun: jest
        .fn()
        .mockRejectedValue(new TfEnvApiError('changed', 412))
    });
    await listing.load('tf220');
    await listing.remove('tf220', LISTING.runs[0]);
    expect(listing.state.notice).toContain('nothing was deleted');
    expect(listing.state.listing).toBe(LISTING);
  });

  it('drops an answer for an environment no longer shown', async () => {
    let first: (l: ILogListing) => void = () => undefined;
    const logRuns = jest
      .fn()
      .mockImplementationOnce(
        () => new Promise<ILogListing>(resolve => (first = resolve))
      )
      .mockResolvedValueOnce({ ...LISTING, environment: 'py', runs: [] });
    const { listing } = make({ logRuns });
    const a = listing.load('tf220');
    await listing.load('py');
    first(LISTING);
    await a;
    expect(listing.state.environment).toBe('py');
    expect(listing.state.listing?.runs).toEqual([]);
  });

  it("shows the server's refusal as the error", async () => {
    const { listing } = make({
      logRuns: jest
        .fn()
        .mockRejectedValue(new TfEnvApiError('Log runs of Kubernetes…', 501))
    });
    await listing.load('tf220');
    expect(listing.state).toMatchObject({
      listing: null,
      error: 'Log runs of Kubernetes…',
      loading: false
    });
  });
});
