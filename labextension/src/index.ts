/**
 * autosync-jupyter's JupyterLab extension: an "Automerge" side panel listing
 * the documents of the Jupyter server's sync hub and of the kernels' servers,
 * and live, editable views of documents through browser-side automerge-repo
 * `Repo`s, in tabs that JupyterLab's layout restorer brings back after a
 * reload. Settings (`schema/plugin.json`): the refresh interval and the
 * timeouts; the rows' context menu is declared there too.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Clipboard,
  ICommandPalette,
  InputDialog,
  WidgetTracker,
  showErrorMessage
} from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { addIcon, copyIcon, refreshIcon } from '@jupyterlab/ui-components';
import type { AutomergeUrl } from '@automerge/automerge-repo/slim';

import { createDocument, setRequestTimeout } from './api';
import {
  DocumentWidget,
  KERNEL_SERVER_CONNECT_TIMEOUT_MS,
  documentPanelId,
  setKernelServerTimeout
} from './document';
import { automergeIcon } from './icon';
import { colorOf, setLocalUser } from './presence';
import { AutomergeSidePanel, HUB_ROW_CLASS, KERNEL_ROW_CLASS, REFRESH_INTERVAL_MS } from './panel';
import { documentIdOf, normalizeAutomergeUrl } from './repo';

/** Command ids. */
export namespace CommandIDs {
  export const openPanel = 'autosync:open-panel';
  export const openDocument = 'autosync:open-document';
  export const createDocument = 'autosync:create-document';
  export const refresh = 'autosync:refresh';
  /** Context menu of a row: open it, copy its URL or id. */
  export const openRow = 'autosync:open-row';
  export const copyUrl = 'autosync:copy-url';
  export const copyId = 'autosync:copy-id';
}

const PLUGIN_ID = 'autosync-jupyter:plugin';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Browse and live-edit the Automerge documents of the Jupyter server.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('autosync_jupyter');
    const category = trans.__('Automerge');

    // Document tabs announce this user to the other peers under JupyterLab's identity.
    const user = app.serviceManager.user;
    const announceUser = () => {
      const identity = user.identity;
      if (identity) {
        const name = identity.display_name || identity.name || identity.username;
        setLocalUser({ name, color: concreteColor(identity.color, identity.username) });
      }
    };
    void user.ready.then(announceUser).catch(() => undefined);
    user.userChanged.connect(announceUser);
    const tracker = new WidgetTracker<DocumentWidget>({ namespace: 'autosync-doc' });

    /**
     * Open (or bring forward) the tab of `url`, from the hub or from the
     * kernel server at `serverUrl`; `title` names it until the document is there.
     */
    const openDocument = (url: AutomergeUrl, serverUrl = '', title?: string): DocumentWidget => {
      const id = documentPanelId(url, serverUrl);
      let widget = tracker.find(w => w.id === id);
      if (widget === undefined) {
        widget = new DocumentWidget(url, serverUrl, trans, title);
        void tracker.add(widget);
      }
      if (!widget.isAttached) {
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
      return widget;
    };
    const open = async (text: string, serverUrl?: string, title?: string): Promise<void> => {
      const url = normalizeAutomergeUrl(text);
      if (url === null) {
        throw new Error(trans.__('Not an automerge: URL or document id: %1', text));
      }
      openDocument(url, serverUrl, title);
    };
    const create = async (): Promise<void> => {
      const created = await createDocument({});
      await open(created.url);
    };

    const panel = new AutomergeSidePanel({ open, create }, translator ?? nullTranslator);
    app.shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, 'autosync-panel');
      void restorer.restore(tracker, {
        command: CommandIDs.openDocument,
        args: widget => ({ url: widget.url, serverUrl: widget.serverUrl }),
        name: widget => widget.id
      });
    }

    if (settingRegistry) {
      const apply = (settings: ISettingRegistry.ISettings) => {
        const number = (key: string, fallback: number) => {
          const value = settings.get(key).composite;
          return typeof value === 'number' ? value : fallback;
        };
        panel.setRefreshInterval(number('refreshInterval', REFRESH_INTERVAL_MS));
        setRequestTimeout(number('requestTimeout', 10000));
        setKernelServerTimeout(number('kernelServerTimeout', KERNEL_SERVER_CONNECT_TIMEOUT_MS));
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(settings);
          settings.changed.connect(apply);
        })
        .catch(error => console.warn('autosync-jupyter: settings not loaded', error));
    }

    app.commands.addCommand(CommandIDs.openPanel, {
      label: trans.__('Open the Automerge Panel'),
      caption: trans.__('Show the Automerge documents of this Jupyter server'),
      icon: automergeIcon,
      execute: () => {
        app.shell.activateById(panel.id);
      }
    });

    app.commands.addCommand(CommandIDs.openDocument, {
      label: trans.__('Open Automerge Document…'),
      caption: trans.__('Open an automerge: URL in a live view'),
      icon: args => (args.url ? automergeIcon : undefined),
      execute: async args => {
        let text = typeof args.url === 'string' ? args.url : '';
        const serverUrl = typeof args.serverUrl === 'string' ? args.serverUrl : '';
        if (!text) {
          const result = await InputDialog.getText({
            title: trans.__('Open Automerge Document'),
            label: trans.__('automerge: URL or document id'),
            placeholder: 'automerge:…'
          });
          if (!result.button.accept || !result.value) {
            return;
          }
          text = result.value;
        }
        const url = normalizeAutomergeUrl(text);
        if (url === null) {
          await showErrorMessage(
            trans.__('Cannot open the document'),
            trans.__('Not an automerge: URL or document id: %1', text)
          );
          return;
        }
        return openDocument(url, serverUrl);
      }
    });

    app.commands.addCommand(CommandIDs.createDocument, {
      label: trans.__('New Automerge Document'),
      caption: trans.__('Create an empty document on the Jupyter server and open it'),
      icon: addIcon,
      execute: async () => {
        try {
          await create();
          void panel.refresh();
        } catch (error) {
          await showErrorMessage(trans.__('Cannot create the document'), String(error));
        }
      }
    });

    app.commands.addCommand(CommandIDs.refresh, {
      label: trans.__('Refresh the Automerge Panel'),
      caption: trans.__('Reload the lists of documents'),
      icon: refreshIcon,
      execute: () => panel.refresh()
    });

    // The row under the context menu (hub or kernel server).
    const rowOf = (): HTMLElement | null => {
      const node = app.contextMenuHitTest(
        n => n.classList.contains(HUB_ROW_CLASS) || n.classList.contains(KERNEL_ROW_CLASS)
      );
      return node ?? null;
    };
    app.commands.addCommand(CommandIDs.openRow, {
      label: trans.__('Open'),
      caption: trans.__('Open the document in a tab'),
      icon: automergeIcon,
      isVisible: () => rowOf() !== null,
      execute: () => {
        const row = rowOf();
        const url = row?.dataset.url;
        if (url) {
          return open(url, row.dataset.serverUrl, row.dataset.title).catch(error =>
            showErrorMessage(trans.__('Cannot open the document'), String(error))
          );
        }
      }
    });
    app.commands.addCommand(CommandIDs.copyUrl, {
      label: trans.__('Copy automerge: URL'),
      caption: trans.__('Copy the automerge: URL of the document'),
      icon: copyIcon,
      isVisible: () => rowOf() !== null,
      execute: () => {
        const url = rowOf()?.dataset.url;
        if (url) {
          Clipboard.copyToSystem(url);
        }
      }
    });
    app.commands.addCommand(CommandIDs.copyId, {
      label: trans.__('Copy Document ID'),
      caption: trans.__('Copy the id of the document'),
      isVisible: () => rowOf() !== null,
      execute: () => {
        const row = rowOf();
        const url = row?.dataset.url ? normalizeAutomergeUrl(row.dataset.url) : null;
        if (url) {
          Clipboard.copyToSystem(documentIdOf(url));
        }
      }
    });

    if (palette) {
      for (const command of [
        CommandIDs.openPanel,
        CommandIDs.openDocument,
        CommandIDs.createDocument,
        CommandIDs.refresh
      ]) {
        palette.addItem({ command, category });
      }
    }
  }
};

/**
 * JupyterLab's identity colours are CSS variables (`var(--jp-collaborator-color1)`),
 * meaningless to peers outside this page: send the colour they stand for.
 */
function concreteColor(color: string | undefined, username: string): string {
  const variable = color ? /^var\((--[\w-]+)\)$/.exec(color.trim()) : null;
  if (variable) {
    const value = getComputedStyle(document.body).getPropertyValue(variable[1]).trim();
    return value || colorOf(username);
  }
  return color || colorOf(username);
}

export default [plugin];
