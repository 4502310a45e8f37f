/**
 * A main-area tab showing one Automerge document live, as an editable tree
 * (keys, values coloured and labelled by type, collapsible maps and lists,
 * the way JupyterLab's JSON viewer looks). All document content reaches the
 * DOM through `textContent` only.
 *
 * Keyboard: every value is focusable, with an accessible name ("title:
 * "draft", text"); Enter (or F2) edits it, Enter commits, Escape cancels;
 * ↑/↓ move from line to line, ←/→ collapse and expand maps and lists.
 *
 * Above the tree: who else is in the document (presence, `presence.ts`)
 * and, from the toolbar's "History" button, the history slider
 * (`timeline.ts`); a past version shows read-only, its change highlighted.
 */
import * as A from '@automerge/automerge/slim';
import { encodeHeads } from '@automerge/automerge-repo/slim';
import type { AutomergeUrl, DocHandle, Repo } from '@automerge/automerge-repo/slim';
import { Clipboard, MainAreaWidget } from '@jupyterlab/apputils';
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import {
  caretDownIcon,
  caretRightIcon,
  copyIcon,
  Toolbar,
  ToolbarButton
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { cleanTitle, shortId as shortDocumentId } from './format';
import { automergeIcon } from './icon';
import { documentIdOf, peerHeadsOf, repoFor, shortHash, waitForPeer } from './repo';
import {
  EditError,
  Path,
  ValueKind,
  addKey,
  deleteAt,
  displayText,
  isEditable,
  kindOf,
  parseEdit,
  parseLiteral,
  pushTo,
  setValue
} from './tree';
import { el } from './dom';
import { DocumentPresence } from './presence';
import { DocumentTimeline } from './timeline';

/** The status shown in the tab's toolbar (`autosync-doc-status`). */
export type DocStatus =
  | 'loading'
  | 'connecting'
  | 'syncing'
  | 'connected'
  | 'unavailable'
  | 'unreachable'
  | 'error';

/** The default of the `kernelServerTimeout` setting (ms). */
export const KERNEL_SERVER_CONNECT_TIMEOUT_MS = 5000;

let kernelServerTimeoutMs = KERNEL_SERVER_CONNECT_TIMEOUT_MS;

/** How long a kernel server's connection may take before a tab says `unreachable`. */
export function setKernelServerTimeout(ms: number): void {
  kernelServerTimeoutMs = Number.isFinite(ms) && ms > 0 ? ms : KERNEL_SERVER_CONNECT_TIMEOUT_MS;
}

/** The message of the `unreachable` status. */
export const KERNEL_SERVER_UNREACHABLE =
  'Cannot connect to the kernel server through the Jupyter server: it relays only servers announced by its kernels on its own machine (ws://127.0.0.1), and this one does not answer there.';

/** The short name of a document: the first 8 characters of its id. */
export function shortId(url: AutomergeUrl): string {
  return shortDocumentId(documentIdOf(url));
}

/**
 * The widget id of the view of `url`, one view per document and server: the
 * hub's view is `autosync-doc-<id>`, a kernel server's view
 * `autosync-doc-k<hash of the server URL>-<id>`.
 */
export function documentPanelId(url: AutomergeUrl, serverUrl?: string | null): string {
  const id = documentIdOf(url);
  return serverUrl ? `autosync-doc-k${shortHash(serverUrl)}-${id}` : `autosync-doc-${id}`;
}

type AnyDoc = Record<string, unknown>;

function sameHeads(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) {
    return false;
  }
  const set = new Set(a);
  return b.every(h => set.has(h));
}

/** The document's `title` (else `name`) when it is text: what names its tab. */
export function documentTitle(doc: unknown): string | null {
  if (doc === null || typeof doc !== 'object') {
    return null;
  }
  for (const key of ['title', 'name']) {
    const value = (doc as AnyDoc)[key];
    const kind = kindOf(value);
    if (kind === 'text' || kind === 'string') {
      const title = cleanTitle(displayText(value));
      if (title) {
        return title;
      }
    }
  }
  return null;
}

/** `title`, `items[0]`, `meta.owner`: a path as people write it. */
function pathLabel(path: Path): string {
  let label = '';
  for (const key of path) {
    if (typeof key === 'number') {
      label += `[${key}]`;
    } else {
      label += label ? `.${key}` : key;
    }
  }
  return label || 'document';
}

/** The words shown after a value for its kind. */
function kindWord(kind: ValueKind): string {
  return kind === 'unknown' ? 'value' : kind;
}

/** The view of one document: the content of its `DocumentWidget`. */
export class DocumentView extends Widget {
  readonly url: AutomergeUrl;
  /** The kernel server this view syncs with; empty for the Jupyter server's hub. */
  readonly serverUrl: string;
  /** The status pill, shown in the tab's toolbar. */
  readonly statusNode: HTMLElement;
  private handle: DocHandle<AnyDoc> | null = null;
  private repo: Repo | null = null;
  private status: DocStatus = 'loading';
  private statusDetail = '';
  private editing = false;
  private renderPending = false;
  /** The control to focus once the tree is drawn again (`data-focus-key`). */
  private focusAfterRender: string | null = null;
  private readonly collapsed = new Set<string>();
  private readonly messageNode: HTMLElement;
  private readonly treeNode: HTMLElement;
  private readonly presenceHost: HTMLElement;
  private readonly timelineHost: HTMLElement;
  private presence: DocumentPresence | null = null;
  private timeline: DocumentTimeline | null = null;
  /** Open the timeline as soon as the document is there (asked before). */
  private timelineWanted = false;
  private readonly cleanups: (() => void)[] = [];
  private readonly trans: TranslationBundle;

  /**
   * `titleHint` (the title a list showed) names the tab until the document
   * is there; then its own `title` (or `name`) does, else its short id.
   */
  constructor(url: AutomergeUrl, serverUrl = '', trans?: TranslationBundle, titleHint?: string) {
    super();
    this.url = url;
    this.serverUrl = serverUrl;
    this.trans = trans ?? nullTranslator.load('autosync_jupyter');
    this.id = `${documentPanelId(url, serverUrl)}-content`;
    this.addClass('autosync-doc-content');
    this.node.tabIndex = -1;
    const hint = cleanTitle(titleHint);
    this.title.label = hint ?? shortId(url);
    this.title.icon = automergeIcon;
    this.title.closable = true;
    this.updateCaption(hint);

    this.statusNode = el('span', 'autosync-doc-status');
    this.statusNode.dataset.testid = 'autosync-doc-status';
    this.messageNode = el('div', 'autosync-doc-message');
    this.messageNode.hidden = true;
    this.treeNode = el('div', 'autosync-doc-tree');
    this.treeNode.dataset.testid = 'autosync-doc-tree';
    this.treeNode.setAttribute('role', 'group');
    this.treeNode.setAttribute('aria-label', this.trans.__('Document content'));
    this.treeNode.addEventListener('keydown', event => this.onTreeKey(event));
    this.treeNode.append(el('div', 'autosync-doc-placeholder', this.trans.__('Loading…')));
    this.treeNode.addEventListener('focusin', event => this.onTreeFocus(event));
    this.presenceHost = el('div', 'autosync-doc-presence-host');
    this.timelineHost = el('div', 'autosync-doc-timeline-host');
    this.node.append(this.presenceHost, this.timelineHost, this.messageNode, this.treeNode);
    this.setStatus('loading');
    void this.open();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    for (const cleanup of this.cleanups.splice(0)) {
      cleanup();
    }
    this.presence?.dispose();
    this.presence = null;
    super.dispose();
  }

  /** The current status, for tests and commands. */
  get currentStatus(): DocStatus {
    return this.status;
  }

  /** True while a re-render waits for an open edit input to close. */
  get hasPendingRender(): boolean {
    return this.renderPending;
  }

  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    // MainAreaWidget focuses this node first: go on to the tree's first control.
    const active = document.activeElement;
    if (active === this.node || !this.node.contains(active)) {
      const first = this.treeNode.querySelector<HTMLElement>('[data-focus-key]');
      (first ?? this.node).focus();
    }
  }

  private updateCaption(title: string | null): void {
    const lines = [title, this.url, this.serverUrl ? `on ${this.serverUrl}` : null];
    this.title.caption = lines.filter(Boolean).join('\n');
  }

  private async open(): Promise<void> {
    let repo: Repo;
    try {
      repo = await repoFor(this.serverUrl);
    } catch (error) {
      this.setStatus('error', this.trans.__('Automerge could not start: %1', String(error)));
      return;
    }
    if (this.isDisposed) {
      return;
    }
    this.repo = repo;
    this.watchNetwork(repo);
    this.setStatus(repo.peers.length > 0 ? 'loading' : 'connecting');
    if (this.serverUrl && !(await this.waitForKernelServer(repo))) {
      return;
    }
    let handle: DocHandle<AnyDoc>;
    try {
      handle = await repo.find<AnyDoc>(this.url);
    } catch (error) {
      if (!this.isDisposed) {
        this.setStatus('unavailable', this.trans.__('Document unavailable: %1', String(error)));
        this.treeNode.replaceChildren();
      }
      return;
    }
    if (this.isDisposed) {
      return;
    }
    this.handle = handle;
    this.presence = new DocumentPresence(handle, repo.peerId);
    this.presenceHost.replaceChildren(this.presence.node);
    this.timeline = new DocumentTimeline(handle, documentIdOf(this.url), this.trans, () =>
      this.onTimeline()
    );
    this.timelineHost.replaceChildren(this.timeline.node);
    if (this.timelineWanted) {
      this.timeline.toggle(true);
    }
    const onChange = () => {
      this.timeline?.refresh();
      this.render();
      this.updateSyncStatus();
    };
    handle.on('change', onChange);
    this.cleanups.push(() => handle.off('change', onChange));
    this.render();
    this.updateSyncStatus();
  }

  /** Show or hide the history slider (the toolbar's "History" button). */
  toggleTimeline(): void {
    if (this.timeline === null) {
      this.timelineWanted = !this.timelineWanted;
      return;
    }
    this.timeline.toggle();
    this.onTimeline();
  }

  /** The people in the document now (this user first), for tests and commands. */
  get people(): DocumentPresence | null {
    return this.presence;
  }

  private onTimeline(): void {
    const past = this.timeline?.pinned ?? null;
    // As automerge: URLs write heads (bs58), like the notebook's views.
    this.presence?.setHeads(past ? [...encodeHeads(past.heads)].sort() : null);
    this.render();
  }

  /** Tell the others what this user looks at: the path of the focused line. */
  private onTreeFocus(event: FocusEvent): void {
    const target = event.target;
    if (!(target instanceof HTMLElement) || this.presence === null) {
      return;
    }
    const entry = target.closest<HTMLElement>('.autosync-doc-entry');
    try {
      this.presence.setViewing(entry?.dataset.path ? JSON.parse(entry.dataset.path) : []);
    } catch {
      // not a path: nothing to say
    }
  }

  /**
   * A kernel server is reached through the Jupyter server's relay, which
   * refuses servers not on its machine and fails when the kernel is gone:
   * without a peer after a few seconds, say so (`unreachable`) and keep
   * waiting, the adapter retries. False when the view was closed meanwhile.
   */
  private async waitForKernelServer(repo: Repo): Promise<boolean> {
    const cancel = (c: () => void) => this.cleanups.push(c);
    if (await waitForPeer(repo, kernelServerTimeoutMs, cancel)) {
      return !this.isDisposed;
    }
    if (this.isDisposed) {
      return false;
    }
    this.setStatus('unreachable', `${KERNEL_SERVER_UNREACHABLE} (${this.serverUrl})`);
    this.treeNode.replaceChildren();
    const connected = await waitForPeer(repo, null, cancel);
    if (!connected || this.isDisposed) {
      return false;
    }
    this.setStatus('loading');
    return true;
  }

  private watchNetwork(repo: Repo): void {
    const documentId = documentIdOf(this.url);
    const onPeer = () => this.updateSyncStatus();
    repo.networkSubsystem.on('peer', onPeer);
    repo.networkSubsystem.on('peer-disconnected', onPeer);
    const unlisten = peerHeadsOf(repo).listen(changed => {
      if (changed === documentId) {
        this.updateSyncStatus();
      }
    });
    this.cleanups.push(() => {
      repo.networkSubsystem.off('peer', onPeer);
      repo.networkSubsystem.off('peer-disconnected', onPeer);
      unlisten();
    });
  }

  /** "connecting" without a peer, "syncing" until a peer has our heads, else "connected". */
  private updateSyncStatus(): void {
    if (this.isDisposed || this.repo === null) {
      return;
    }
    if (this.repo.peers.length === 0) {
      if (this.status !== 'unreachable') {
        this.setStatus('connecting');
      }
      return;
    }
    if (this.handle === null) {
      if (this.status !== 'unavailable') {
        this.setStatus('loading');
      }
      return;
    }
    const ours = A.getHeads(this.handle.doc());
    const heads = peerHeadsOf(this.repo);
    const documentId = documentIdOf(this.url);
    const inSync = this.repo.peers.some(peer => {
      const theirs = heads.of(documentId, peer);
      return theirs !== undefined && sameHeads(ours, theirs);
    });
    this.setStatus(inSync ? 'connected' : 'syncing');
  }

  private setStatus(status: DocStatus, detail = ''): void {
    const changed = this.status !== status || this.statusDetail !== detail;
    this.status = status;
    this.statusDetail = detail;
    if (!changed && this.statusNode.textContent) {
      return;
    }
    this.statusNode.textContent = status;
    this.statusNode.dataset.status = status;
    this.statusNode.title = this.statusTooltip(status);
    this.messageNode.hidden = detail === '';
    this.messageNode.textContent = detail;
  }

  private statusTooltip(status: DocStatus): string {
    const where = this.serverUrl
      ? this.trans.__('the kernel server')
      : this.trans.__('the Jupyter server');
    switch (status) {
      case 'connected':
        return this.trans.__('In sync with %1', where);
      case 'syncing':
        return this.trans.__('Sending or receiving changes with %1', where);
      case 'connecting':
        return this.trans.__('Connecting to %1', where);
      case 'loading':
        return this.trans.__('Loading the document from %1', where);
      default:
        return this.statusDetail || status;
    }
  }

  /** Apply an edit; errors are shown under the toolbar, never thrown. */
  private change(edit: (draft: AnyDoc) => void): boolean {
    if (this.handle === null) {
      return false;
    }
    if (this.timeline?.pinned) {
      this.messageNode.hidden = false;
      this.messageNode.textContent = this.trans.__(
        'This is a past version: go back to the live document ("Live") to edit, or restore it.'
      );
      return false;
    }
    try {
      this.handle.change(edit);
    } catch (error) {
      const message = error instanceof EditError ? error.message : String(error);
      this.messageNode.hidden = false;
      this.messageNode.textContent = this.trans.__('Edit not applied: %1', message);
      return false;
    }
    if (this.statusDetail === '') {
      this.messageNode.hidden = true;
    }
    this.updateSyncStatus();
    return true;
  }

  /** Rebuild the tree, keeping the focus on the same control; deferred while an edit input is open. */
  private render(): void {
    if (this.handle === null || this.isDisposed) {
      return;
    }
    if (this.editing) {
      this.renderPending = true;
      return;
    }
    this.renderPending = false;
    // After an edit, the control it names; after a change from elsewhere,
    // the control that had the focus, where it is now (without scrolling).
    const active = document.activeElement;
    const asked = this.focusAfterRender;
    const focusKey =
      asked ??
      (active instanceof HTMLElement && this.treeNode.contains(active)
        ? (active.dataset.focusKey ?? null)
        : null);
    this.focusAfterRender = null;
    const live = this.handle.doc();
    const past = this.timeline?.pinned ?? null;
    const doc = past ? past.doc : live;
    const title = documentTitle(live);
    this.title.label = title ?? shortId(this.url);
    this.updateCaption(title);
    this.treeNode.replaceChildren(this.renderRoot(doc));
    this.treeNode.classList.toggle('autosync-doc-past', past !== null);
    if (past) {
      this.markChanged(past.changed);
    }
    const controls = [...this.treeNode.querySelectorAll<HTMLElement>('[data-focus-key]')];
    if (focusKey !== null) {
      const target = controls.find(node => node.dataset.focusKey === focusKey);
      target?.focus({ preventScroll: asked === null });
    } else if (active === this.node) {
      // The tab was activated before its document was there: on to its first control.
      controls[0]?.focus();
    }
  }

  /**
   * Highlight the lines a past version's change touched; a deleted key or a
   * collapsed container shows on its nearest ancestor on screen.
   */
  private markChanged(paths: Path[]): void {
    const entries = new Map<string, HTMLElement>();
    for (const entry of this.treeNode.querySelectorAll<HTMLElement>('.autosync-doc-entry')) {
      entries.set(entry.dataset.path ?? '', entry);
    }
    for (const path of paths) {
      for (let n = path.length; n > 0; n--) {
        const entry = entries.get(JSON.stringify(path.slice(0, n)));
        if (entry) {
          entry.querySelector(':scope > .autosync-doc-line')?.classList.add('autosync-doc-changed');
          break;
        }
      }
    }
  }

  private endEdit(focusKey: string | null): void {
    this.editing = false;
    this.focusAfterRender = focusKey;
    // Always re-render: it drops the edit input and shows the latest state.
    this.render();
  }

  /** The root line ("document  map  3 keys") and the root map's entries. */
  private renderRoot(doc: AnyDoc): HTMLElement {
    const root = el('div', 'autosync-doc-root');
    const count = Object.keys(doc).length;
    const line = el('div', 'autosync-doc-line autosync-doc-root-line');
    line.append(
      el('span', 'autosync-doc-brace', '{}'),
      el('span', 'autosync-doc-count', this.countText('map', count)),
      el('span', 'autosync-doc-type', 'map')
    );
    const map = this.renderMap(doc, []);
    if (count === 0) {
      map.insertBefore(
        el(
          'div',
          'autosync-doc-placeholder',
          this.trans.__('This document is empty: add a key with “+ key”.')
        ),
        map.querySelector(':scope > .autosync-doc-add-key')
      );
    }
    root.append(line, map);
    return root;
  }

  private countText(kind: 'map' | 'list', count: number): string {
    return kind === 'map'
      ? this.trans._n('%1 key', '%1 keys', count)
      : this.trans._n('%1 item', '%1 items', count);
  }

  private renderMap(map: Record<string, unknown>, path: Path): HTMLElement {
    const container = el('div', 'autosync-doc-map');
    container.dataset.path = JSON.stringify(path);
    const entries = el('ul', 'autosync-doc-entries');
    for (const key of Object.keys(map)) {
      const label = el('span', 'autosync-doc-key', key);
      entries.append(this.renderEntry(label, map[key], [...path, key]));
    }
    container.append(
      entries,
      this.actionButton(
        'autosync-doc-add-key',
        this.trans.__('+ key'),
        this.trans.__('Add a key to %1', pathLabel(path)),
        path,
        button => this.startAddKey(button, path)
      )
    );
    return container;
  }

  private renderList(list: unknown[], path: Path): HTMLElement {
    const container = el('div', 'autosync-doc-list');
    container.dataset.path = JSON.stringify(path);
    const items = el('ul', 'autosync-doc-items');
    list.forEach((item, index) => {
      const label = el('span', 'autosync-doc-index', String(index));
      items.append(this.renderEntry(label, item, [...path, index]));
    });
    container.append(
      items,
      this.actionButton(
        'autosync-doc-push',
        this.trans.__('+ item'),
        this.trans.__('Append an item to %1', pathLabel(path)),
        path,
        button => this.startPush(button, path)
      )
    );
    return container;
  }

  /**
   * One key of a map or item of a list: a line with the collapse toggle (for
   * a map or list), label, value or summary, type and delete button; then
   * the entries of a map or list unless collapsed.
   */
  private renderEntry(label: HTMLElement, value: unknown, path: Path): HTMLElement {
    const entry = el('li', 'autosync-doc-entry');
    const line = el('div', 'autosync-doc-line');
    entry.append(line);
    const kind = kindOf(value);
    const key = JSON.stringify(path);
    entry.dataset.path = key;
    if (kind === 'map' || kind === 'list') {
      const count =
        kind === 'map' ? Object.keys(value as object).length : (value as unknown[]).length;
      const open = !this.collapsed.has(key);
      line.append(
        this.toggleButton(path, open, count),
        this.labelWithColon(label),
        el('span', 'autosync-doc-brace', kind === 'map' ? '{}' : '[]'),
        el('span', 'autosync-doc-count', this.countText(kind, count)),
        el('span', 'autosync-doc-type', kind),
        this.deleteButton(path)
      );
      if (open) {
        entry.append(
          kind === 'map'
            ? this.renderMap(value as Record<string, unknown>, path)
            : this.renderList(value as unknown[], path)
        );
      }
    } else {
      line.append(
        el('span', 'autosync-doc-toggle-space'),
        this.labelWithColon(label),
        this.renderScalar(value, path, kind)
      );
      if (kind !== 'null') {
        line.append(el('span', 'autosync-doc-type', kindWord(kind)));
      }
      line.append(this.deleteButton(path));
    }
    return entry;
  }

  private labelWithColon(label: HTMLElement): HTMLElement {
    const node = el('span', 'autosync-doc-label');
    node.append(label, el('span', 'autosync-doc-colon', ':'));
    return node;
  }

  private toggleButton(path: Path, open: boolean, count: number): HTMLElement {
    const key = JSON.stringify(path);
    const button = el('button', 'autosync-doc-toggle');
    button.type = 'button';
    button.dataset.path = key;
    button.dataset.focusKey = `toggle:${key}`;
    button.setAttribute('aria-expanded', String(open));
    button.setAttribute(
      'aria-label',
      open
        ? this.trans.__('Collapse %1', pathLabel(path))
        : this.trans.__('Expand %1 (%2)', pathLabel(path), String(count))
    );
    (open ? caretDownIcon : caretRightIcon).element({ container: button, tag: 'span' });
    button.addEventListener('click', event => {
      event.stopPropagation();
      this.setCollapsed(path, open);
    });
    return button;
  }

  private setCollapsed(path: Path, collapsed: boolean): void {
    const key = JSON.stringify(path);
    if (collapsed) {
      this.collapsed.add(key);
    } else {
      this.collapsed.delete(key);
    }
    this.focusAfterRender = `toggle:${key}`;
    this.render();
  }

  private renderScalar(value: unknown, path: Path, kind: ValueKind): HTMLElement {
    const node = el('span', `autosync-doc-value autosync-doc-${kind}`);
    const key = JSON.stringify(path);
    node.dataset.path = key;
    node.dataset.kind = kind;
    node.dataset.focusKey = `value:${key}`;
    const text = displayText(value);
    node.textContent = kind === 'text' || kind === 'string' ? JSON.stringify(text) : text;
    const name = `${pathLabel(path)}: ${node.textContent}, ${kindWord(kind)}`;
    node.setAttribute('aria-label', name);
    if (isEditable(kind)) {
      node.classList.add('autosync-doc-editable');
      node.tabIndex = 0;
      node.setAttribute('role', 'button');
      node.title = this.trans.__('Click or press Enter to edit');
      node.addEventListener('click', event => {
        event.stopPropagation();
        this.startValueEdit(node, path, kind, text);
      });
      node.addEventListener('keydown', event => {
        if (event.key === 'Enter' || event.key === 'F2') {
          event.preventDefault();
          event.stopPropagation();
          this.startValueEdit(node, path, kind, text);
        }
      });
    } else {
      // Read-only here (counters, dates, bytes): reachable with the arrows.
      node.tabIndex = -1;
      node.title = this.trans.__('A %1 cannot be edited here', kindWord(kind));
    }
    return node;
  }

  /** ↑/↓: previous/next line; ←/→: collapse/expand (or to the parent line). */
  private onTreeKey(event: KeyboardEvent): void {
    const target = event.target;
    if (!(target instanceof HTMLElement) || target instanceof HTMLInputElement) {
      return;
    }
    const line = target.closest('.autosync-doc-line');
    if (line === null || !this.treeNode.contains(line)) {
      return;
    }
    const lines = [...this.treeNode.querySelectorAll<HTMLElement>('.autosync-doc-line')].filter(
      l => l.querySelector('[data-focus-key]') !== null
    );
    const index = lines.indexOf(line as HTMLElement);
    const focusLine = (l: HTMLElement | undefined) => {
      const first =
        l?.querySelector<HTMLElement>('.autosync-doc-toggle, .autosync-doc-value') ??
        l?.querySelector<HTMLElement>('[data-focus-key]');
      if (first) {
        event.preventDefault();
        first.focus();
      }
    };
    const toggle = line.querySelector<HTMLElement>('.autosync-doc-toggle');
    switch (event.key) {
      case 'ArrowDown':
        focusLine(lines[index + 1]);
        break;
      case 'ArrowUp':
        focusLine(lines[index - 1]);
        break;
      case 'Home':
        focusLine(lines[0]);
        break;
      case 'End':
        focusLine(lines[lines.length - 1]);
        break;
      case 'ArrowRight':
        if (toggle?.getAttribute('aria-expanded') === 'false') {
          event.preventDefault();
          this.setCollapsed(JSON.parse(toggle.dataset.path ?? '[]'), false);
        }
        break;
      case 'ArrowLeft':
        if (toggle?.getAttribute('aria-expanded') === 'true') {
          event.preventDefault();
          this.setCollapsed(JSON.parse(toggle.dataset.path ?? '[]'), true);
        } else {
          const parent = line.parentElement?.closest('.autosync-doc-entry');
          focusLine(parent?.querySelector<HTMLElement>(':scope > .autosync-doc-line') ?? undefined);
        }
        break;
    }
  }

  private startValueEdit(node: HTMLElement, path: Path, kind: ValueKind, text: string): void {
    if (this.editing) {
      return;
    }
    this.editing = true;
    const focusKey = node.dataset.focusKey ?? null;
    const input = this.makeInput('autosync-doc-edit-input', text);
    input.dataset.path = JSON.stringify(path);
    input.setAttribute(
      'aria-label',
      this.trans.__('New value of %1 (Enter to save, Escape to cancel)', pathLabel(path))
    );
    node.replaceWith(input);
    input.focus();
    input.select();
    this.bindInput(
      input,
      () => {
        let next: unknown;
        try {
          next = parseEdit(kind, input.value);
        } catch (error) {
          input.classList.add('autosync-doc-edit-invalid');
          input.setAttribute('aria-invalid', 'true');
          input.title = error instanceof Error ? error.message : String(error);
          return false;
        }
        return this.change(d => setValue(d, path, next));
      },
      () => focusKey,
      () => focusKey
    );
  }

  /**
   * Enter commits (when `commit` returns true the input closes), Escape or
   * blur cancels; the focus then goes to the control `focusOnCommit` /
   * `focusOnCancel` name.
   */
  private bindInput(
    input: HTMLInputElement,
    commit: () => boolean,
    focusOnCommit: () => string | null,
    focusOnCancel: () => string | null
  ): void {
    let done = false;
    const finish = (focusKey: string | null) => {
      if (!done) {
        done = true;
        this.endEdit(focusKey);
      }
    };
    input.addEventListener('keydown', event => {
      event.stopPropagation();
      if (event.key === 'Enter') {
        event.preventDefault();
        if (commit()) {
          finish(focusOnCommit());
        }
      } else if (event.key === 'Escape') {
        event.preventDefault();
        finish(focusOnCancel());
      }
    });
    input.addEventListener('blur', () => {
      // Let a click on a sibling input (the add-key form) move focus first.
      setTimeout(() => {
        const active = document.activeElement;
        if (
          !(
            active instanceof HTMLInputElement &&
            active.dataset.form === input.dataset.form &&
            active.dataset.form
          )
        ) {
          finish(null);
        }
      }, 0);
    });
  }

  private makeInput(className: string, value: string, placeholder = ''): HTMLInputElement {
    const input = el('input', `jp-mod-styled ${className}`);
    input.type = 'text';
    input.value = value;
    input.placeholder = placeholder;
    input.spellcheck = false;
    input.dataset.testid = className;
    return input;
  }

  private deleteButton(path: Path): HTMLElement {
    const key = JSON.stringify(path);
    const button = el('button', 'autosync-doc-delete', '×');
    button.type = 'button';
    button.title = this.trans.__('Delete %1', pathLabel(path));
    button.setAttribute('aria-label', this.trans.__('Delete %1', pathLabel(path)));
    button.dataset.path = key;
    button.dataset.testid = 'autosync-doc-delete';
    button.dataset.focusKey = `delete:${key}`;
    button.addEventListener('click', event => {
      event.stopPropagation();
      // Where the focus goes once the line is gone: the parent's "+" button.
      const parent = JSON.stringify(path.slice(0, -1));
      const container = this.treeNode.querySelector<HTMLElement>(
        `.autosync-doc-map[data-path='${CSS.escape(parent)}'], .autosync-doc-list[data-path='${CSS.escape(parent)}']`
      );
      const plus = container?.querySelector<HTMLElement>(
        ':scope > .autosync-doc-add-key, :scope > .autosync-doc-push'
      );
      this.focusAfterRender = plus?.dataset.focusKey ?? null;
      if (!this.change(d => deleteAt(d, path))) {
        this.focusAfterRender = null;
      }
    });
    return button;
  }

  /** A "+ key" / "+ item" button of the map or list at `path`. */
  private actionButton(
    className: string,
    label: string,
    title: string,
    path: Path,
    start: (button: HTMLElement) => void
  ): HTMLButtonElement {
    const button = el('button', className, label);
    button.type = 'button';
    button.title = title;
    button.setAttribute('aria-label', title);
    button.dataset.path = JSON.stringify(path);
    button.dataset.testid = className;
    button.dataset.focusKey = `${className}:${JSON.stringify(path)}`;
    button.addEventListener('click', event => {
      event.stopPropagation();
      start(button);
    });
    return button;
  }

  private startAddKey(button: HTMLElement, path: Path): void {
    if (this.editing) {
      return;
    }
    this.editing = true;
    const buttonKey = button.dataset.focusKey ?? null;
    const form = el('span', 'autosync-doc-add-key-form');
    const formId = `add-${Math.random().toString(36).slice(2)}`;
    const name = this.makeInput('autosync-doc-add-key-name', '', this.trans.__('key'));
    const value = this.makeInput(
      'autosync-doc-add-key-value',
      '',
      this.trans.__('value (JSON or text)')
    );
    name.setAttribute('aria-label', this.trans.__('New key in %1', pathLabel(path)));
    value.setAttribute(
      'aria-label',
      this.trans.__('Its value, JSON or text (Enter to add, Escape to cancel)')
    );
    name.dataset.form = formId;
    value.dataset.form = formId;
    form.append(name, value);
    button.replaceWith(form);
    name.focus();
    const commit = () => {
      const key = name.value;
      const literal = parseLiteral(value.value);
      return this.change(d => addKey(d, path, key, literal));
    };
    const added = () => {
      const newPath = JSON.stringify([...path, name.value]);
      const kind = kindOf(parseLiteral(value.value));
      return kind === 'map' || kind === 'list' ? `toggle:${newPath}` : `value:${newPath}`;
    };
    this.bindInput(name, commit, added, () => buttonKey);
    this.bindInput(value, commit, added, () => buttonKey);
  }

  private startPush(button: HTMLElement, path: Path): void {
    if (this.editing) {
      return;
    }
    this.editing = true;
    const buttonKey = button.dataset.focusKey ?? null;
    const input = this.makeInput(
      'autosync-doc-push-value',
      '',
      this.trans.__('value (JSON or text)')
    );
    input.setAttribute(
      'aria-label',
      this.trans.__('New item of %1, JSON or text (Enter to add, Escape to cancel)', pathLabel(path))
    );
    button.replaceWith(input);
    input.focus();
    this.bindInput(
      input,
      () => {
        const literal = parseLiteral(input.value);
        return this.change(d => pushTo(d, path, literal));
      },
      () => buttonKey,
      () => buttonKey
    );
  }
}

/** A plain widget around a node, for the tab's toolbar. */
function toolbarText(className: string, text: string, title = text): Widget {
  const node = el('span', className, text);
  node.title = title;
  const widget = new Widget({ node });
  widget.addClass('autosync-doc-toolbar-text');
  return widget;
}

/**
 * The main-area tab of one document: a `MainAreaWidget` (toolbar: the URL,
 * the kernel server, the sync status, a copy button) around a `DocumentView`.
 * Its id is `documentPanelId(url, serverUrl)`.
 */
export class DocumentWidget extends MainAreaWidget<DocumentView> {
  constructor(url: AutomergeUrl, serverUrl = '', trans?: TranslationBundle, titleHint?: string) {
    const t = trans ?? nullTranslator.load('autosync_jupyter');
    const content = new DocumentView(url, serverUrl, t, titleHint);
    super({ content });
    this.id = documentPanelId(url, serverUrl);
    this.addClass('autosync-doc-panel');
    this.node.dataset.testid = 'autosync-doc-panel';
    this.node.dataset.documentId = documentIdOf(url);
    if (serverUrl) {
      this.node.dataset.serverUrl = serverUrl;
    }
    const toolbar = this.toolbar;
    toolbar.addClass('autosync-doc-header');
    toolbar.addItem('url', toolbarText('autosync-doc-url', url));
    if (serverUrl) {
      toolbar.addItem(
        'server',
        toolbarText('autosync-doc-server', t.__('on %1', serverUrl), serverUrl)
      );
    }
    toolbar.addItem('spacer', Toolbar.createSpacerItem());
    toolbar.addItem(
      'history',
      new ToolbarButton({
        label: t.__('History'),
        className: 'autosync-doc-history',
        tooltip: t.__("Browse the document's versions, restore one or copy its link"),
        onClick: () => content.toggleTimeline()
      })
    );
    const status = new Widget();
    status.addClass('autosync-doc-status-item');
    status.node.append(content.statusNode);
    toolbar.addItem('status', status);
    toolbar.addItem(
      'copy',
      new ToolbarButton({
        icon: copyIcon,
        className: 'autosync-doc-copy',
        tooltip: t.__('Copy the automerge: URL'),
        onClick: () => Clipboard.copyToSystem(url)
      })
    );
  }

  get url(): AutomergeUrl {
    return this.content.url;
  }

  get serverUrl(): string {
    return this.content.serverUrl;
  }
}
