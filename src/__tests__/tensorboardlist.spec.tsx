import * as React from 'react';

import type { ITensorBoard, ITfEnvClient } from '../api';
import { TfEnvApiError } from '../api';
import { TensorBoardRows } from '../components/TensorBoardRows';
import { TensorBoardList } from '../tensorboardlist';
import { trans } from './fixtures/trans';

function board(name: string, extra: Partial<ITensorBoard> = {}): ITensorBoard {
  return {
    name,
    view: name === 'compare' ? 'compare' : 'environment',
    environment: name === 'compare' ? null : name.replace(/^env-/, ''),
    image: 'tfenv-test/tensorflow:2.20.0-jupyter',
    state: 'running',
    message: null,
    url: `/tfenv/tensorboard/${name}/`,
    ...extra
  };
}

/**
 * Every element of a rendered tree (components other than TensorBoardRows
 * are not expanded).
 */
function elements(node: React.ReactNode): React.ReactElement<any>[] {
  if (node === null || node === undefined || typeof node !== 'object') {
    return [];
  }
  if (Array.isArray(node)) {
    return node.flatMap(elements);
  }
  const element = node as React.ReactElement<any>;
  if (element.type === TensorBoardRows) {
    return elements(TensorBoardRows(element.props));
  }
  return [element, ...elements(element.props?.children)];
}

function text(node: React.ReactNode): string {
  if (typeof node === 'string' || typeof node === 'number') {
    return String(node);
  }
  if (Array.isArray(node)) {
    return node.map(text).join('');
  }
  if (node && typeof node === 'object') {
    return text((node as React.ReactElement<any>).props?.children);
  }
  return '';
}

describe('TensorBoardList', () => {
  it('reads the list at most once per interval unless forced', async () => {
    let now = 1000;
    const listTensorBoards = jest
      .fn()
      .mockResolvedValue([board('env-tf220'), board('compare')]);
    const changed = jest.fn();
    const list = new TensorBoardList({
      client: { listTensorBoards } as unknown as ITfEnvClient,
      changed,
      minInterval: 5000,
      now: () => now
    });
    await list.poll();
    expect(list.boards.map(b => b.name)).toEqual(['compare', 'env-tf220']);
    expect(changed).toHaveBeenCalledTimes(1);
    now += 4000;
    await list.poll();
    expect(listTensorBoards).toHaveBeenCalledTimes(1);
    await list.poll(true);
    expect(listTensorBoards).toHaveBeenCalledTimes(2);
    now += 6000;
    await list.poll();
    expect(listTensorBoards).toHaveBeenCalledTimes(3);
  });

  it('says nothing where TensorBoard is not available (501), the reason otherwise', async () => {
    const hub = new TensorBoardList({
      client: {
        listTensorBoards: jest
          .fn()
          .mockRejectedValue(new TfEnvApiError('not yet on a hub', 501))
      } as unknown as ITfEnvClient,
      changed: () => undefined
    });
    await hub.poll();
    expect(hub.error).toBeNull();
    expect(hub.boards).toEqual([]);
    const down = new TensorBoardList({
      client: {
        listTensorBoards: jest
          .fn()
          .mockRejectedValue(new TfEnvApiError('engine down', 503))
      } as unknown as ITfEnvClient,
      changed: () => undefined
    });
    await down.poll();
    expect(down.error).toBe('engine down');
  });

  it('stops a TensorBoard and reads the list again', async () => {
    const stopTensorBoard = jest.fn().mockResolvedValue(undefined);
    const listTensorBoards = jest
      .fn()
      .mockResolvedValueOnce([board('env-tf220')])
      .mockResolvedValueOnce([]);
    const list = new TensorBoardList({
      client: { listTensorBoards, stopTensorBoard } as unknown as ITfEnvClient,
      changed: () => undefined
    });
    await list.poll();
    await list.stop('env-tf220');
    expect(stopTensorBoard).toHaveBeenCalledWith('env-tf220');
    expect(list.boards).toEqual([]);
  });
});

describe('TensorBoardRows', () => {
  it('names each TensorBoard, its state, and wires Open and Stop', () => {
    const onOpen = jest.fn();
    const onStop = jest.fn();
    const failed = board('env-tf219', {
      state: 'error',
      message: 'TensorBoard exited'
    });
    const tree = (
      <TensorBoardRows
        boards={[board('compare'), board('env-tf220'), failed]}
        trans={trans}
        displayName={id => (id === 'tf220' ? 'TensorFlow 2.20.0 (CPU)' : null)}
        onOpen={onOpen}
        onStop={onStop}
      />
    );
    const items = elements(tree).filter(
      e => e.props?.className === 'jp-tfenv-tensorboard-item'
    );
    expect(items.map(i => i.props['data-tfenv-tensorboard'])).toEqual([
      'compare',
      'env-tf220',
      'env-tf219'
    ]);
    const names = elements(tree)
      .filter(e => e.props?.className === 'jp-tfenv-tensorboard-item-name')
      .map(e => text(e));
    expect(names).toEqual([
      'All environments (compare)',
      'TensorFlow 2.20.0 (CPU)',
      'tf219'
    ]);
    const states = elements(tree).filter(e =>
      String(e.props?.className).includes('jp-tfenv-tensorboard-item-state')
    );
    expect(states.map(text)).toEqual(['running', 'running', 'error']);
    expect(states[2].props.title).toBe('TensorBoard exited');
    const buttons = elements(tree).filter(e => e.type === 'button');
    buttons[2].props.onClick();
    buttons[3].props.onClick();
    expect(onOpen).toHaveBeenCalledWith(board('env-tf220'));
    expect(onStop).toHaveBeenCalledWith(board('env-tf220'));
  });
});
