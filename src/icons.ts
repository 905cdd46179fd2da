import { LabIcon } from '@jupyterlab/ui-components';

import tfenvSvg from '../style/icons/tfenv.svg';
import tfenvColorSvg from '../style/icons/tfenv-color.svg';

/**
 * The sidebar and status bar icon (follows the theme's icon colour).
 */
export const tfenvIcon = new LabIcon({
  name: 'jupyter-tfenv:tfenv',
  svgstr: tfenvSvg
});

/**
 * The project's logo (the kernelspec logo), for the Launcher cards.
 */
export const tfenvLogoIcon = new LabIcon({
  name: 'jupyter-tfenv:logo',
  svgstr: tfenvColorSvg
});
