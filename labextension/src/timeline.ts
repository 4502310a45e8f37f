/**
 * The history slider of a document tab.
 *
 * Version k (1-based) is the document made of the first k changes in
 * Automerge's causal order (`getChangesMetaSince(doc, [])`), so every
 * version is one some peer could have seen; its heads are the changes of
 * that prefix that no other change of it depends on. The tab shows a
 * pinned version read-only (`view(doc, heads)`) with what its change
 * touched (`diff` against version k - 1) highlighted. "Restore this
 * version" applies `diff(now → then)` as one new change: history is never
 * rewritten, and peers see an ordinary edit.
 */
import * as A from '@automerge/automerge/slim';
import {
  encodeHeads,
  stringifyAutomergeUrl,
  type DocHandle,
  type DocumentId
} from '@automerge/automerge-repo/slim';
import { Clipboard } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';

import { el } from './dom';
import { colorOf } from './presence';
import type { Path } from './tree';

type AnyDoc = Record<string, unknown>;

/** A pinned past version, as the tab shows it. */
export interface PastVersion {
  version: number;
  versions: number;
  heads: A.Heads;
  doc: AnyDoc;
  /** The paths the version's change touched (against the version before). */
  changed: Path[];
  actor: string;
  seq: number;
  /** Seconds since the epoch; 0 when the change carries no time. */
  time: number;
  message: string | null;
  url: string;
}

/** The heads of the first `count` changes (given in causal order). */
export function prefixHeads(metas: readonly A.ChangeMetadata[], count: number): A.Heads {
  const heads = new Set<string>();
  for (const meta of metas.slice(0, count)) {
    for (const dep of meta.deps) {
      heads.delete(dep);
    }
    heads.add(meta.hash);
  }
  return [...heads];
}

/** The version's time as shown: local date and time, or "time unknown". */
export function timeText(seconds: number): string {
  if (!seconds) {
    return 'time unknown';
  }
  // JS writes seconds; a writer that used milliseconds would give numbers
  // no second count reaches before the year 5138.
  const ms = Math.abs(seconds) >= 1e11 ? seconds : seconds * 1000;
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? 'time unknown' : date.toLocaleString();
}

/** The timeline pane of one tab; it calls `changed()` whenever what the tab shows must change. */
export class DocumentTimeline {
  readonly node: HTMLElement;
  private readonly handle: DocHandle<AnyDoc>;
  private readonly documentId: DocumentId;
  private readonly trans: TranslationBundle;
  private readonly changed: () => void;
  private readonly slider: HTMLInputElement;
  private readonly position: HTMLElement;
  private readonly author: HTMLElement;
  private readonly when: HTMLElement;
  private readonly message: HTMLElement;
  private readonly restoreButton: HTMLButtonElement;
  private readonly copyButton: HTMLButtonElement;
  private readonly liveButton: HTMLButtonElement;
  private readonly link: HTMLInputElement;
  private readonly status: HTMLElement;
  private metas: A.ChangeMetadata[] = [];
  private pinnedVersion = 0;
  private past: PastVersion | null = null;

  constructor(
    handle: DocHandle<AnyDoc>,
    documentId: DocumentId,
    trans: TranslationBundle,
    changed: () => void
  ) {
    this.handle = handle;
    this.documentId = documentId;
    this.trans = trans;
    this.changed = changed;
    this.node = el('div', 'autosync-doc-timeline');
    this.node.dataset.testid = 'autosync-doc-timeline';
    this.node.hidden = true;

    const row = el('div', 'autosync-doc-timeline-row');
    this.slider = el('input', 'autosync-doc-timeline-slider');
    this.slider.type = 'range';
    this.slider.min = '1';
    this.slider.step = '1';
    this.slider.setAttribute('aria-label', trans.__('Version'));
    this.slider.addEventListener('input', () => this.pin(Number(this.slider.value)));
    this.position = el('span', 'autosync-doc-timeline-position');
    this.liveButton = this.button('autosync-doc-timeline-live', trans.__('Live'), () =>
      this.pin(0)
    );
    this.liveButton.title = trans.__('Show the document as it is now, and edit it');
    row.append(this.slider, this.position, this.liveButton);

    const details = el('div', 'autosync-doc-timeline-row');
    this.author = el('span', 'autosync-doc-timeline-author');
    this.when = el('span', 'autosync-doc-timeline-time');
    this.message = el('span', 'autosync-doc-timeline-message');
    details.append(this.author, this.when, this.message);

    const actions = el('div', 'autosync-doc-timeline-row');
    this.restoreButton = this.button(
      'autosync-doc-timeline-restore',
      trans.__('Restore this version'),
      () => this.restore()
    );
    this.restoreButton.title = trans.__(
      "Write this version's content back as a new change (the history is kept)"
    );
    this.copyButton = this.button('autosync-doc-timeline-copy', trans.__('Copy link'), () =>
      this.copy()
    );
    this.copyButton.title = trans.__("Copy this version's automerge: URL");
    this.link = el('input', 'jp-mod-styled autosync-doc-timeline-url');
    this.link.readOnly = true;
    this.link.setAttribute('aria-label', trans.__('Link to this version'));
    this.link.hidden = true;
    actions.append(this.restoreButton, this.copyButton, this.link);
    this.status = el('div', 'autosync-doc-timeline-status');
    this.status.setAttribute('role', 'status');
    this.node.append(row, details, actions, this.status);
  }

  /** Whether the pane is shown. */
  get isOpen(): boolean {
    return !this.node.hidden;
  }

  /** The version shown instead of the live document, or null. */
  get pinned(): PastVersion | null {
    return this.past;
  }

  /** Show or hide the pane; hiding it goes back to the live document. */
  toggle(open = !this.isOpen): void {
    this.node.hidden = !open;
    if (open) {
      this.refresh();
    } else if (this.pinnedVersion) {
      this.pin(0);
    }
  }

  /** Re-read the history (after a change); a pinned version stays pinned. */
  refresh(): void {
    if (!this.isOpen) {
      return;
    }
    const doc = this.handle.doc();
    this.metas = A.getChangesMetaSince(doc, []);
    if (this.pinnedVersion > this.metas.length) {
      this.pinnedVersion = this.metas.length;
    }
    this.past = this.pinnedVersion ? this.load(this.pinnedVersion) : null;
    this.draw();
  }

  /** Show version `version` (0: the live document). */
  pin(version: number): void {
    this.pinnedVersion = version;
    this.status.textContent = '';
    this.link.hidden = true;
    this.refresh();
    if (!this.isOpen) {
      this.past = null;
    }
    this.changed();
  }

  private load(version: number): PastVersion {
    const doc = this.handle.doc();
    const meta = this.metas[version - 1];
    const heads = prefixHeads(this.metas, version);
    const before = prefixHeads(this.metas, version - 1);
    let changed: Path[] = [];
    try {
      changed = A.diff(doc, before, heads).map(patch => patch.path as Path);
    } catch (error) {
      console.warn('autosync-jupyter: no highlights for this version', error);
    }
    return {
      version,
      versions: this.metas.length,
      heads,
      doc: A.view(doc, heads) as AnyDoc,
      changed,
      actor: meta.actor,
      seq: meta.seq,
      time: meta.time,
      message: meta.message,
      url: stringifyAutomergeUrl({ documentId: this.documentId, heads: encodeHeads(heads) })
    };
  }

  private draw(): void {
    const versions = this.metas.length;
    const past = this.past;
    this.slider.max = String(Math.max(versions, 1));
    this.slider.disabled = versions === 0;
    if (document.activeElement !== this.slider || past === null) {
      this.slider.value = String(past ? past.version : versions);
    }
    this.liveButton.disabled = past === null;
    this.restoreButton.disabled = past === null || past.version === versions;
    this.copyButton.disabled = past === null;
    this.author.replaceChildren();
    if (past === null) {
      this.position.textContent = this.trans._n('live · %1 version', 'live · %1 versions', versions);
      this.when.textContent = '';
      this.message.textContent = '';
      return;
    }
    this.position.textContent = this.trans.__('version %1 of %2', past.version, versions);
    const dot = el('span', 'autosync-doc-presence-dot');
    dot.style.background = colorOf(past.actor);
    this.author.append(dot, el('span', '', `${past.actor.slice(0, 8)} #${past.seq}`));
    this.author.title = this.trans.__('Author (actor id) %1', past.actor);
    this.when.textContent = timeText(past.time);
    this.message.textContent = past.message ? `“${past.message}”` : '';
  }

  private restore(): void {
    const past = this.past;
    if (past === null) {
      return;
    }
    const now = this.handle.doc();
    const patches = A.diff(now, A.getHeads(now), past.heads);
    const version = past.version;
    try {
      this.handle.change(d => A.applyPatches(d, patches), {
        message: `restore version ${version}`
      });
    } catch (error) {
      this.status.textContent = this.trans.__('Cannot restore version %1: %2', version, String(error));
      return;
    }
    this.pin(0);
    this.status.textContent = this.trans.__('Version %1 restored as a new change', version);
  }

  private copy(): void {
    const past = this.past;
    if (past === null) {
      return;
    }
    Clipboard.copyToSystem(past.url);
    this.link.value = past.url;
    this.link.hidden = false;
    this.link.select();
    this.status.textContent = this.trans.__('Link copied');
  }

  private button(className: string, label: string, onClick: () => void): HTMLButtonElement {
    const button = el('button', `jp-Button jp-mod-styled jp-mod-reject ${className}`, label);
    button.type = 'button';
    button.dataset.testid = className;
    button.addEventListener('click', onClick);
    return button;
  }
}
