import * as React from 'react';

import { sortEnvironments } from '../state';

import { EnvironmentRow } from './EnvironmentRow';
import type { IViewProps } from './types';

/**
 * The catalog: switch and pull.
 */
export function EnvironmentList(props: IViewProps): JSX.Element {
  const { model, trans } = props;
  const envs = sortEnvironments(model.environments ?? [], model.gpus);
  return (
    <section className="jp-tfenv-section jp-tfenv-envs">
      <h3 className="jp-tfenv-section-title">{trans.__('Environments')}</h3>
      {props.actions.compareTensorBoards && envs.length > 0 && (
        <div className="jp-tfenv-envs-actions">
          <button
            className="jp-mod-styled jp-tfenv-tensorboard-compare"
            title={trans.__(
              'Every environment of yours as a run group in one TensorBoard'
            )}
            onClick={() => props.actions.compareTensorBoards!()}
          >
            {trans.__('Compare in TensorBoard')}
          </button>
        </div>
      )}
      {model.environments === null && !model.environmentsError && (
        <p className="jp-tfenv-muted">
          <span className="jp-tfenv-spinner" aria-hidden="true" />{' '}
          {trans.__('Loading the catalog…')}
        </p>
      )}
      {model.environmentsError && (
        <pre className="jp-tfenv-message">{model.environmentsError}</pre>
      )}
      {model.environments !== null && envs.length === 0 && (
        <p className="jp-tfenv-muted jp-tfenv-empty">
          {trans.__(
            'The catalog has no environments. Add some to the catalog file (c.TFEnvCatalog.catalog_files or $JUPYTER_TFENV_CATALOG).'
          )}
        </p>
      )}
      <ul className="jp-tfenv-env-list">
        {envs.map(env => (
          <EnvironmentRow key={env.id} {...props} env={env} />
        ))}
      </ul>
      {model.problems.length > 0 && (
        <div className="jp-tfenv-problems">
          <h4>{trans.__('Left out of the catalog')}</h4>
          <ul>
            {model.problems.map((p, i) => (
              <li key={i} className="jp-tfenv-problem">
                <span className="jp-tfenv-mono">
                  {[p.source, p.entry, p.field].filter(Boolean).join(': ')}
                </span>
                <span>{p.message}</span>
              </li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}
