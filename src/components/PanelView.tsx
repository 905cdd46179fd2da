import { refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { dismissWarning, liveRestoreWarning } from '../liverestore';
import { browserStorage } from '../restartnotice';
import { CheckpointSection } from './CheckpointSection';
import { IconButton } from './common';
import { EngineWarning } from './EngineWarning';
import { EnvironmentList } from './EnvironmentList';
import { GpuSection } from './GpuSection';
import { KernelSection } from './KernelSection';
import { LogSection } from './LogSection';
import { ProvenanceNotice } from './ProvenanceNotice';
import { ResourcesSection } from './ResourcesSection';
import { StateBanner } from './StateBanner';
import { TensorBoardSection } from './TensorBoardSection';
import type { IViewProps } from './types';
import { useModel } from './useModel';

export function PanelView(props: IViewProps): JSX.Element {
  const { model, actions, trans } = props;
  useModel(model);
  const state = model.state;
  const env = model.activeEnvironment;
  const [, setDismissed] = React.useState(0);
  const storage = browserStorage();
  const engine = liveRestoreWarning(model.engineState, storage);
  return (
    <div
      className="jp-tfenv-content"
      data-tfenv-state={state.state}
      data-tfenv-active-env={env?.id ?? ''}
    >
      <header className="jp-tfenv-header">
        <h2 className="jp-tfenv-title">{trans.__('TensorFlow environment')}</h2>
        <IconButton
          className="jp-tfenv-refresh"
          icon={refreshIcon}
          title={trans.__('Refresh')}
          onClick={() => actions.refresh()}
        />
      </header>
      <StateBanner {...props} state={state} />
      {model.provenance && model.provenance.status !== 'match' && (
        <ProvenanceNotice {...props} verdict={model.provenance} />
      )}
      {engine && state.state !== 'no-extension' && (
        <EngineWarning
          engine={engine}
          trans={trans}
          onDismiss={() => {
            dismissWarning(engine, storage);
            setDismissed(n => n + 1);
          }}
        />
      )}
      {env && state.state !== 'no-extension' && (
        <KernelSection {...props} env={env} />
      )}
      {state.state !== 'no-extension' && <ResourcesSection {...props} />}
      {state.state !== 'no-extension' && <GpuSection {...props} env={env} />}
      {env && state.state !== 'no-extension' && (
        <CheckpointSection {...props} env={env} />
      )}
      {env && state.state !== 'no-extension' && (
        <LogSection {...props} env={env} />
      )}
      {state.state !== 'no-extension' && <TensorBoardSection {...props} />}
      {state.state !== 'no-extension' && <EnvironmentList {...props} />}
    </div>
  );
}
