import type { TranslationBundle } from '@jupyterlab/translation';

import type { IEnvironment } from '../api';
import { shortDigest } from '../format';
import type { IProvenanceVerdict } from '../provenance';

/**
 * The short sentence of a provenance notification.
 */
export function provenanceShortText(
  verdict: IProvenanceVerdict,
  trans: TranslationBundle
): string {
  const recorded = verdict.recorded.environment;
  switch (verdict.status) {
    case 'missing':
      return trans.__(
        'It last ran in "%1", which is not in the catalog.',
        recorded
      );
    case 'changed':
      return trans.__(
        'It last ran in "%1", which points at another image now.',
        recorded
      );
    case 'other-environment':
      return trans.__('It last ran in "%1", not in this kernel.', recorded);
    default:
      return '';
  }
}

/**
 * The sentence of a provenance notice (also used by the dialog).
 */
export function provenanceText(
  verdict: IProvenanceVerdict,
  model: { environment(id: string): IEnvironment | null },
  trans: TranslationBundle
): string {
  const recorded = verdict.recorded;
  const current = verdict.current
    ? (model.environment(verdict.current)?.display_name ?? verdict.current)
    : trans.__('no TensorFlow environment');
  const when = recorded.recorded
    ? new Date(recorded.recorded).toLocaleDateString()
    : '?';
  switch (verdict.status) {
    case 'missing':
      return trans.__(
        'This notebook last ran (%1) in the environment "%2" (%3), which is not in this server’s catalog. It now runs on %4.',
        when,
        recorded.environment,
        recorded.image,
        current
      );
    case 'changed':
      return trans.__(
        'This notebook last ran (%1) in "%2" on %3; that environment now points at other bits (%4). It now runs on %5.',
        when,
        recorded.environment,
        recorded.digest
          ? shortDigest(recorded.digest)
          : shortDigest(recorded.image_id) || recorded.image,
        verdict.differences.join(', '),
        current
      );
    case 'other-environment':
      return trans.__(
        'This notebook last ran (%1) in "%2"; it now runs on %3.',
        when,
        recorded.environment,
        current
      );
    default:
      return '';
  }
}
