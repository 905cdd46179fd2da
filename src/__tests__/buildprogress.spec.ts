import type { IBuild } from '../api';
import {
  buildFromPayload,
  buildProgressText,
  buildStepStates,
  isBuildFinished,
  reduceBuildEvent
} from '../buildprogress';
import type { ITrans } from '../state';

const trans: ITrans = {
  __: (msgid, ...args) =>
    msgid.replace(/%(\d)/g, (_, i) => String(args[Number(i) - 1])),
  _n: (single, plural, n) => (n === 1 ? single : plural)
};

// What GET /tfenv/builds/{id} answers (jupyter_tfenv/openapi.yaml, Build).
const started: IBuild & { seq: number } = {
  id: 'b1',
  environment: 'ds',
  image: 'repo/ds:unbuilt-1',
  state: 'building',
  step: 'resolve',
  steps: ['resolve', 'download', 'build', 'verify', 'tag'],
  message: 'Building ds',
  wheels: null,
  result: null,
  seq: 1
};

describe('build progress', () => {
  it('follows the steps and counts the wheels', () => {
    let progress = reduceBuildEvent(null, 'snapshot', started);
    progress = reduceBuildEvent(progress, 'progress', {
      ...started,
      step: 'download',
      wheels: { done: 2, total: 3 },
      message: 'downloading wheels 2/3',
      seq: 4
    });
    expect(progress!.step).toBe('download');
    expect(buildProgressText(progress!, trans)).toBe(
      'Downloading wheels 2/3 (step 2 of 5)'
    );
    expect(buildStepStates(progress!).map(s => s.state)).toEqual([
      'done',
      'current',
      'todo',
      'todo',
      'todo'
    ]);
    // An older event (a late poll) does not move it back.
    expect(reduceBuildEvent(progress, 'progress', { ...started, seq: 2 })).toBe(
      progress
    );
    // Another build's event is not this one's.
    expect(
      reduceBuildEvent(progress, 'done', { ...started, id: 'b2', seq: 9 })
    ).toBe(progress);
  });

  it('ends built, with the image', () => {
    const done = reduceBuildEvent(buildFromPayload(started), 'done', {
      ...started,
      state: 'done',
      step: 'tag',
      seq: 9,
      result: {
        image: 'repo/ds:v2-abc',
        image_id: 'sha256:1',
        already_built: false
      }
    })!;
    expect(isBuildFinished(done)).toBe(true);
    expect(buildProgressText(done, trans)).toBe('Built repo/ds:v2-abc');
    expect(buildStepStates(done).every(s => s.state === 'done')).toBe(true);
    // Nothing changes a finished build.
    expect(reduceBuildEvent(done, 'progress', { ...started, seq: 10 })).toBe(
      done
    );
  });

  it('ends failed with the build’s own message, at the step it failed', () => {
    const failed = reduceBuildEvent(buildFromPayload(started), 'error', {
      ...started,
      state: 'error',
      step: 'download',
      message:
        'Resolving the packages for Python 3.11 failed (pip exit 1): no six==0.0.1',
      seq: 5
    })!;
    expect(failed.state).toBe('error');
    expect(buildProgressText(failed, trans)).toBe(
      'Build failed: Resolving the packages for Python 3.11 failed (pip exit 1): no six==0.0.1'
    );
    expect(buildStepStates(failed).map(s => s.state)).toEqual([
      'done',
      'failed',
      'todo',
      'todo',
      'todo'
    ]);
  });

  it('ignores what is no build', () => {
    expect(reduceBuildEvent(null, 'progress', null)).toBeNull();
    expect(reduceBuildEvent(null, 'progress', { seq: 1 })).toBeNull();
    expect(buildFromPayload({ ...started, step: 'nonsense' as any }).step).toBe(
      'resolve'
    );
  });
});
