import * as React from 'react';

import { TensorBoardList } from '../tensorboardlist';

import { TensorBoardRows } from './TensorBoardRows';
import type { IViewProps } from './types';

/**
 * The user's running TensorBoards (absent when there are none): read on the
 * model's ticks (at most every 5 s, only while the panel is shown), at once
 * after a Stop.
 */
export function TensorBoardSection(props: IViewProps): JSX.Element | null {
  const { model, actions, trans } = props;
  const [, setVersion] = React.useState(0);
  const list = React.useMemo(
    () =>
      new TensorBoardList({
        client: model.client,
        changed: () => setVersion(n => n + 1)
      }),
    [model]
  );
  React.useEffect(() => {
    const tick = (): void => void list.poll();
    void list.poll(true);
    model.changed.connect(tick);
    return () => {
      model.changed.disconnect(tick);
    };
  }, [model, list]);
  if (!list.canList || (list.boards.length === 0 && !list.error)) {
    return null;
  }
  return (
    <section className="jp-tfenv-section jp-tfenv-tensorboards">
      <h3 className="jp-tfenv-section-title">{trans.__('TensorBoards')}</h3>
      {list.error && (
        <pre className="jp-tfenv-server-message jp-tfenv-tensorboards-error">
          {list.error}
        </pre>
      )}
      <TensorBoardRows
        boards={list.boards}
        trans={trans}
        displayName={id => model.environment(id)?.display_name ?? null}
        onOpen={board =>
          board.view === 'compare'
            ? actions.compareTensorBoards?.()
            : actions.tensorboard?.(board.environment ?? '')
        }
        onStop={board => void list.stop(board.name)}
      />
    </section>
  );
}
