import * as React from 'react';

import type { IOtherCheckpoints } from '../api';
import { sortCheckpoints } from '../checkpoints';

import { CheckpointRow } from './CheckpointRow';
import { Breakable } from './common';
import type { IViewProps } from './types';
import { useModel } from './useModel';

/**
 * The user's other environments' checkpoints, as the active kernel has them:
 * read-only at `/tfenv/checkpoints-of/<environment>` (the kernel's
 * `checkpoints.others`), grouped by environment, with the line that restores
 * the latest of a TF set. The model lists them when the kernel or the set of
 * environments changes, and on the panel's refresh button.
 */
export function OtherCheckpointsGroup(props: IViewProps): JSX.Element | null {
  const { model, trans } = props;
  useModel(model);
  const others: IOtherCheckpoints[] =
    model.kernelStatus?.checkpoints?.others ?? [];
  const listings = model.otherCheckpoints;
  if (!others.length) {
    return null;
  }
  const name = (id: string): string =>
    model.environments?.find(e => e.id === id)?.display_name ?? id;
  return (
    <div className="jp-tfenv-checkpoints-others">
      <h4 className="jp-tfenv-checkpoints-others-title">
        {trans.__('Other environments (read-only)')}
      </h4>
      {others.map(other => {
        const got = listings.get(other.environment);
        const items =
          got && typeof got !== 'string'
            ? sortCheckpoints(got.checkpoints ?? [])
            : [];
        const set = items.find(i => i.kind === 'tf_checkpoint_set');
        const folder = set?.path ?? '';
        const hint = set
          ? `tf.train.latest_checkpoint('${other.container_path}${
              folder ? `/${folder}` : ''
            }')`
          : null;
        return (
          <div
            key={other.environment}
            className="jp-tfenv-checkpoints-other"
            data-tfenv-env={other.environment}
          >
            <div className="jp-tfenv-checkpoints-other-head">
              <span className="jp-tfenv-checkpoints-other-name">
                {name(other.environment)}
              </span>
              <code
                className="jp-tfenv-checkpoints-other-path"
                title={other.host_path ?? other.volume ?? undefined}
              >
                <Breakable text={other.container_path} />
              </code>
            </div>
            {typeof got === 'string' ? (
              <div className="jp-tfenv-checkpoints-error" role="alert">
                <pre className="jp-tfenv-server-message">{got}</pre>
              </div>
            ) : !got ? (
              <div className="jp-tfenv-checkpoints-loading">
                {trans.__('Reading the checkpoints…')}
              </div>
            ) : items.length === 0 ? (
              <div className="jp-tfenv-checkpoints-empty">
                {trans.__('No checkpoints')}
              </div>
            ) : (
              <ul className="jp-tfenv-checkpoint-list">
                {items.map(item => (
                  <CheckpointRow key={item.name} item={item} trans={trans} />
                ))}
              </ul>
            )}
            {hint && (
              <code className="jp-tfenv-checkpoints-hint" title={hint}>
                <Breakable text={hint} />
              </code>
            )}
          </div>
        );
      })}
    </div>
  );
}
