/**
 * A main-area tab showing one Automerge document live, as an editable JSON
 * tree. All document content reaches the DOM through `textContent` only.
 */
import * as A from '@automerge/automerge/slim';
import type { AutomergeUrl, DocHandle, Repo } from '@automerge/automerge-repo/slim';
import { Widget } from '@lumino/widgets';

import { documentIdOf, repoFor, shortHash, waitForPeer } from './repo';
import {
  EditError,
  Path,
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

/** The status shown in the tab's header (`autosync-doc-status`). */
export type DocStatus =
  | 'loading'
  | 'connecting'
  | 'syncing'
  | 'connected'
  | 'unavailable'
  | 'unreachable'
  | 'error';

/** How long a kernel server's connection may take before the tab says `unreachable`. */
export const KERNEL_SERVER_CONNECT_TIMEOUT_MS = 5000;

/** The message of the `unreachable` status. */
export const KERNEL_SERVER_UNREACHABLE =
  'Cannot connect to the kernel server through the Jupyter server: it relays only servers announced by its kernels on its own machine (ws://127.0.0.1), and this one does not answer there.';

/** The short name of a document: the first 8 characters of its id. */
export function shortId(url: AutomergeUrl): string {
  return documentIdOf(url).slice(0, 8);
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

/** The live view of one document. */
export class DocumentPanel extends Widget {
  readonly url: AutomergeUrl;
  /** The kernel server this view syncs with; empty for the Jupyter server's hub. */
  readonly serverUrl: string;
  private handle: DocHandle<AnyDoc> | null = null;
  private repo: Repo | null = null;
  private status: DocStatus = 'loading';
  private statusDetail = '';
  private editing = false;
  private renderPending = false;
  private readonly statusNode: HTMLElement;
  private readonly messageNode: HTMLElement;
  private readonly treeNode: HTMLElement;
  private readonly cleanups: (() => void)[] = [];
  private peerHeads = new Map<string, string[]>();

  constructor(url: AutomergeUrl, serverUrl = '') {
    super();
    this.url = url;
    this.serverUrl = serverUrl;
    this.id = documentPanelId(url, serverUrl);
    this.addClass('autosync-doc-panel');
    this.node.dataset.testid = 'autosync-doc-panel';
    this.node.dataset.documentId = documentIdOf(url);
    if (serverUrl) {
      this.node.dataset.serverUrl = serverUrl;
    }
    this.title.label = shortId(url);
    this.title.caption = serverUrl ? `${url}\non ${serverUrl}` : url;
    this.title.closable = true;

    const header = el('div', 'autosync-doc-header');
    const name = el('span', 'autosync-doc-url', url);
    this.statusNode = el('span', 'autosync-doc-status');
    this.statusNode.dataset.testid = 'autosync-doc-status';
    header.append(name);
    if (serverUrl) {
      header.append(el('span', 'autosync-doc-server', `on ${serverUrl}`));
    }
    header.append(this.statusNode);
    this.messageNode = el('div', 'autosync-doc-message');
    this.messageNode.hidden = true;
    this.treeNode = el('div', 'autosync-doc-tree');
    this.treeNode.dataset.testid = 'autosync-doc-tree';
    this.node.append(header, this.messageNode, this.treeNode);
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
    super.dispose();
  }

  private async open(): Promise<void> {
    let repo: Repo;
    try {
      repo = await repoFor(this.serverUrl);
    } catch (error) {
      this.setStatus('error', `Automerge could not start: ${String(error)}`);
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
        this.setStatus('unavailable', `Document unavailable: ${String(error)}`);
      }
      return;
    }
    if (this.isDisposed) {
      return;
    }
    this.handle = handle;
    const onChange = () => {
      this.render();
      this.updateSyncStatus();
    };
    handle.on('change', onChange);
    this.cleanups.push(() => handle.off('change', onChange));
    this.render();
    this.updateSyncStatus();
  }

  /**
   * A kernel server is reached through the Jupyter server's relay, which
   * refuses servers not on its machine and fails when the kernel is gone:
   * without a peer after a few seconds, say so (`unreachable`) and keep
   * waiting, the adapter retries. False when the view was closed meanwhile.
   */
  private async waitForKernelServer(repo: Repo): Promise<boolean> {
    const cancel = (c: () => void) => this.cleanups.push(c);
    if (await waitForPeer(repo, KERNEL_SERVER_CONNECT_TIMEOUT_MS, cancel)) {
      return !this.isDisposed;
    }
    if (this.isDisposed) {
      return false;
    }
    this.setStatus('unreachable', `${KERNEL_SERVER_UNREACHABLE} (${this.serverUrl})`);
    const connected = await waitForPeer(repo, null, cancel);
    if (!connected || this.isDisposed) {
      return false;
    }
    this.setStatus('loading');
    return true;
  }

  private watchNetwork(repo: Repo): void {
    const onPeer = () => this.updateSyncStatus();
    const onSyncState = (event: {
      documentId: string;
      peerId: string;
      syncState: { theirHeads?: string[] | null };
    }) => {
      if (event.documentId !== documentIdOf(this.url)) {
        return;
      }
      this.peerHeads.set(event.peerId, event.syncState.theirHeads ?? []);
      this.updateSyncStatus();
    };
    const onPeerGone = (event: { peerId: string }) => {
      this.peerHeads.delete(event.peerId);
      this.updateSyncStatus();
    };
    repo.networkSubsystem.on('peer', onPeer);
    repo.networkSubsystem.on('peer-disconnected', onPeerGone);
    repo.synchronizer.on('sync-state', onSyncState as never);
    this.cleanups.push(() => {
      repo.networkSubsystem.off('peer', onPeer);
      repo.networkSubsystem.off('peer-disconnected', onPeerGone);
      repo.synchronizer.off('sync-state', onSyncState as never);
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
      this.setStatus('loading');
      return;
    }
    const ours = A.getHeads(this.handle.doc());
    const inSync = this.repo.peers.some(peer => {
      const theirs = this.peerHeads.get(peer);
      return theirs !== undefined && sameHeads(ours, theirs);
    });
    this.setStatus(inSync ? 'connected' : 'syncing');
  }

  private setStatus(status: DocStatus, detail = ''): void {
    this.status = status;
    this.statusDetail = detail;
    this.statusNode.textContent = status;
    this.statusNode.dataset.status = status;
    this.messageNode.hidden = detail === '';
    this.messageNode.textContent = detail;
  }

  /** The current status, for tests and commands. */
  get currentStatus(): DocStatus {
    return this.status;
  }

  /** Apply an edit; errors are shown under the header, never thrown. */
  private change(edit: (draft: AnyDoc) => void): boolean {
    if (this.handle === null) {
      return false;
    }
    try {
      this.handle.change(edit);
    } catch (error) {
      const message = error instanceof EditError ? error.message : String(error);
      this.messageNode.hidden = false;
      this.messageNode.textContent = `Edit not applied: ${message}`;
      return false;
    }
    if (this.statusDetail === '') {
      this.messageNode.hidden = true;
    }
    this.updateSyncStatus();
    return true;
  }

  /** Rebuild the tree; deferred while an edit input is open. */
  private render(): void {
    if (this.handle === null || this.isDisposed) {
      return;
    }
    if (this.editing) {
      this.renderPending = true;
      return;
    }
    this.renderPending = false;
    const doc = this.handle.doc();
    this.treeNode.replaceChildren(this.renderValue(doc, []));
  }

  private endEdit(): void {
    this.editing = false;
    // Always re-render: it drops the edit input and shows the latest state.
    this.render();
  }

  private renderValue(value: unknown, path: Path): HTMLElement {
    const kind = kindOf(value);
    if (kind === 'map') {
      return this.renderMap(value as Record<string, unknown>, path);
    }
    if (kind === 'list') {
      return this.renderList(value as unknown[], path);
    }
    const node = el('span', `autosync-doc-value autosync-doc-${kind}`);
    node.dataset.path = JSON.stringify(path);
    node.dataset.kind = kind;
    const text = displayText(value);
    node.textContent = kind === 'text' || kind === 'string' ? JSON.stringify(text) : text;
    if (isEditable(kind)) {
      node.classList.add('autosync-doc-editable');
      node.title = 'Click to edit';
      node.addEventListener('click', event => {
        event.stopPropagation();
        this.startValueEdit(node, path, kind, text);
      });
    }
    return node;
  }

  private startValueEdit(
    node: HTMLElement,
    path: Path,
    kind: ReturnType<typeof kindOf>,
    text: string
  ): void {
    if (this.editing) {
      return;
    }
    this.editing = true;
    const input = this.makeInput('autosync-doc-edit-input', text);
    input.dataset.path = JSON.stringify(path);
    node.replaceWith(input);
    input.focus();
    input.select();
    this.bindInput(input, () => {
      let next: unknown;
      try {
        next = parseEdit(kind, input.value);
      } catch (error) {
        input.classList.add('autosync-doc-edit-invalid');
        input.title = error instanceof Error ? error.message : String(error);
        return false;
      }
      return this.change(d => setValue(d, path, next));
    });
  }

  /** Enter commits (when `commit` returns true the input closes), Escape or blur cancels. */
  private bindInput(input: HTMLInputElement, commit: () => boolean): void {
    let done = false;
    const finish = () => {
      if (!done) {
        done = true;
        this.endEdit();
      }
    };
    input.addEventListener('keydown', event => {
      event.stopPropagation();
      if (event.key === 'Enter') {
        event.preventDefault();
        if (commit()) {
          finish();
        }
      } else if (event.key === 'Escape') {
        event.preventDefault();
        finish();
      }
    });
    input.addEventListener('blur', () => {
      // Let a click on a sibling input (the add-key form) move focus first.
      setTimeout(() => {
        const active = document.activeElement;
        if (!(active instanceof HTMLInputElement && active.dataset.form === input.dataset.form && active.dataset.form)) {
          finish();
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
    const button = el('button', 'autosync-doc-delete', '×');
    button.type = 'button';
    button.title = 'Delete';
    button.dataset.path = JSON.stringify(path);
    button.dataset.testid = 'autosync-doc-delete';
    button.addEventListener('click', event => {
      event.stopPropagation();
      this.change(d => deleteAt(d, path));
    });
    return button;
  }

  /**
   * One key of a map or item of a list: label, delete button, value. The
   * delete button of a nested map or list sits next to its label.
   */
  private renderEntry(label: HTMLElement, value: unknown, path: Path): HTMLElement {
    const row = el('li', 'autosync-doc-entry');
    row.append(label, el('span', 'autosync-doc-colon', ': '));
    const kind = kindOf(value);
    if (kind === 'map' || kind === 'list') {
      const empty =
        kind === 'map'
          ? Object.keys(value as object).length === 0
          : (value as unknown[]).length === 0;
      const brace = el(
        'span',
        'autosync-doc-brace',
        kind === 'map' ? (empty ? '{}' : '{…}') : empty ? '[]' : '[…]'
      );
      row.append(brace, this.deleteButton(path), this.renderValue(value, path));
    } else {
      row.append(this.renderValue(value, path), this.deleteButton(path));
    }
    return row;
  }

  private renderMap(map: Record<string, unknown>, path: Path): HTMLElement {
    const container = el('div', 'autosync-doc-map');
    container.dataset.path = JSON.stringify(path);
    const entries = el('ul', 'autosync-doc-entries');
    for (const key of Object.keys(map)) {
      entries.append(this.renderEntry(el('span', 'autosync-doc-key', key), map[key], [...path, key]));
    }
    container.append(entries);
    container.append(
      this.actionButton('autosync-doc-add-key', '+ key', 'Add a key to this map', path, button =>
        this.startAddKey(button, path)
      )
    );
    return container;
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
    button.dataset.path = JSON.stringify(path);
    button.dataset.testid = className;
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
    const form = el('span', 'autosync-doc-add-key-form');
    const formId = `add-${Math.random().toString(36).slice(2)}`;
    const name = this.makeInput('autosync-doc-add-key-name', '', 'key');
    const value = this.makeInput('autosync-doc-add-key-value', '', 'value (JSON or text)');
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
    this.bindInput(name, commit);
    this.bindInput(value, commit);
  }

  private renderList(list: unknown[], path: Path): HTMLElement {
    const container = el('div', 'autosync-doc-list');
    container.dataset.path = JSON.stringify(path);
    const items = el('ul', 'autosync-doc-items');
    list.forEach((item, index) => {
      items.append(
        this.renderEntry(el('span', 'autosync-doc-index', String(index)), item, [...path, index])
      );
    });
    container.append(items);
    container.append(
      this.actionButton('autosync-doc-push', '+ item', 'Append an item to this list', path, button =>
        this.startPush(button, path)
      )
    );
    return container;
  }

  private startPush(button: HTMLElement, path: Path): void {
    if (this.editing) {
      return;
    }
    this.editing = true;
    const input = this.makeInput('autosync-doc-push-value', '', 'value (JSON or text)');
    button.replaceWith(input);
    input.focus();
    this.bindInput(input, () => {
      const literal = parseLiteral(input.value);
      return this.change(d => pushTo(d, path, literal));
    });
  }

  /** True while a re-render waits for an open edit input to close. */
  get hasPendingRender(): boolean {
    return this.renderPending;
  }
}
