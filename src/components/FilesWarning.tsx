import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import type { IFilesWarning } from '../api';

/**
 * Why this kernel cannot write into folders and files made in JupyterLab: the
 * server and its kernels are different users (the server warns at start too).
 */
export function FilesWarning(props: {
  warning: IFilesWarning;
  trans: TranslationBundle;
}): JSX.Element {
  const { warning, trans } = props;
  return (
    <div
      className="jp-tfenv-files-warning"
      role="note"
      data-tfenv-server-uid={warning.server_uid}
      data-tfenv-kernel-uid={warning.kernel_uid}
      title={warning.message}
    >
      <p>
        {trans.__(
          'Files made in JupyterLab (New Folder, uploads, new notebooks) belong to uid %1; this kernel runs as uid %2 and cannot write into them (PermissionError).',
          warning.server_uid,
          warning.kernel_uid
        )}
      </p>
      <p>
        {trans.__(
          "Run JupyterLab as uid %1, or share the notebook folder with the kernels' group (chmod 2775, server umask 002).",
          warning.kernel_uid
        )}
      </p>
    </div>
  );
}
