/**
 * The panel's "Compare with…" (issue 21 item 4): pick another environment,
 * probe both images (cached by image id; a throwaway container otherwise),
 * and show what differs (`envdiff.ts`, `components/CompareView.tsx`).
 */

import {
  Dialog,
  InputDialog,
  ReactWidget,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { CompareView } from './components/CompareView';
import { diffEnvironments } from './envdiff';
import type { TfEnvModel } from './model';

/**
 * Ask which environment to compare `envId` with, then show the difference.
 * Environments whose image is not here are not offered (nothing to probe).
 */
export async function compareWith(
  model: TfEnvModel,
  envId: string,
  trans: TranslationBundle
): Promise<void> {
  const env = model.environment(envId);
  if (!env) {
    return;
  }
  const others = (model.environments ?? []).filter(
    other => other.id !== envId && other.image_status?.present !== false
  );
  if (others.length === 0) {
    await showErrorMessage(
      trans.__('Nothing to compare with'),
      trans.__(
        'No other environment has its image on this server: pull or build one first.'
      )
    );
    return;
  }
  const labels = others.map(other => `${other.display_name} (${other.id})`);
  const picked = await InputDialog.getItem({
    title: trans.__('Compare %1 with…', env.display_name),
    items: labels,
    current: 0,
    okLabel: trans.__('Compare'),
    cancelLabel: trans.__('Cancel')
  });
  if (!picked.button.accept || picked.value === null) {
    return;
  }
  const other = others[labels.indexOf(picked.value)];
  if (!other) {
    return;
  }
  let probes;
  try {
    probes = await Promise.all([
      model.client.probe(env.id, true),
      model.client.probe(other.id, true)
    ]);
  } catch (error) {
    await showErrorMessage(
      trans.__(
        'Cannot compare %1 with %2',
        env.display_name,
        other.display_name
      ),
      error as Error
    );
    return;
  }
  const diff = diffEnvironments(probes[0], probes[1]);
  const body = ReactWidget.create(
    <CompareView
      from={{ id: env.id, name: env.display_name }}
      to={{ id: other.id, name: other.display_name }}
      diff={diff}
      trans={trans}
    />
  );
  await showDialog({
    title: trans.__('%1 → %2', env.display_name, other.display_name),
    body,
    buttons: [Dialog.okButton({ label: trans.__('Close') })]
  });
}
