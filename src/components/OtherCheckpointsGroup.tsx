import * as React from 'react';

import type {
  ICheckpointListing,
  IEnvironmentSummary,
  IOtherCheckpoints
} from '../api';
import { sortCheckpoints } from '../checkpoints';

import { CheckpointRow } from './CheckpointRow';
import { Breakable } from './common';
import type { IViewProps } from './types';
import { useModel } from './useModel';

interface IOtherFetch {
  key: string;
  listings: Record<string, ICheckpointListing | string>;
}

/**
 * The user's other environments' checkpoints, as the active kernel has them:
 * read-only at `/tfenv/checkpoints-of/<environment>` (the kernel's
 * `checkpoints.others`), grouped by environment, with the line that restores
 * the latest of a TF set. Listed when the kernel or the set of environments
 * changes, and on the panel's refresh button.
 */
export function OtherCheckpointsGroup(
  props: IViewProps & { env: IEnvironmentSummary; refreshes: number }
): JSX.Element | null {
  const { model, trans, refreshes } = props;
  useModel(model);
  const client = model.client;
  const kernel = model.kernelStatus;
  const others: IOtherCheckpoints[] = kernel?.checkpoints?.others ?? [];
  const key = `${kernel?.kernel_id ?? ''}:${others
    .map(o => o.environment)
    .join(',')}:${refreshes}`;
  const [data, setData] = React.useState<IOtherFetch>({
    key: '',
    listings: {}
  });
  React.useEffect(() => {
    if (!others.length || !client.checkpoints) {
      return;
    }
    let current = true;
    const envs = others.map(o => o.environment);
    void Promise.all(
      envs.map(id =>
        client.checkpoints!(id).then(
          listing => listing as ICheckpointListing | string,
          (error: unknown) =>
            error instanceof Error ? error.message : String(error)
        )
      )
    ).then(results => {
      if (current) {
        const listings: Record<string, ICheckpointListing | string> = {};
        envs.forEach((id, i) => (listings[id] = results[i]));
        setData({ key, listings });
      }
    });
    return () => {
      current = false;
    };
  }, [key, client]);
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
        const got = data.listings[other.environment];
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
