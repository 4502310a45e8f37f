/**
 * The "Automerge" left side panel, built like JupyterLab's running-sessions
 * panel: a `SidePanel` with a toolbar (new document, refresh), an "Open
 * automerge: URL" field, and collapsible sections: the documents of the
 * Jupyter server's hub, then those of the kernels' servers (`%autosync
 * serve`), one header per server.
 *
 * A row names its document by its title (its `title` or `name` field) or,
 * without one, by the first 8 characters of its id, and shows its size and
 * last change. Rows are options of a listbox: Tab reaches a list, ↑/↓/Home/
 * End move, Enter or Space opens, the context menu (right click, Shift+F10)
 * offers open and copy.
 */
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import {
  addIcon,
  PanelWithToolbar,
  refreshIcon,
  SidePanel,
  ToolbarButton
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { PanelLayout, Widget } from '@lumino/widgets';

import {
  AutosyncApiError,
  IDocumentSummary,
  IKernelServer,
  SERVER_EXTENSION_MISSING,
  listDocuments,
  listKernelServers
} from './api';
import { el } from './dom';
import { cleanTitle, formatAgo, formatFull, formatSize, parseChange, shortId } from './format';
import { automergeIcon } from './icon';

export { automergeIcon } from './icon';

/** The default of the `refreshInterval` setting (ms). */
export const REFRESH_INTERVAL_MS = 3000;

/** What the panel asks its owner to do. */
export interface IPanelActions {
  /**
   * Open `url`: from the hub, or from the kernel server at `serverUrl` when
   * given; `title` names the tab until the document is there.
   */
  open(url: string, serverUrl?: string, title?: string): Promise<void>;
  create(): Promise<void>;
}

/** The row classes: a hub document, a kernel server's document. */
export const HUB_ROW_CLASS = 'autosync-panel-row';
export const KERNEL_ROW_CLASS = 'autosync-panel-kernel-row';

/** The label, detail words and tooltip of one document row. */
function describe(
  doc: IDocumentSummary,
  trans: TranslationBundle
): { label: string; titled: boolean; details: (string | HTMLElement)[]; words: string[] } {
  const title = cleanTitle(doc.title);
  const details: (string | HTMLElement)[] = [];
  const words: string[] = [];
  if (title) {
    details.push(el('span', 'autosync-panel-row-id', shortId(doc.id)));
    words.push(shortId(doc.id));
  }
  const size = formatSize(doc.size);
  if (size) {
    details.push(el('span', 'autosync-panel-row-size', size));
    words.push(size);
  }
  const changed = parseChange(doc.last_change);
  if (changed) {
    const time = el('time', 'autosync-panel-row-changed', formatAgo(changed));
    time.dateTime = changed.toISOString();
    time.title = formatFull(changed);
    details.push(time);
    words.push(trans.__('changed %1', formatAgo(changed)));
  }
  if (typeof doc.peers === 'number' && doc.peers > 0) {
    const peers = trans._n('%1 peer', '%1 peers', doc.peers);
    details.push(el('span', 'autosync-panel-row-peers', peers));
    words.push(peers);
  }
  if (doc.error) {
    const error = el('span', 'autosync-panel-row-error', trans.__('unreadable'));
    error.title = doc.error;
    details.push(error);
    words.push(trans.__('unreadable: %1', doc.error));
  }
  return { label: title ?? shortId(doc.id), titled: title !== null, details, words };
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

/**
 * The order of the rows, stable across refreshes: titled documents by title
 * ("notes 2" before "notes 10"), then the others by id.
 */
export function byTitle(a: IDocumentSummary, b: IDocumentSummary): number {
  const ta = cleanTitle(a.title);
  const tb = cleanTitle(b.title);
  if (ta !== null && tb !== null) {
    return collator.compare(ta, tb) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }
  if (ta !== null || tb !== null) {
    return ta !== null ? -1 : 1;
  }
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * One list of document rows (the hub's, or one kernel server's): a listbox
 * whose rows are kept across refreshes, so the focus and the roving tab stop
 * stay where they were.
 */
class DocumentList {
  readonly node: HTMLUListElement;
  readonly empty: HTMLElement;
  private rows = new Map<string, HTMLLIElement>();
  private readonly docs = new WeakMap<HTMLLIElement, IDocumentSummary>();
  private current: string | null = null;

  constructor(
    private readonly rowClass: string,
    label: string,
    emptyText: string,
    private readonly trans: TranslationBundle,
    private readonly openRow: (doc: IDocumentSummary) => void,
    private readonly serverUrl = ''
  ) {
    this.node = el('ul', 'autosync-panel-list');
    this.node.setAttribute('role', 'listbox');
    this.node.setAttribute('aria-label', label);
    this.node.dataset.testid = 'autosync-panel-list';
    if (serverUrl) {
      this.node.classList.add('autosync-panel-kernel-list');
      this.node.dataset.serverUrl = serverUrl;
    }
    this.node.addEventListener('keydown', event => this.onKey(event));
    this.empty = el('div', 'autosync-panel-empty', emptyText);
    this.empty.hidden = true;
  }

  update(documents: IDocumentSummary[]): void {
    const focused = document.activeElement;
    const rows: HTMLLIElement[] = [];
    const next = new Map<string, HTMLLIElement>();
    for (const doc of [...documents].sort(byTitle)) {
      if (next.has(doc.id)) {
        continue;
      }
      const row = this.rows.get(doc.id) ?? this.makeRow(doc.id);
      this.fill(row, doc);
      next.set(doc.id, row);
      rows.push(row);
    }
    this.rows = next;
    if (this.current === null || !next.has(this.current)) {
      this.current = rows.length > 0 ? (rows[0].dataset.documentId ?? null) : null;
    }
    for (const row of rows) {
      const isCurrent = row.dataset.documentId === this.current;
      row.tabIndex = isCurrent ? 0 : -1;
      row.setAttribute('aria-selected', String(isCurrent));
    }
    const same =
      rows.length === this.node.children.length &&
      rows.every((row, i) => this.node.children[i] === row);
    if (!same) {
      this.node.replaceChildren(...rows);
      // Moving a focused row out of the document and back drops its focus.
      if (focused instanceof HTMLElement && rows.includes(focused as HTMLLIElement)) {
        focused.focus({ preventScroll: true });
      }
    }
    this.node.hidden = rows.length === 0;
    this.empty.hidden = rows.length > 0;
  }

  private makeRow(documentId: string): HTMLLIElement {
    const row = el('li', this.rowClass);
    row.setAttribute('role', 'option');
    row.dataset.documentId = documentId;
    row.dataset.testid = this.rowClass;
    if (this.serverUrl) {
      row.dataset.serverUrl = this.serverUrl;
    }
    row.addEventListener('click', () => {
      this.select(row, false);
      const doc = this.docs.get(row);
      if (doc) {
        this.openRow(doc);
      }
    });
    row.addEventListener('focus', () => this.select(row, false));
    return row;
  }

  private fill(row: HTMLLIElement, doc: IDocumentSummary): void {
    this.docs.set(row, doc);
    row.dataset.url = doc.url;
    const { label, titled, details, words } = describe(doc, this.trans);
    if (titled) {
      row.dataset.title = label;
    } else {
      delete row.dataset.title;
    }
    const name = el('span', 'autosync-panel-row-title', label);
    if (!titled) {
      name.classList.add('autosync-panel-row-id');
    }
    const line = el('span', 'autosync-panel-row-details');
    details.forEach((part, i) => {
      if (i > 0) {
        line.append(el('span', 'autosync-panel-row-sep', ' · '));
      }
      line.append(part);
    });
    row.replaceChildren(name, line);
    row.classList.toggle('autosync-mod-error', Boolean(doc.error));
    row.setAttribute('aria-label', [label, ...words].join(', '));
    const tooltip = [cleanTitle(doc.title), doc.url];
    if (this.serverUrl) {
      tooltip.push(this.trans.__('on %1', this.serverUrl));
    }
    if (typeof doc.size === 'number') {
      tooltip.push(this.trans._n('%1 byte', '%1 bytes', doc.size));
    }
    const changed = parseChange(doc.last_change);
    if (changed) {
      tooltip.push(this.trans.__('Last change: %1', formatFull(changed)));
    }
    if (doc.error) {
      tooltip.push(doc.error);
    }
    row.title = tooltip.filter(Boolean).join('\n');
  }

  /** Make `row` the list's tab stop (and focus it when asked). */
  private select(row: HTMLLIElement, focus: boolean): void {
    this.current = row.dataset.documentId ?? null;
    for (const other of this.rows.values()) {
      const isCurrent = other === row;
      other.tabIndex = isCurrent ? 0 : -1;
      other.setAttribute('aria-selected', String(isCurrent));
    }
    if (focus) {
      row.focus();
      row.scrollIntoView({ block: 'nearest' });
    }
  }

  private onKey(event: KeyboardEvent): void {
    const target = event.target;
    if (!(target instanceof HTMLLIElement) || !this.node.contains(target)) {
      return;
    }
    const rows = [...this.rows.values()];
    const index = rows.indexOf(target);
    let next: HTMLLIElement | undefined;
    switch (event.key) {
      case 'ArrowDown':
        next = rows[Math.min(index + 1, rows.length - 1)];
        break;
      case 'ArrowUp':
        next = rows[Math.max(index - 1, 0)];
        break;
      case 'Home':
        next = rows[0];
        break;
      case 'End':
        next = rows[rows.length - 1];
        break;
      case 'Enter':
      case ' ': {
        event.preventDefault();
        const doc = this.docs.get(target);
        if (doc) {
          this.openRow(doc);
        }
        return;
      }
      default:
        return;
    }
    event.preventDefault();
    if (next) {
      this.select(next, true);
    }
  }
}

/** A collapsible section of the panel: a title (in the accordion) and a body. */
class Section extends PanelWithToolbar {
  readonly body: HTMLElement;

  constructor(className: string, label: string, caption: string) {
    super();
    this.addClass('autosync-panel-section');
    this.addClass(className);
    this.node.dataset.testid = className;
    this.title.label = label;
    this.title.caption = caption;
    this.body = el('div', 'autosync-panel-section-body');
    const bodyWidget = new Widget({ node: this.body });
    bodyWidget.addClass('autosync-panel-section-content');
    this.addWidget(bodyWidget);
  }
}

/** The side panel widget. */
export class AutomergeSidePanel extends SidePanel {
  private readonly trans: TranslationBundle;
  private readonly hubSection: Section;
  private readonly hubList: DocumentList;
  private readonly serversSection: Section;
  private readonly serverLists = new Map<string, DocumentList>();
  private readonly errorNode: HTMLElement;
  private readonly openInput: HTMLInputElement;
  private refreshMs = REFRESH_INTERVAL_MS;
  private timer: number | null = null;
  private inFlight: Promise<void> | null = null;

  constructor(
    private readonly actions: IPanelActions,
    translator: ITranslator = nullTranslator
  ) {
    super({ translator });
    const trans = (this.trans = translator.load('autosync_jupyter'));
    this.id = 'autosync-panel';
    this.addClass('autosync-panel');
    this.node.dataset.testid = 'autosync-panel';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', trans.__('Automerge documents'));
    this.title.icon = automergeIcon;
    this.title.caption = trans.__('Automerge');

    const heading = el('h2', 'autosync-panel-title', trans.__('Automerge'));
    this.header.addWidget(new Widget({ node: heading }));

    this.toolbar.addItem(
      'create',
      new ToolbarButton({
        icon: addIcon,
        label: trans.__('New document'),
        tooltip: trans.__('Create an empty document on the Jupyter server and open it'),
        className: 'autosync-panel-create',
        dataset: { testid: 'autosync-panel-create' },
        onClick: () => {
          void this.actions.create().then(
            () => this.refresh(),
            error => this.showError(error)
          );
        }
      })
    );
    this.toolbar.addItem(
      'refresh',
      new ToolbarButton({
        icon: refreshIcon,
        tooltip: trans.__('Refresh the lists of documents'),
        className: 'autosync-panel-refresh',
        dataset: { testid: 'autosync-panel-refresh' },
        onClick: () => void this.refresh()
      })
    );

    // Between the toolbar and the sections: the open field and the error line.
    const openNode = el('div', 'autosync-panel-open-area');
    const openForm = el('form', 'autosync-panel-open');
    this.openInput = el('input', 'jp-mod-styled autosync-panel-open-input');
    this.openInput.type = 'text';
    this.openInput.placeholder = trans.__('automerge: URL or id');
    this.openInput.setAttribute('aria-label', trans.__('Open automerge: URL'));
    this.openInput.title = trans.__('An automerge: URL or a document id; Enter opens it');
    this.openInput.dataset.testid = 'autosync-panel-open-input';
    this.openInput.spellcheck = false;
    this.openInput.autocomplete = 'off';
    const openButton = el(
      'button',
      'jp-Button jp-mod-styled autosync-panel-open-button',
      trans.__('Open')
    );
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
    this.errorNode.setAttribute('role', 'alert');
    this.errorNode.hidden = true;
    openNode.append(openForm, this.errorNode);
    const openWidget = new Widget({ node: openNode });
    const layout = this.layout as PanelLayout;
    layout.insertWidget(layout.widgets.indexOf(this.content), openWidget);

    this.hubSection = new Section(
      'autosync-panel-hub',
      trans.__('Jupyter server'),
      trans.__("Documents of this Jupyter server's sync hub")
    );
    this.hubList = new DocumentList(
      HUB_ROW_CLASS,
      trans.__("Documents of the Jupyter server's hub"),
      trans.__('No documents yet'),
      trans,
      doc => this.openRow(doc)
    );
    this.hubSection.body.append(this.hubList.node, this.hubList.empty);
    this.addWidget(this.hubSection);

    // Kernel-hosted servers (`%autosync serve`): added once the server
    // extension answers `autosync/api/servers`.
    this.serversSection = new Section(
      'autosync-panel-servers',
      trans.__('Kernel servers'),
      trans.__('Sync servers that kernels started with %autosync serve')
    );
  }

  /** Reload the document lists now (one request at a time). */
  refresh(): Promise<void> {
    if (this.inFlight === null) {
      this.inFlight = this.load().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  /** Refresh every `ms` milliseconds while shown (0: only on demand). */
  setRefreshInterval(ms: number): void {
    this.refreshMs = Number.isFinite(ms) && ms > 0 ? Math.max(ms, 500) : 0;
    this.stopTimer();
    if (this.isVisible) {
      this.startTimer();
    }
  }

  private openRow(doc: IDocumentSummary, serverUrl?: string): void {
    void this.actions
      .open(doc.url, serverUrl, cleanTitle(doc.title) ?? undefined)
      .catch(error => this.showError(error));
  }

  private async load(): Promise<void> {
    await Promise.all([this.loadHub(), this.loadKernelServers()]);
  }

  private async loadHub(): Promise<void> {
    let documents: IDocumentSummary[];
    try {
      documents = await listDocuments();
    } catch (error) {
      this.showError(error);
      this.hubList.update([]);
      this.node.dataset.state =
        error instanceof AutosyncApiError && error.serverMissing ? 'missing' : 'error';
      return;
    }
    this.clearError();
    this.node.dataset.state = 'ready';
    this.hubList.update(documents);
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
      if (this.serversSection.parent !== null) {
        this.serversSection.parent = null;
      }
      this.serverLists.clear();
      this.serversSection.body.replaceChildren();
      return;
    }
    if (this.serversSection.parent === null) {
      this.addWidget(this.serversSection);
    }
    this.renderServers(servers);
  }

  private renderServers(servers: IKernelServer[]): void {
    const trans = this.trans;
    if (servers.length === 0) {
      this.serverLists.clear();
      this.serversSection.body.replaceChildren(
        el('div', 'autosync-panel-empty', trans.__('No kernel servers running'))
      );
      return;
    }
    const nodes: HTMLElement[] = [];
    const lists = new Map<string, DocumentList>();
    for (const server of servers) {
      const header = el('div', 'autosync-panel-server');
      header.dataset.serverUrl = server.url;
      header.dataset.testid = 'autosync-panel-server';
      header.title = server.url;
      const count =
        server.documentCount > server.documents.length
          ? trans.__('%1 newest of %2 documents', server.documents.length, server.documentCount)
          : trans._n('%1 document', '%1 documents', server.documentCount);
      header.append(
        el('span', 'autosync-panel-server-name', server.name),
        el('span', 'autosync-panel-server-url', server.url),
        el('span', 'autosync-panel-server-count', count)
      );
      const list =
        this.serverLists.get(server.url) ??
        new DocumentList(
          KERNEL_ROW_CLASS,
          trans.__('Documents of %1', server.name),
          trans.__('No documents'),
          trans,
          doc => this.openRow(doc, server.url),
          server.url
        );
      list.update(server.documents);
      lists.set(server.url, list);
      nodes.push(header, list.node, list.empty);
    }
    this.serverLists.clear();
    for (const [url, list] of lists) {
      this.serverLists.set(url, list);
    }
    const body = this.serversSection.body;
    const same =
      nodes.length === body.children.length && nodes.every((n, i) => body.children[i] === n);
    if (!same) {
      const focused = document.activeElement;
      body.replaceChildren(...nodes);
      if (focused instanceof HTMLElement && body.contains(focused)) {
        focused.focus({ preventScroll: true });
      }
    }
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
    this.startTimer();
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this.stopTimer();
  }

  dispose(): void {
    this.stopTimer();
    super.dispose();
  }

  private startTimer(): void {
    if (this.timer === null && this.refreshMs > 0) {
      this.timer = window.setInterval(() => void this.refresh(), this.refreshMs);
    }
  }

  private stopTimer(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }
}
