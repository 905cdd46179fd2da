import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import type { IEngineState } from '../api';
import { DAEMON_JSON_LINE } from '../liverestore';

/**
 * The Docker engine's live-restore is off (issue 24): an engine restart or
 * upgrade stops every kernel container. Shown to whoever runs this server
 * (in a single-user server that is its admin); a JupyterHub's servers get no
 * `engine` from the server, so its users never see it (server/sources.py).
 */
export function EngineWarning(props: {
  engine: IEngineState;
  trans: TranslationBundle;
  onDismiss?: () => void;
}): JSX.Element {
  const { engine, trans, onDismiss } = props;
  const where = engine.version
    ? trans.__('Docker engine %1 at %2', engine.version, engine.host)
    : trans.__('Docker engine at %1', engine.host);
  return (
    <div
      className="jp-tfenv-engine-warning"
      role="note"
      data-tfenv-live-restore="false"
      data-tfenv-engine-host={engine.host}
      title={where}
    >
      <p className="jp-tfenv-engine-warning-text">
        {trans.__(
          "The Docker engine's live-restore is off: an engine restart or upgrade restarts every kernel; variables are lost."
        )}
      </p>
      <p className="jp-tfenv-engine-warning-fix">
        {trans.__('Turn it on: add')} <code>{DAEMON_JSON_LINE}</code>{' '}
        {trans.__(
          'to /etc/docker/daemon.json, then run `sudo systemctl reload docker` (no container stops). See docs/operations.md of jupyter_tfenv.'
        )}
      </p>
      {onDismiss && (
        <button
          className="jp-Button jp-mod-minimal jp-tfenv-engine-warning-dismiss"
          title={trans.__(
            'Hide this warning for this engine in this browser (it comes back for another engine or version)'
          )}
          onClick={onDismiss}
        >
          {trans.__('Dismiss')}
        </button>
      )}
    </div>
  );
}
