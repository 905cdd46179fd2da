import type { TranslationBundle } from '@jupyterlab/translation';
import { deleteIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { ICheckpointItem } from '../api';
import {
  checkpointKindLabel,
  checkpointLabel,
  checkpointStep,
  formatCheckpointTime,
  isIncomplete
} from '../checkpoints';
import { formatBytes } from '../format';

import { IconButton, Breakable } from './common';

export function CheckpointRow(props: {
  item: ICheckpointItem;
  trans: TranslationBundle;
  /**
   * Without it the row has no delete button (another environment's, read-only).
   */
  onDelete?: () => void;
}): JSX.Element {
  const { item, trans } = props;
  const step = checkpointStep(item);
  const incomplete = isIncomplete(item);
  const kept = item.checkpoints?.length ?? 0;
  return (
    <li
      className="jp-tfenv-checkpoint"
      data-tfenv-checkpoint={item.name}
      data-tfenv-kind={item.kind}
      data-tfenv-complete={incomplete ? 'false' : 'true'}
      data-tfenv-etag={item.etag}
    >
      <div className="jp-tfenv-checkpoint-head">
        <span className="jp-tfenv-badge jp-tfenv-checkpoint-kind">
          {checkpointKindLabel(item.kind)}
        </span>
        <span className="jp-tfenv-checkpoint-name" title={item.name}>
          <Breakable text={checkpointLabel(item)} />
        </span>
        {incomplete && (
          <span className="jp-tfenv-badge jp-tfenv-checkpoint-incomplete">
            {trans.__('incomplete')}
          </span>
        )}
        {props.onDelete && (
          <IconButton
            className="jp-tfenv-checkpoint-delete"
            icon={deleteIcon}
            title={trans.__('Delete…')}
            onClick={props.onDelete}
          />
        )}
      </div>
      <div className="jp-tfenv-checkpoint-meta">
        {step !== null && (
          <span className="jp-tfenv-checkpoint-step">
            {trans.__('step %1', step)}
          </span>
        )}
        {kept > 1 && (
          <span className="jp-tfenv-checkpoint-kept">
            {trans.__('%1 kept', kept)}
          </span>
        )}
        <span className="jp-tfenv-checkpoint-size">
          {formatBytes(item.size)}
        </span>
        <span className="jp-tfenv-checkpoint-time">
          {formatCheckpointTime(item.mtime)}
        </span>
      </div>
    </li>
  );
}
