import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import type { ITensorBoard } from '../api';

// No JupyterLab value imports here: jest renders it directly.

/**
 * The user's TensorBoards: what each shows, its state (the error's message in
 * its title), Open (its tab) and Stop.
 */
export function TensorBoardRows(props: {
  boards: readonly ITensorBoard[];
  trans: TranslationBundle;
  /** The display name of an environment id (else the id). */
  displayName: (envId: string) => string | null;
  onOpen: (board: ITensorBoard) => void;
  onStop: (board: ITensorBoard) => void;
}): JSX.Element {
  const { boards, trans } = props;
  return (
    <ul className="jp-tfenv-tensorboard-list">
      {boards.map(board => {
        const label =
          board.view === 'compare'
            ? trans.__('All environments (compare)')
            : (props.displayName(board.environment ?? '') ??
              board.environment ??
              board.name);
        const state =
          board.state === 'running'
            ? trans.__('running')
            : board.state === 'starting'
              ? trans.__('starting')
              : trans.__('error');
        return (
          <li
            key={board.name}
            className="jp-tfenv-tensorboard-item"
            data-tfenv-tensorboard={board.name}
            data-tfenv-state={board.state}
          >
            <span
              className="jp-tfenv-tensorboard-item-name"
              title={board.image}
            >
              {label}
            </span>
            <span
              className="jp-tfenv-badge jp-tfenv-tensorboard-item-state"
              title={board.message ?? board.image}
            >
              {state}
            </span>
            <button
              className="jp-mod-styled jp-tfenv-tensorboard-item-open"
              title={trans.__('Show it in its tab')}
              onClick={() => props.onOpen(board)}
            >
              {trans.__('Open')}
            </button>
            <button
              className="jp-mod-styled jp-tfenv-tensorboard-item-stop"
              title={trans.__('Stop this TensorBoard (its container goes)')}
              onClick={() => props.onStop(board)}
            >
              {trans.__('Stop')}
            </button>
          </li>
        );
      })}
    </ul>
  );
}
