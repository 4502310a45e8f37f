/** The Automerge icon: the side bar tab, the tabs of documents, the commands. */
import { LabIcon } from '@jupyterlab/ui-components';

const AUTOMERGE_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161">
<path d="M6 3a3 3 0 1 0 0 6a3 3 0 0 0 0-6zm12 0a3 3 0 1 0 0 6a3 3 0 0 0 0-6zM6 15a3 3 0 1 0 0 6a3 3 0 0 0 0-6z"/>
<path d="M7 9h2v2.5c0 1.4 1.1 2.5 2.5 2.5H17V9h2v7h-7.5A4.5 4.5 0 0 1 7 11.5z"/>
</g></svg>`;

export const automergeIcon = new LabIcon({
  name: 'autosync-jupyter:automerge',
  svgstr: AUTOMERGE_SVG
});
