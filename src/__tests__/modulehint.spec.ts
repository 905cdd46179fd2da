import { missingModule, moduleHint } from '../modulehint';
import type { ITrans } from '../state';

const trans: ITrans = {
  __: (msgid, ...args) =>
    msgid.replace(/%(\d)/g, (_, i) => String(args[Number(i) - 1])),
  _n: (single, plural, n) => (n === 1 ? single : plural)
};

describe('missingModule', () => {
  it("reads the top-level module from Python's message", () => {
    expect(missingModule("No module named 'pandas'")).toBe('pandas');
    expect(missingModule("No module named 'sklearn.linear_model'")).toBe(
      'sklearn'
    );
    expect(missingModule('something else')).toBeNull();
  });
});

describe('moduleHint', () => {
  it('points a tfenv kernel at the catalog pip field, keyed per environment and module', () => {
    const hint = moduleHint(
      'tfenv-tf213',
      'ModuleNotFoundError',
      "No module named 'pandas'",
      trans
    );
    expect(hint?.key).toBe('tf213:pandas');
    expect(hint?.text).toBe(
      "No 'pandas' in 'tf213': kernels cannot pip install. Add pandas==<version> to the catalog's pip."
    );
    expect(hint?.text.length).toBeLessThanOrEqual(140);
    expect(hint?.detail).toContain(
      "'pandas' is not in the environment 'tf213'"
    );
    expect(hint?.detail).toContain('base: tf213');
    expect(hint?.detail).toContain('`jupyter tfenv build`');
  });

  it('says nothing for other kernels and other errors', () => {
    expect(
      moduleHint(
        'python3',
        'ModuleNotFoundError',
        "No module named 'pandas'",
        trans
      )
    ).toBeNull();
    expect(moduleHint('tfenv-tf213', 'NameError', 'x', trans)).toBeNull();
    expect(moduleHint(undefined, 'ModuleNotFoundError', '', trans)).toBeNull();
  });
});
