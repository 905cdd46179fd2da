import { encryptionNote } from '../encryption';

const WARNING =
  "the kernel's ZeroMQ traffic is NOT encrypted: the user's server sent no CurveZMQ keys with the start";

describe('encryptionNote', () => {
  it('says a kernel pod reached with CurveZMQ is encrypted', () => {
    expect(
      encryptionNote({ encryption: 'curve', encryption_warning: null })
    ).toEqual({ state: 'curve', detail: '' });
  });

  it('says why a kernel pod runs in clear', () => {
    expect(
      encryptionNote({ encryption: 'none', encryption_warning: WARNING })
    ).toEqual({ state: 'clear', detail: WARNING });
  });

  it('says nothing for Docker kernels and older servers', () => {
    expect(
      encryptionNote({ encryption: 'none', encryption_warning: null })
    ).toBeNull();
    expect(encryptionNote({})).toBeNull();
    expect(encryptionNote(null)).toBeNull();
    expect(encryptionNote({ encryption_warning: '' })).toBeNull();
  });
});
