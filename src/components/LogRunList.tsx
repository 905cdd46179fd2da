import type { TranslationBundle } from '@jupyterlab/translation';
import type { LabIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { ILogRun } from '../api';
import { formatCheckpointTime } from '../checkpoints';
import { formatBytes } from '../format';
import { type ILogRunsState, logRunLabel, sortLogRuns } from '../logruns';

import { Breakable, IconButton } from './common';

// No JupyterLab value imports here: jest renders it directly.

/**
 * The one-line code hint of the empty list (code: not translated).
 */
const LOG_HINT =
  "keras.callbacks.TensorBoard(os.path.join(os.environ['TFENV_LOG_DIR'], 'run1'))";

/**
 * The runs of a log listing (name, last write, size), each with a delete
 * button when `onDelete` is given.
 */
export function LogRunList(props: {
  state: ILogRunsState;
  trans: TranslationBundle;
  /** The delete button's icon (JupyterLab's, given by the section). */
  deleteIcon?: LabIcon;
  onDelete?: (run: ILogRun) => void;
}): JSX.Element {
  const { state, trans } = props;
  if (state.error) {
    return (
      <div className="jp-tfenv-logs-error" role="alert">
        <div>{trans.__('The log runs could not be listed:')}</div>
        <pre className="jp-tfenv-server-message">{state.error}</pre>
      </div>
    );
  }
  if (!state.listing) {
    return (
      <div className="jp-tfenv-logs-loading jp-tfenv-muted">
        {trans.__('Reading the log runs…')}
      </div>
    );
  }
  const runs = sortLogRuns(state.listing.runs ?? []);
  if (runs.length === 0) {
    return (
      <div className="jp-tfenv-logs-empty">
        <div>{trans.__('No runs yet — write to %1', '$TFENV_LOG_DIR')}</div>
        <code className="jp-tfenv-checkpoints-hint" title={LOG_HINT}>
          <Breakable text={LOG_HINT} />
        </code>
      </div>
    );
  }
  return (
    <ul className="jp-tfenv-logrun-list">
      {runs.map(run => (
        <li
          key={run.name}
          className="jp-tfenv-logrun"
          data-tfenv-run={run.name}
          data-tfenv-etag={run.etag}
        >
          <span className="jp-tfenv-logrun-name" title={run.name}>
            {logRunLabel(run, trans)}
          </span>
          <span className="jp-tfenv-logrun-meta jp-tfenv-logrun-time">
            {formatCheckpointTime(run.last_write)}
          </span>
          <span className="jp-tfenv-logrun-meta jp-tfenv-logrun-size">
            {formatBytes(run.size)}
          </span>
          {props.onDelete && props.deleteIcon && (
            <IconButton
              className="jp-tfenv-logrun-delete"
              icon={props.deleteIcon}
              title={trans.__('Delete…')}
              onClick={() => props.onDelete!(run)}
            />
          )}
        </li>
      ))}
    </ul>
  );
}
