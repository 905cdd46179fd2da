// The kernel's traffic as the panel says it (issue 22: CurveZMQ between the
// user's server and a Kubernetes kernel pod): pure, unit-tested in
// __tests__/encryption.spec.ts.

import type { IKernelStatus } from './api/kernels';

/**
 * What the panel shows about the kernel's encryption: `curve` (a kernel pod
 * reached with CurveZMQ), `clear` (a kernel pod the broker's policy let run
 * unencrypted, with why) or null (nothing to say: a Docker kernel, whose Unix
 * sockets cross no network, or an older server).
 */
export function encryptionNote(
  status:
    Pick<IKernelStatus, 'encryption' | 'encryption_warning'> | null | undefined
): { state: 'curve' | 'clear'; detail: string } | null {
  if (!status) {
    return null;
  }
  if (status.encryption === 'curve') {
    return { state: 'curve', detail: '' };
  }
  const warning = status.encryption_warning;
  if (typeof warning === 'string' && warning !== '') {
    return { state: 'clear', detail: warning };
  }
  return null;
}
