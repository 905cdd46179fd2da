import { Dialog, showDialog } from '@jupyterlab/apputils';
import { deleteIcon, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { IEnvironmentSummary, ILogRun } from '../api';
import { type ILogRunsState, logRunLabel, LogRunsListing } from '../logruns';

import { Breakable, IconButton } from './common';

/**
 * Where a kernel sees its log folder (`TFENV_LOG_DIR`).
 */
const CONTAINER_LOG_DIR = '/tfenv/logs';
import { LogRunList } from './LogRunList';
import type { IViewProps } from './types';

/**
 * The active environment's log runs: listed when the environment changes, on
 * its refresh button and after a delete (confirmed in a dialog, then sent
 * with the run's ETag).
 */
export function LogSection(
  props: IViewProps & { env: IEnvironmentSummary }
): JSX.Element | null {
  const { model, trans, env } = props;
  const [state, setState] = React.useState<ILogRunsState | null>(null);
  const listing = React.useMemo(
    () =>
      new LogRunsListing({
        client: model.client,
        trans,
        changed: next => setState(next)
      }),
    [model, trans]
  );
  React.useEffect(() => {
    void listing.load(env.id);
  }, [listing, env.id]);
  if (!listing.canList) {
    return null;
  }
  const shown: ILogRunsState =
    state && state.environment === env.id
      ? state
      : {
          environment: env.id,
          listing: null,
          error: null,
          notice: null,
          loading: true
        };

  const remove = async (run: ILogRun): Promise<void> => {
    const result = await showDialog({
      title: trans.__('Delete log run'),
      body: trans.__(
        'Delete the run "%1" of "%2" with all its files? This cannot be undone.',
        logRunLabel(run, trans),
        env.display_name
      ),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (result.button.accept) {
      await listing.remove(env.id, run);
    }
  };

  return (
    <section className="jp-tfenv-section jp-tfenv-logs" data-tfenv-env={env.id}>
      <h3 className="jp-tfenv-section-title">
        {trans.__('Logs')}
        <IconButton
          className="jp-tfenv-logs-refresh"
          icon={refreshIcon}
          title={trans.__('List the log runs again')}
          onClick={() => void listing.load(env.id)}
        />
      </h3>
      <dl className="jp-tfenv-facts">
        <dt>{trans.__('In the container')}</dt>
        <dd>
          <code>{shown.listing?.container_path || CONTAINER_LOG_DIR}</code>
        </dd>
        <dt>{trans.__('On the host')}</dt>
        <dd>
          <code
            className="jp-tfenv-logs-location"
            title={shown.listing?.location ?? undefined}
          >
            <Breakable text={shown.listing?.location ?? '—'} />
          </code>
        </dd>
      </dl>
      {shown.notice && (
        <div className="jp-tfenv-logs-notice" role="alert">
          {shown.notice}
        </div>
      )}
      {shown.listing?.truncated && (
        <div className="jp-tfenv-checkpoints-truncated">
          {trans.__('The folder is too large: only part of it was read.')}
        </div>
      )}
      <LogRunList
        state={shown}
        trans={trans}
        deleteIcon={deleteIcon}
        onDelete={run => void remove(run)}
      />
    </section>
  );
}
