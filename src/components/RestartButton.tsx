import * as React from 'react';

import type { IViewProps } from './types';

export function RestartButton(props: IViewProps): JSX.Element {
  return (
    <button
      className="jp-mod-styled jp-mod-accept jp-tfenv-restart"
      onClick={() => props.actions.restart()}
    >
      {props.trans.__('Restart kernel')}
    </button>
  );
}
