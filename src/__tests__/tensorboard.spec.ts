import type { ITensorBoard, ITfEnvClient } from '../api';
import { TfEnvApiError } from '../api';
import {
  type ITensorBoardState,
  startingText,
  tensorBoardErrorText,
  tensorBoardName,
  TensorBoardSession,
  tensorBoardTitle
} from '../tensorboard';
import { trans } from './fixtures/trans';

const IMAGE = 'tfenv-test/tensorflow:2.20.0-jupyter';

function board(
  state: ITensorBoard['state'],
  extra: Partial<ITensorBoard> = {}
): ITensorBoard {
  return {
    name: 'env-tf220',
    view: 'environment',
    environment: 'tf220',
    image: IMAGE,
    state,
    message: null,
    url: '/base/tfenv/tensorboard/env-tf220/',
    started_at: '2026-01-01T00:00:00Z',
    last_activity: '2026-01-01T00:00:00Z',
    ...extra
  };
}

/**
 * A session against a client whose answers the test scripts; every state it
 * goes through is recorded.
 */
function session(client: Partial<ITfEnvClient>): {
  session: TensorBoardSession;
  phases: ITensorBoardState[];
} {
  const phases: ITensorBoardState[] = [];
  const s = new TensorBoardSession({
    client: client as ITfEnvClient,
    target: { view: 'environment', environment: 'tf220' },
    trans,
    interval: 1,
    changed: state => phases.push(state)
  });
  return { session: s, phases };
}

describe('TensorBoard names and titles', () => {
  it('names one TensorBoard per environment and one for the comparison', () => {
    expect(tensorBoardName({ view: 'environment', environment: 'tf220' })).toBe(
      'env-tf220'
    );
    expect(tensorBoardName({ view: 'compare' })).toBe('compare');
  });

  it("titles the tab with the environment's display name", () => {
    expect(
      tensorBoardTitle(
        { view: 'environment', environment: 'tf220' },
        'TensorFlow 2.20.0 (CPU)',
        trans
      )
    ).toBe('TensorBoard: TensorFlow 2.20.0 (CPU)');
    expect(
      tensorBoardTitle({ view: 'environment', environment: 'x' }, null, trans)
    ).toBe('TensorBoard: x');
    expect(tensorBoardTitle({ view: 'compare' }, null, trans)).toBe(
      'TensorBoard: compare'
    );
  });

  it('names the image while it starts', () => {
    const state: ITensorBoardState = {
      phase: 'starting',
      image: IMAGE,
      url: null,
      message: null
    };
    expect(startingText(state, trans)).toBe(
      `Starting TensorBoard in ${IMAGE}…`
    );
    expect(startingText({ ...state, image: null }, trans)).toBe(
      'Starting TensorBoard…'
    );
  });

  it("shows the server's message as it is, and says when there is none", () => {
    const missing = new TfEnvApiError(
      'The image tfenv-test/x:1 is not present: jupyter tfenv pull x',
      409
    );
    expect(tensorBoardErrorText(missing, trans)).toBe(missing.message);
    const hub = new TfEnvApiError('not yet on a hub', 501);
    expect(tensorBoardErrorText(hub, trans)).toBe('not yet on a hub');
    const bare = new TfEnvApiError('', 502);
    expect(tensorBoardErrorText(bare, trans)).toContain('HTTP 502');
    const offline = new TfEnvApiError('Failed to fetch', null);
    expect(tensorBoardErrorText(offline, trans)).toContain(
      'could not be reached'
    );
  });
});

describe('TensorBoardSession', () => {
  it('polls a starting TensorBoard until it runs', async () => {
    const getTensorBoard = jest
      .fn()
      .mockResolvedValueOnce(board('starting'))
      .mockResolvedValueOnce(board('running'));
    const { session: s, phases } = session({
      startTensorBoard: jest.fn().mockResolvedValue(board('starting')),
      getTensorBoard
    });
    await s.start();
    expect(phases.map(p => p.phase)).toEqual([
      'requesting',
      'starting',
      'starting',
      'running'
    ]);
    expect(getTensorBoard).toHaveBeenCalledWith('env-tf220');
    expect(s.state).toEqual({
      phase: 'running',
      image: IMAGE,
      url: '/base/tfenv/tensorboard/env-tf220/',
      message: null
    });
  });

  it('shows a reused TensorBoard at once, without polling', async () => {
    const getTensorBoard = jest.fn();
    const { session: s } = session({
      startTensorBoard: jest.fn().mockResolvedValue(board('running')),
      getTensorBoard
    });
    await s.start();
    expect(s.state.phase).toBe('running');
    expect(getTensorBoard).not.toHaveBeenCalled();
  });

  it("shows the server's error, and a retry starts again", async () => {
    const startTensorBoard = jest
      .fn()
      .mockResolvedValueOnce(board('starting'))
      .mockResolvedValueOnce(board('running'));
    const { session: s } = session({
      startTensorBoard,
      getTensorBoard: jest.fn().mockResolvedValue(
        board('error', {
          message: 'TensorBoard exited: no module tensorboard'
        })
      )
    });
    await s.start();
    expect(s.state).toMatchObject({
      phase: 'error',
      message: 'TensorBoard exited: no module tensorboard'
    });
    await s.start();
    expect(s.state.phase).toBe('running');
    expect(startTensorBoard).toHaveBeenCalledTimes(2);
  });

  it('turns a refused POST into the error state (never a rejection)', async () => {
    const { session: s } = session({
      startTensorBoard: jest
        .fn()
        .mockRejectedValue(
          new TfEnvApiError("No environment 'tf220' in the catalog.", 404)
        )
    });
    await expect(s.start()).resolves.toBeUndefined();
    expect(s.state.phase).toBe('error');
    expect(s.state.message).toContain("No environment 'tf220' in the catalog.");
  });

  it('says so when the TensorBoard disappears while it starts', async () => {
    const { session: s } = session({
      startTensorBoard: jest.fn().mockResolvedValue(board('starting')),
      getTensorBoard: jest
        .fn()
        .mockRejectedValue(new TfEnvApiError('No TensorBoard', 404))
    });
    await s.start();
    expect(s.state.phase).toBe('error');
    expect(s.state.message).toContain('Retry');
  });

  it('rides out a few failed polls, then gives up with the reason', async () => {
    const offline = new TfEnvApiError('Failed to fetch', null);
    const getTensorBoard = jest
      .fn()
      .mockRejectedValueOnce(offline)
      .mockResolvedValueOnce(board('running'));
    const { session: s } = session({
      startTensorBoard: jest.fn().mockResolvedValue(board('starting')),
      getTensorBoard
    });
    await s.start();
    expect(s.state.phase).toBe('running');

    const always = jest.fn().mockRejectedValue(offline);
    const { session: t } = session({
      startTensorBoard: jest.fn().mockResolvedValue(board('starting')),
      getTensorBoard: always
    });
    await t.start();
    expect(t.state.phase).toBe('error');
    expect(always).toHaveBeenCalledTimes(5);
    expect(t.state.message).toContain('Failed to fetch');
  });

  it('stops polling once disposed and drops late answers', async () => {
    let answer: (b: ITensorBoard) => void = () => undefined;
    const { session: s, phases } = session({
      startTensorBoard: jest.fn(
        () => new Promise<ITensorBoard>(resolve => (answer = resolve))
      ),
      getTensorBoard: jest.fn()
    });
    const started = s.start();
    s.dispose();
    await started;
    answer(board('running'));
    await Promise.resolve();
    expect(phases.map(p => p.phase)).toEqual(['requesting']);
    expect(s.state.phase).toBe('requesting');
  });

  it('says when the server has no TensorBoard support', async () => {
    const { session: s } = session({});
    await s.start();
    expect(s.state.phase).toBe('error');
    expect(s.state.message).toContain('update jupyter_tfenv');
  });
});
