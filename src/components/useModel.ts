import * as React from 'react';

import type { TfEnvModel } from '../model';

/**
 * Re-render on every model change.
 */
export function useModel(model: TfEnvModel): number {
  const [version, setVersion] = React.useState(0);
  React.useEffect(() => {
    const onChange = (): void => setVersion(v => v + 1);
    model.changed.connect(onChange);
    return () => {
      model.changed.disconnect(onChange);
    };
  }, [model]);
  return version;
}
