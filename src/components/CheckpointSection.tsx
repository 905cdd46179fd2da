import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import {
  type ICheckpointItem,
  type ICheckpointListing,
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

interface ICheckpointFetch {
  env: string;
  listing: ICheckpointListing | null;
  error: string | null;
  loading: boolean;
}

/**
 * The active environment's checkpoints: fetched when the environment changes
 * and then at most once per model refresh interval (on the model's changes),
 * and after a delete.
 */
export function CheckpointSection(
  props: IViewProps & { env: IEnvironmentSummary; refreshes: number }
): JSX.Element {
  const { model, trans, env, refreshes } = props;
  const version = useModel(model);
  const client = model.client;
  const [data, setData] = React.useState<ICheckpointFetch>({
    env: env.id,
    listing: null,
    error: null,
    loading: true
  });
  const [notice, setNotice] = React.useState<string | null>(null);
  const last = React.useRef<{ env: string; at: number; inFlight: boolean }>({
    env: '',
    at: 0,
    inFlight: false
  });
  const mounted = React.useRef(true);
  const section = React.useRef<HTMLElement>(null);
  React.useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);

  const fetchNow = React.useCallback(
    (envId: string): void => {
      if (!client.checkpoints) {
        setData({
          env: envId,
          listing: null,
          error: trans.__('This client cannot list checkpoints.'),
          loading: false
        });
        return;
      }
      last.current = { env: envId, at: Date.now(), inFlight: true };
      client.checkpoints(envId).then(
        listing => {
          if (last.current.env === envId) {
            last.current.inFlight = false;
          }
          if (mounted.current && last.current.env === envId) {
            setData({ env: envId, listing, error: null, loading: false });
          }
        },
        (error: unknown) => {
          if (last.current.env === envId) {
            last.current.inFlight = false;
          }
          if (mounted.current && last.current.env === envId) {
            setData({
              env: envId,
              listing: null,
              error: error instanceof Error ? error.message : String(error),
              loading: false
            });
          }
        }
      );
    },
    [client, trans]
  );

  React.useEffect(() => {
    const now = Date.now();
    const interval = model.refreshInterval;
    const envChanged = last.current.env !== env.id;
    if (envChanged) {
      setData({ env: env.id, listing: null, error: null, loading: true });
      setNotice(null);
      fetchNow(env.id);
      return;
    }
    // Never faster than the model polls (and not at all while it does not
    // poll), and not while the panel is hidden (the status bar keeps polling).
    const hidden =
      section.current !== null && section.current.offsetParent === null;
    const due =
      !hidden && interval > 0 && now - last.current.at >= interval * 0.9;
    if (due && !last.current.inFlight) {
      fetchNow(env.id);
    }
  }, [version, env.id, fetchNow, model]);

  // The refresh button: now.
  const seenRefreshes = React.useRef(refreshes);
  React.useEffect(() => {
    if (refreshes !== seenRefreshes.current) {
      seenRefreshes.current = refreshes;
      if (!last.current.inFlight) {
        fetchNow(env.id);
      }
    }
  }, [refreshes, env.id, fetchNow]);

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
    if (!result.button.accept || !client.deleteCheckpoint) {
      return;
    }
    try {
      await client.deleteCheckpoint(env.id, item.name, item.etag);
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
    fetchNow(env.id);
  };

  const listing = data.env === env.id ? data.listing : null;
  const containerPath = listing?.container_path || CONTAINER_CHECKPOINT_DIR;
  const items = listing ? sortCheckpoints(listing.checkpoints ?? []) : [];
  let body: JSX.Element;
  if (data.error && data.env === env.id) {
    body = (
      <div className="jp-tfenv-checkpoints-error" role="alert">
        <div>{trans.__('The checkpoints could not be listed:')}</div>
        <pre className="jp-tfenv-server-message">{data.error}</pre>
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
      ref={section}
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
