/**
 * autosync-jupyter's JupyterLab extension: an "Automerge" side panel listing
 * the documents of the Jupyter server's sync hub, and live, editable views
 * of documents through one browser-side automerge-repo `Repo`.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog, showErrorMessage } from '@jupyterlab/apputils';
import type { AutomergeUrl } from '@automerge/automerge-repo/slim';

import { createDocument } from './api';
import { DocumentPanel, documentPanelId } from './document';
import { AutomergeSidePanel, automergeIcon } from './panel';
import { normalizeAutomergeUrl } from './repo';

/** Command ids. */
export namespace CommandIDs {
  export const openPanel = 'autosync:open-panel';
  export const openDocument = 'autosync:open-document';
  export const createDocument = 'autosync:create-document';
}

const CATEGORY = 'Automerge';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'autosync-jupyter:plugin',
  description: 'Browse and live-edit the Automerge documents of the Jupyter server.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const open = async (text: string, serverUrl?: string): Promise<void> => {
      const url = normalizeAutomergeUrl(text);
      if (url === null) {
        throw new Error(`Not an automerge: URL or document id: ${text}`);
      }
      openDocument(app, url, serverUrl);
    };
    const create = async (): Promise<void> => {
      const created = await createDocument({});
      await open(created.url);
    };

    const panel = new AutomergeSidePanel({ open, create });
    app.shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, 'autosync-panel');
    }

    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'Open the Automerge Panel',
      caption: 'Show the Automerge documents of this Jupyter server',
      icon: automergeIcon,
      execute: () => {
        app.shell.activateById(panel.id);
      }
    });

    app.commands.addCommand(CommandIDs.openDocument, {
      label: 'Open Automerge Document…',
      caption: 'Open an automerge: URL in a live view',
      execute: async args => {
        let text = typeof args.url === 'string' ? args.url : '';
        if (!text) {
          const result = await InputDialog.getText({
            title: 'Open Automerge Document',
            label: 'automerge: URL or document id',
            placeholder: 'automerge:…'
          });
          if (!result.button.accept || !result.value) {
            return;
          }
          text = result.value;
        }
        try {
          await open(text);
        } catch (error) {
          await showErrorMessage('Cannot open the document', String(error));
        }
      }
    });

    app.commands.addCommand(CommandIDs.createDocument, {
      label: 'New Automerge Document',
      caption: 'Create an empty document on the Jupyter server and open it',
      execute: async () => {
        try {
          await create();
          void panel.refresh();
        } catch (error) {
          await showErrorMessage('Cannot create the document', String(error));
        }
      }
    });

    if (palette) {
      for (const command of [
        CommandIDs.openPanel,
        CommandIDs.openDocument,
        CommandIDs.createDocument
      ]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

/**
 * Open (or bring forward) the main-area view of `url`, synced through the
 * hub, or through the kernel server at `serverUrl` when given.
 */
function openDocument(
  app: JupyterFrontEnd,
  url: AutomergeUrl,
  serverUrl?: string
): DocumentPanel {
  const id = documentPanelId(url, serverUrl);
  for (const widget of app.shell.widgets('main')) {
    if (widget.id === id && widget instanceof DocumentPanel) {
      app.shell.activateById(widget.id);
      return widget;
    }
  }
  const panel = new DocumentPanel(url, serverUrl ?? '');
  app.shell.add(panel, 'main');
  app.shell.activateById(panel.id);
  return panel;
}

export default [plugin];
