import {
  choiceAmount,
  choiceRequest,
  choiceSummary,
  ConsoleChoices,
  choiceText,
  keepRecordedChoice,
  matchChoice,
  offeredKeys,
  preselectedChoice,
  readRecordedChoice,
  withRecordedChoice
} from '../choices';
import type { IChoices } from '../api';
import type { ITrans } from '../state';

const trans: ITrans = {
  __: (msgid, ...args) =>
    msgid.replace(/%(\d)/g, (_, i) => String(args[Number(i) - 1])),
  _n: (one, many, n, ...args) =>
    (n === 1 ? one : many).replace(/%(\d)/g, (_, i) =>
      String([n, ...args][Number(i) - 1])
    )
};

const CHOICES: IChoices = {
  options: {
    cpus: [2, 4],
    memory: ['8g', '16g'],
    gpus: [0, 1, 2]
  },
  default: { gpus: 1, memory: '8g', cpus: 2 }
};

describe('choices', () => {
  it('compares sizes and numbers by amount', () => {
    expect(choiceAmount('memory', '16G')).toBe(16 * 1024 ** 3);
    expect(choiceAmount('memory', 'lots')).toBeNull();
    expect(choiceAmount('cpus', '4')).toBe(4);
    expect(matchChoice(CHOICES, 'memory', '16384m')).toBe('16g');
    expect(matchChoice(CHOICES, 'memory', '32g')).toBeNull();
    expect(matchChoice(CHOICES, 'gpus', 2)).toBe(2);
    expect(matchChoice(CHOICES, 'shm_size', '1g')).toBeNull();
  });

  it('shows the resources in a fixed order', () => {
    expect(offeredKeys(CHOICES)).toEqual(['gpus', 'memory', 'cpus']);
  });

  it('preselects the recorded choice when still offered, else the default', () => {
    expect(preselectedChoice('tf', CHOICES, null)).toEqual({
      gpus: 1,
      memory: '8g',
      cpus: 2
    });
    const recorded = {
      environment: 'tf',
      values: { gpus: 2, memory: '64g', cpus: 4 }
    };
    // 64g is no longer offered: the default instead.
    expect(preselectedChoice('tf', CHOICES, recorded)).toEqual({
      gpus: 2,
      memory: '8g',
      cpus: 4
    });
    // A choice recorded for another environment is not this one's.
    expect(preselectedChoice('other', CHOICES, recorded)).toEqual({
      gpus: 1,
      memory: '8g',
      cpus: 2
    });
  });

  it('reads and writes metadata.tfenv.choices beside the provenance', () => {
    const provenance = { environment: 'tf', image: 'i:1', digest: 'sha256:x' };
    const written = withRecordedChoice(provenance, 'tf', { memory: '16g' });
    expect(written).toEqual({
      ...provenance,
      choices: { environment: 'tf', values: { memory: '16g' } }
    });
    expect(readRecordedChoice(written)).toEqual({
      environment: 'tf',
      values: { memory: '16g' }
    });
    expect(withRecordedChoice(undefined, 'tf', { cpus: 2 })).toEqual({
      choices: { environment: 'tf', values: { cpus: 2 } }
    });
    for (const bad of [
      null,
      [],
      {},
      { choices: [] },
      { choices: { environment: 1, values: {} } },
      { choices: { environment: 'tf', values: [] } }
    ]) {
      expect(readRecordedChoice(bad)).toBeNull();
    }
    expect(
      readRecordedChoice({
        choices: { environment: 'tf', values: { memory: '8g', bad: {} } }
      })
    ).toEqual({ environment: 'tf', values: { memory: '8g' } });
  });

  it('keeps the recorded choice when the provenance is recorded again', () => {
    const before = withRecordedChoice({ environment: 'tf' }, 'tf', {
      gpus: 2
    });
    const next = { environment: 'tf', image: 'i:2' };
    expect(keepRecordedChoice(before, next)).toEqual({
      ...next,
      choices: { environment: 'tf', values: { gpus: 2 } }
    });
    expect(keepRecordedChoice({ environment: 'tf' }, next)).toBe(next);
  });

  it('says values the way the dialog shows them', () => {
    expect(choiceText('gpus', 0, trans)).toBe('no GPU');
    expect(choiceText('gpus', 1, trans)).toBe('1 GPU');
    expect(choiceText('gpus', 2, trans)).toBe('2 GPUs');
    expect(choiceText('memory', '16g', trans)).toBe('16 GiB');
    expect(choiceText('shm_size', '512m', trans)).toBe('512 MiB');
    expect(choiceText('memory', '1.5g', trans)).toBe('1.5 GiB');
    expect(choiceText('cpus', 1, trans)).toBe('1 CPU');
    expect(choiceText('cpus', 4, trans)).toBe('4 CPUs');
    expect(choiceSummary({ cpus: 4, gpus: 2, memory: '16g' }, trans)).toBe(
      '2 GPUs, 16 GiB, 4 CPUs'
    );
  });
});

describe('console choices', () => {
  it('asks the server to keep a console choice under its session name', () => {
    expect(
      choiceRequest({ path: 'dir/console-1-abc', name: 'Console 1' }, 'tf', {
        memory: '16g'
      })
    ).toEqual({
      path: 'dir/console-1-abc',
      name: 'Console 1',
      environment: 'tf',
      choices: { memory: '16g' }
    });
    // A notebook: its path only (the server reads the file's name from it).
    expect(choiceRequest({ path: 'nb.ipynb' }, 'tf', { gpus: 0 })).toEqual({
      path: 'nb.ipynb',
      environment: 'tf',
      choices: { gpus: 0 }
    });
  });

  it("preselects the console's own choice, else the last one for the environment", () => {
    const memory = new ConsoleChoices();
    expect(memory.recorded('console-1', 'tf')).toBeNull();
    memory.remember('console-1', 'tf', { gpus: 2, memory: '16g' });
    memory.remember('console-2', 'tf', { gpus: 0, memory: '8g' });
    memory.remember('console-1', 'other', { cpus: 4 });
    expect(memory.recorded('console-1', 'tf')).toEqual({
      environment: 'tf',
      values: { gpus: 2, memory: '16g' }
    });
    // A new console: what the last console chose for that environment.
    expect(memory.recorded('console-3', 'tf')?.values).toEqual({
      gpus: 0,
      memory: '8g'
    });
    expect(
      preselectedChoice('tf', CHOICES, memory.recorded('console-1', 'tf'))
    ).toEqual({ gpus: 2, memory: '16g', cpus: 2 });
    // A closed console's own choices go; the last per environment stays.
    memory.forget('console-1');
    expect(memory.recorded('console-1', 'tf')?.values).toEqual({
      gpus: 0,
      memory: '8g'
    });
    expect(memory.recorded('console-1', 'other')?.values).toEqual({ cpus: 4 });
    memory.forget('console-10');
    expect(memory.recorded('console-2', 'tf')?.values).toEqual({
      gpus: 0,
      memory: '8g'
    });
  });
});
