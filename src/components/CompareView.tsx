import * as React from 'react';

import { diffSummary, type IEnvironmentDiff } from '../envdiff';
import type { ITrans } from '../state';

/**
 * The difference between two environments (`envdiff.ts`): the headline
 * versions, then the packages added, removed and at other versions.
 */
export function CompareView(props: {
  from: { id: string; name: string };
  to: { id: string; name: string };
  diff: IEnvironmentDiff;
  trans: ITrans;
}): JSX.Element {
  const { from, to, diff, trans } = props;
  const dash = '—';
  return (
    <div
      className="jp-tfenv-compare"
      data-tfenv-from={from.id}
      data-tfenv-to={to.id}
    >
      <table className="jp-tfenv-compare-versions">
        <thead>
          <tr>
            <th />
            <th>{from.name}</th>
            <th>{to.name}</th>
          </tr>
        </thead>
        <tbody>
          {diff.versions.map(row => (
            <tr
              key={row.key}
              data-tfenv-version={row.key}
              data-tfenv-same={String(row.same)}
            >
              <th>{row.label}</th>
              <td>{row.from ?? dash}</td>
              <td>{row.to ?? dash}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p className="jp-tfenv-compare-summary">{diffSummary(diff, trans)}</p>
      {diff.added.length > 0 && (
        <section className="jp-tfenv-compare-added">
          <h4>{trans.__('Only in %1', to.name)}</h4>
          <ul>
            {diff.added.map(p => (
              <li key={p.name} data-tfenv-package={p.name}>
                {`+ ${p.name} ${p.version}`}
              </li>
            ))}
          </ul>
        </section>
      )}
      {diff.removed.length > 0 && (
        <section className="jp-tfenv-compare-removed">
          <h4>{trans.__('Only in %1', from.name)}</h4>
          <ul>
            {diff.removed.map(p => (
              <li key={p.name} data-tfenv-package={p.name}>
                {`− ${p.name} ${p.version}`}
              </li>
            ))}
          </ul>
        </section>
      )}
      {diff.changed.length > 0 && (
        <section className="jp-tfenv-compare-changed">
          <h4>{trans.__('Other versions')}</h4>
          <ul>
            {diff.changed.map(p => (
              <li key={p.name} data-tfenv-package={p.name}>
                {`${p.name} ${p.from} → ${p.to}`}
              </li>
            ))}
          </ul>
        </section>
      )}
    </div>
  );
}
