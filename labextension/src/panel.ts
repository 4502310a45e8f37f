/**
 * The "Automerge" left side panel: the documents of the server's hub, a
 * "New document" button and an "Open automerge: URL" field.
 */
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';
import { LabIcon } from '@jupyterlab/ui-components';

import {
  AutosyncApiError,
  IDocumentSummary,
  IKernelServer,
  SERVER_EXTENSION_MISSING,
  listDocuments,
  listKernelServers
} from './api';
import { el } from './dom';

/** How often the list refreshes itself while the panel is visible. */
export const REFRESH_INTERVAL_MS = 3000;

const AUTOMERGE_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161">
<path d="M6 3a3 3 0 1 0 0 6a3 3 0 0 0 0-6zm12 0a3 3 0 1 0 0 6a3 3 0 0 0 0-6zM6 15a3 3 0 1 0 0 6a3 3 0 0 0 0-6z"/>
<path d="M7 9h2v2.5c0 1.4 1.1 2.5 2.5 2.5H17V9h2v7h-7.5A4.5 4.5 0 0 1 7 11.5z"/>
</g></svg>`;

/** The panel's icon. */
export const automergeIcon = new LabIcon({
  name: 'autosync-jupyter:automerge',
  svgstr: AUTOMERGE_SVG
});

/** What the panel asks its owner to do. */
export interface IPanelActions {
  /** Open `url`: from the hub, or from the kernel server at `serverUrl` when given. */
  open(url: string, serverUrl?: string): Promise<void>;
  create(): Promise<void>;
}


function describeChange(value: IDocumentSummary['last_change']): string {
  if (value === null || value === undefined || value === '') {
    return '';
  }
  const date = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** The side panel widget. */
export class AutomergeSidePanel extends Widget {
  private readonly listNode: HTMLElement;
  private readonly serversNode: HTMLElement;
  private readonly serverListNode: HTMLElement;
  private readonly errorNode: HTMLElement;
  private readonly openInput: HTMLInputElement;
  private timer: number | null = null;
  private inFlight: Promise<void> | null = null;

  constructor(private readonly actions: IPanelActions) {
    super();
    this.id = 'autosync-panel';
    this.addClass('autosync-panel');
    this.node.dataset.testid = 'autosync-panel';
    this.title.icon = automergeIcon;
    this.title.caption = 'Automerge';

    const header = el('div', 'autosync-panel-header');
    header.append(el('h2', 'autosync-panel-title', 'Automerge'));
    const refresh = el('button', 'jp-Button jp-mod-styled autosync-panel-refresh', 'Refresh');
    refresh.type = 'button';
    refresh.dataset.testid = 'autosync-panel-refresh';
    refresh.addEventListener('click', () => void this.refresh());
    const create = el('button', 'jp-Button jp-mod-styled jp-mod-accept autosync-panel-create', 'New document');
    create.type = 'button';
    create.dataset.testid = 'autosync-panel-create';
    create.addEventListener('click', () => {
      void this.actions.create().then(() => this.refresh(), error => this.showError(error));
    });
    header.append(refresh, create);

    const openForm = el('form', 'autosync-panel-open');
    this.openInput = el('input', 'jp-mod-styled autosync-panel-open-input');
    this.openInput.type = 'text';
    this.openInput.placeholder = 'Open automerge: URL';
    this.openInput.setAttribute('aria-label', 'Open automerge: URL');
    this.openInput.dataset.testid = 'autosync-panel-open-input';
    this.openInput.spellcheck = false;
    const openButton = el('button', 'jp-Button jp-mod-styled autosync-panel-open-button', 'Open');
    openButton.type = 'submit';
    openButton.dataset.testid = 'autosync-panel-open-button';
    openForm.append(this.openInput, openButton);
    openForm.addEventListener('submit', event => {
      event.preventDefault();
      const url = this.openInput.value.trim();
      if (url) {
        void this.actions.open(url).then(
          () => {
            this.openInput.value = '';
            this.clearError();
          },
          error => this.showError(error)
        );
      }
    });

    this.errorNode = el('div', 'autosync-panel-error');
    this.errorNode.dataset.testid = 'autosync-panel-error';
    this.errorNode.hidden = true;
    this.listNode = el('ul', 'autosync-panel-list');
    this.listNode.dataset.testid = 'autosync-panel-list';

    // Kernel-hosted servers (`%autosync serve`), hidden when the server
    // extension does not know about them.
    this.serversNode = el('section', 'autosync-panel-servers');
    this.serversNode.dataset.testid = 'autosync-panel-servers';
    this.serversNode.hidden = true;
    this.serversNode.append(el('h3', 'autosync-panel-servers-title', 'Kernel servers'));
    this.serverListNode = el('div', 'autosync-panel-server-list');
    this.serversNode.append(this.serverListNode);
    this.node.append(header, openForm, this.errorNode, this.listNode, this.serversNode);
  }

  /** Reload the document list now (one request at a time). */
  refresh(): Promise<void> {
    if (this.inFlight === null) {
      this.inFlight = this.load().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  private async load(): Promise<void> {
    await Promise.all([this.loadHub(), this.loadKernelServers()]);
  }

  private async loadKernelServers(): Promise<void> {
    let servers: IKernelServer[] | null;
    try {
      servers = await listKernelServers();
    } catch {
      // The hub's list shows the problem (same server, same API).
      servers = null;
    }
    if (servers === null) {
      this.serversNode.hidden = true;
      this.serverListNode.replaceChildren();
      return;
    }
    this.serversNode.hidden = false;
    this.renderServers(servers);
  }

  private renderServers(servers: IKernelServer[]): void {
    if (servers.length === 0) {
      this.serverListNode.replaceChildren(el('div', 'autosync-panel-empty', 'No kernel servers running'));
      return;
    }
    const nodes: HTMLElement[] = [];
    for (const server of servers) {
      const header = el('div', 'autosync-panel-server');
      header.dataset.serverUrl = server.url;
      header.dataset.testid = 'autosync-panel-server';
      header.title = server.url;
      header.append(
        el('span', 'autosync-panel-server-name', server.name),
        el('span', 'autosync-panel-server-url', server.url)
      );
      const list = el('ul', 'autosync-panel-list autosync-panel-kernel-list');
      list.dataset.serverUrl = server.url;
      if (server.documents.length === 0) {
        list.append(el('li', 'autosync-panel-empty', 'No documents'));
      }
      for (const doc of server.documents) {
        const row = this.documentRow(doc, 'autosync-panel-kernel-row', () =>
          this.actions.open(doc.url, server.url)
        );
        row.dataset.serverUrl = server.url;
        row.title = `${doc.url}\non ${server.url}`;
        list.append(row);
      }
      nodes.push(header, list);
    }
    this.serverListNode.replaceChildren(...nodes);
  }

  private async loadHub(): Promise<void> {
    let documents: IDocumentSummary[];
    try {
      documents = await listDocuments();
    } catch (error) {
      this.showError(error);
      this.listNode.replaceChildren();
      this.node.dataset.state = error instanceof AutosyncApiError && error.serverMissing ? 'missing' : 'error';
      return;
    }
    this.clearError();
    this.node.dataset.state = 'ready';
    this.renderList(documents);
  }

  private renderList(documents: IDocumentSummary[]): void {
    if (documents.length === 0) {
      this.listNode.replaceChildren(el('li', 'autosync-panel-empty', 'No documents yet'));
      return;
    }
    const rows = documents.map(doc =>
      this.documentRow(doc, 'autosync-panel-row', () => this.actions.open(doc.url))
    );
    this.listNode.replaceChildren(...rows);
  }

  /** One document row (`className`: hub or kernel server row); click or Enter opens it. */
  private documentRow(
    doc: IDocumentSummary,
    className: string,
    openIt: () => Promise<void>
  ): HTMLElement {
    const row = el('li', className);
    row.dataset.documentId = doc.id;
    row.dataset.url = doc.url;
    row.dataset.testid = className;
    row.title = doc.url;
    row.tabIndex = 0;
    row.append(el('span', 'autosync-panel-row-id', doc.id.slice(0, 8)));
    const details: string[] = [];
    if (typeof doc.size === 'number') {
      details.push(`${doc.size} B`);
    }
    if (typeof doc.peers === 'number') {
      details.push(`${doc.peers} peer${doc.peers === 1 ? '' : 's'}`);
    }
    const changed = describeChange(doc.last_change);
    if (changed) {
      details.push(changed);
    }
    row.append(el('span', 'autosync-panel-row-details', details.join(' · ')));
    const open = () => void openIt().catch(error => this.showError(error));
    row.addEventListener('click', open);
    row.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        open();
      }
    });
    return row;
  }

  private showError(error: unknown): void {
    const message =
      error instanceof AutosyncApiError
        ? error.message
        : error instanceof Error
          ? error.message
          : String(error);
    this.errorNode.textContent = message || SERVER_EXTENSION_MISSING;
    this.errorNode.hidden = false;
  }

  private clearError(): void {
    this.errorNode.hidden = true;
    this.errorNode.textContent = '';
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refresh();
    if (this.timer === null) {
      this.timer = window.setInterval(() => void this.refresh(), REFRESH_INTERVAL_MS);
    }
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this.stopTimer();
  }

  dispose(): void {
    this.stopTimer();
    super.dispose();
  }

  private stopTimer(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }
}
