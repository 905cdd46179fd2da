import * as React from 'react';

import { shortDigest } from '../format';
import type { IProvenanceVerdict } from '../provenance';

import { provenanceText } from './provenanceText';
import type { IViewProps } from './types';

/**
 * A notebook that last ran on other bits.
 */
export function ProvenanceNotice(
  props: IViewProps & { verdict: IProvenanceVerdict }
): JSX.Element {
  const { model, actions, trans, verdict } = props;
  const recorded = verdict.recorded;
  const candidate = verdict.candidate
    ? model.environment(verdict.candidate)
    : null;
  return (
    <section
      className="jp-tfenv-provenance"
      data-tfenv-provenance={verdict.status}
      role="alert"
    >
      <div className="jp-tfenv-state-head">
        <span className="jp-tfenv-state-dot" aria-hidden="true" />
        <span className="jp-tfenv-state-title">
          {trans.__('Recorded environment differs')}
        </span>
      </div>
      <p className="jp-tfenv-state-text">
        {provenanceText(verdict, model, trans)}
      </p>
      <dl className="jp-tfenv-facts">
        <dt>{trans.__('Recorded')}</dt>
        <dd className="jp-tfenv-mono">
          {recorded.environment} · {recorded.image}
          {recorded.digest ? ` · ${shortDigest(recorded.digest)}` : ''}
        </dd>
      </dl>
      <div className="jp-tfenv-state-actions">
        {candidate && candidate.id !== verdict.current && (
          <button
            className="jp-mod-styled jp-mod-accept jp-tfenv-provenance-switch"
            data-tfenv-env={candidate.id}
            onClick={() => actions.switchTo(candidate.id)}
          >
            {trans.__('Switch to %1', candidate.display_name)}
          </button>
        )}
        <button
          className="jp-mod-styled jp-mod-reject jp-tfenv-provenance-keep"
          onClick={() => actions.keepCurrent()}
        >
          {trans.__('Keep current')}
        </button>
      </div>
    </section>
  );
}
