import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import {
  type ICheckpointItem,
  type IEnvironmentSummary,
  TfEnvApiError
} from '../api';
import {
  checkpointLabel,
  CONTAINER_CHECKPOINT_DIR,
  sortCheckpoints
} from '../checkpoints';

import { CheckpointRow } from './CheckpointRow';
import { Breakable } from './common';
import { OtherCheckpointsGroup } from './OtherCheckpointsGroup';
import type { IViewProps } from './types';
import { useModel } from './useModel';

/**
 * The one-line code hint of the empty checkpoint list (code: not translated).
 */
const CHECKPOINT_HINT =
  "tf.train.CheckpointManager(ckpt, os.environ['TFENV_CHECKPOINT_DIR'] + '/run1', max_to_keep=3)";

/**
 * The active environment's checkpoints, as the model lists them (when the
 * environment changes, then at most once per refresh interval while the
 * panel is shown, on the refresh button and after a delete).
 */
export function CheckpointSection(
  props: IViewProps & { env: IEnvironmentSummary }
): JSX.Element {
  const { model, trans, env } = props;
  useModel(model);
  const [notice, setNotice] = React.useState<string | null>(null);
  // A notice is about the environment it was given for.
  React.useEffect(() => {
    setNotice(null);
  }, [env.id]);

  const remove = async (item: ICheckpointItem): Promise<void> => {
    const label = checkpointLabel(item);
    const result = await showDialog({
      title: trans.__('Delete checkpoint'),
      body: trans.__(
        'Delete "%1" of "%2" with all its files? This cannot be undone.',
        label,
        env.display_name
      ),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await model.deleteCheckpoint(env.id, item);
      setNotice(null);
    } catch (error) {
      const status = error instanceof TfEnvApiError ? error.status : null;
      setNotice(
        status === 412
          ? trans.__(
              '"%1" changed since it was listed (a save may be running); nothing was deleted. Check the refreshed list and try again.',
              label
            )
          : trans.__(
              'Deleting "%1" failed: %2',
              label,
              error instanceof Error ? error.message : String(error)
            )
      );
    }
  };

  const data = model.checkpoints;
  const current = data !== null && data.environment === env.id;
  const listing = current ? data.listing : null;
  const error = !model.canListCheckpoints
    ? trans.__('This client cannot list checkpoints.')
    : current
      ? data.error
      : null;
  const containerPath = listing?.container_path || CONTAINER_CHECKPOINT_DIR;
  const items = listing ? sortCheckpoints(listing.checkpoints ?? []) : [];
  let body: JSX.Element;
  if (error) {
    body = (
      <div className="jp-tfenv-checkpoints-error" role="alert">
        <div>{trans.__('The checkpoints could not be listed:')}</div>
        <pre className="jp-tfenv-server-message">{error}</pre>
      </div>
    );
  } else if (!listing) {
    body = (
      <div className="jp-tfenv-checkpoints-loading">
        {trans.__('Reading the checkpoints…')}
      </div>
    );
  } else if (items.length === 0) {
    body = (
      <div className="jp-tfenv-checkpoints-empty">
        <div>
          {trans.__('No checkpoints yet — save to %1', '$TFENV_CHECKPOINT_DIR')}
        </div>
        <code className="jp-tfenv-checkpoints-hint" title={CHECKPOINT_HINT}>
          <Breakable text={CHECKPOINT_HINT} />
        </code>
      </div>
    );
  } else {
    body = (
      <ul className="jp-tfenv-checkpoint-list">
        {items.map(item => (
          <CheckpointRow
            key={item.name}
            item={item}
            trans={trans}
            onDelete={() => void remove(item)}
          />
        ))}
      </ul>
    );
  }
  return (
    <section
      className="jp-tfenv-section jp-tfenv-checkpoints"
      data-tfenv-env={env.id}
    >
      <h3 className="jp-tfenv-section-title">{trans.__('Checkpoints')}</h3>
      <dl className="jp-tfenv-facts">
        <dt>{trans.__('In the container')}</dt>
        <dd>
          <code className="jp-tfenv-checkpoints-container-path">
            <Breakable text={containerPath} />
          </code>
        </dd>
        <dt>{trans.__('On the host')}</dt>
        <dd>
          <code
            className="jp-tfenv-checkpoints-location"
            title={listing?.location ?? undefined}
          >
            <Breakable text={listing?.location ?? '—'} />
          </code>
        </dd>
      </dl>
      {notice && (
        <div className="jp-tfenv-checkpoints-notice" role="alert">
          {notice}
        </div>
      )}
      {listing?.truncated && (
        <div className="jp-tfenv-checkpoints-truncated">
          {trans.__('The folder is too large: only part of it was read.')}
        </div>
      )}
      {body}
      <OtherCheckpointsGroup {...props} />
    </section>
  );
}
