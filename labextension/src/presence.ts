/**
 * Presence in a document tab: who else is in the document now.
 *
 * It is automerge-repo's own `Presence` (ephemeral messages, nothing stored),
 * so the tab, JS apps and Python's `DocHandle.presence` see each other. The
 * state each peer announces: `name`, `color` (CSS), `viewing` (the path it
 * looks at, `[]` for the whole document) and, while it browses the history,
 * `heads` (the version it shows). This user's name and colour are
 * JupyterLab's identity (`serviceManager.user`).
 */
import { Presence } from '@automerge/automerge-repo/slim';
import type { DocHandle, PeerState } from '@automerge/automerge-repo/slim';

import { el } from './dom';

/** What this tab announces about its user. */
export interface LocalUser {
  name: string;
  color: string;
}

type PresenceValue = {
  name?: unknown;
  color?: unknown;
  viewing?: unknown;
  heads?: unknown;
};

let localUser: LocalUser = { name: 'JupyterLab user', color: '#4363d8' };
const userListeners = new Set<() => void>();

/** Set this user's name and colour (from JupyterLab's identity); open tabs re-announce. */
export function setLocalUser(user: LocalUser): void {
  localUser = { ...user };
  for (const listener of [...userListeners]) {
    listener();
  }
}

/** This user's name and colour as announced. */
export function getLocalUser(): LocalUser {
  return localUser;
}

// The same palette and pick as Python's peer_color, so a peer that gave no
// colour looks alike in the notebook and here (a hash of its id).
const PALETTE = [
  '#e6194b',
  '#3cb44b',
  '#4363d8',
  '#f58231',
  '#911eb4',
  '#42a5a5',
  '#f032e6',
  '#9a6324',
  '#808000',
  '#000075'
];

/** A colour for a peer (or actor) that announced none. */
export function colorOf(id: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return PALETTE[hash % PALETTE.length];
}

/** One row of the presence bar. */
export interface PresenceRow {
  peerId: string;
  name: string;
  color: string;
  viewing: (string | number)[] | null;
  heads: string[] | null;
  me: boolean;
}

function isPath(value: unknown): value is (string | number)[] {
  return (
    Array.isArray(value) && value.every(k => typeof k === 'string' || typeof k === 'number')
  );
}

function rowOf(peerId: string, value: PresenceValue, me: boolean): PresenceRow {
  const name = typeof value.name === 'string' && value.name ? value.name : peerId.slice(0, 12);
  const color = typeof value.color === 'string' && value.color ? value.color : colorOf(peerId);
  const heads =
    Array.isArray(value.heads) && value.heads.every(h => typeof h === 'string')
      ? (value.heads as string[])
      : null;
  return { peerId, name, color, viewing: isPath(value.viewing) ? value.viewing : null, heads, me };
}

/**
 * The presence of one tab's document: announces this user, keeps the list
 * of the others, and draws it as a bar of name chips (`node`).
 */
export class DocumentPresence {
  /** The presence bar. */
  readonly node: HTMLElement;
  private readonly presence: Presence<PresenceValue>;
  private readonly selfId: string;
  private readonly listeners = new Set<(rows: PresenceRow[]) => void>();
  private readonly offUser: () => void;
  private viewing: (string | number)[] = [];

  constructor(handle: DocHandle<unknown>, selfId: string) {
    this.selfId = selfId;
    this.node = el('div', 'autosync-doc-presence');
    this.node.dataset.testid = 'autosync-doc-presence';
    this.node.setAttribute('role', 'list');
    this.node.setAttribute('aria-label', 'People in this document');
    this.presence = new Presence<PresenceValue>({ handle });
    for (const event of ['snapshot', 'update', 'goodbye', 'pruning', 'heartbeat'] as const) {
      this.presence.on(event, () => this.draw());
    }
    this.presence.start({
      initialState: { name: localUser.name, color: localUser.color, viewing: [] }
    });
    const onUser = () => {
      this.presence.broadcast('name', localUser.name);
      this.presence.broadcast('color', localUser.color);
      this.draw();
    };
    userListeners.add(onUser);
    this.offUser = () => userListeners.delete(onUser);
    this.draw();
  }

  /** Everyone in the document now, this user first. */
  get rows(): PresenceRow[] {
    const rows = [rowOf(this.selfId, this.presence.getLocalState() ?? {}, true)];
    const states = this.presence.getPeerStates().value as Record<
      string,
      PeerState<PresenceValue>
    >;
    const others = Object.values(states)
      .filter(state => state.peerId !== this.selfId)
      .map(state => rowOf(state.peerId, state.value ?? {}, false))
      .sort((a, b) => a.name.localeCompare(b.name) || a.peerId.localeCompare(b.peerId));
    return rows.concat(others);
  }

  /** Call `listener(rows)` when someone comes, leaves or says something new; returns the undo. */
  listen(listener: (rows: PresenceRow[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Tell the others which path this user looks at. */
  setViewing(path: (string | number)[]): void {
    if (JSON.stringify(path) === JSON.stringify(this.viewing)) {
      return;
    }
    this.viewing = path;
    this.presence.broadcast('viewing', path);
    this.draw();
  }

  /** Tell the others which past version this user shows (null: the live document). */
  setHeads(heads: string[] | null): void {
    const now = this.presence.getLocalState()?.heads ?? null;
    if (JSON.stringify(now) === JSON.stringify(heads)) {
      return;
    }
    this.presence.broadcast('heads', heads);
    this.draw();
  }

  /** Say goodbye: the others forget this tab at once. */
  dispose(): void {
    this.offUser();
    this.presence.stop();
    this.listeners.clear();
  }

  private draw(): void {
    const rows = this.rows;
    const chips = rows.map(row => {
      const chip = el('span', 'autosync-doc-presence-peer');
      chip.setAttribute('role', 'listitem');
      chip.dataset.peerId = row.peerId;
      if (row.me) {
        chip.classList.add('autosync-doc-presence-me');
      }
      const dot = el('span', 'autosync-doc-presence-dot');
      dot.style.background = row.color;
      const label = row.me ? `${row.name} (you)` : row.name;
      chip.append(dot, el('span', 'autosync-doc-presence-name', label));
      const where = row.viewing
        ? row.viewing.length
          ? `viewing ${row.viewing.map(String).join(' › ')}`
          : 'viewing the whole document'
        : '';
      const past = row.heads ? `at a past version (${row.heads.join(' ')})` : '';
      chip.title = [row.peerId, where, past].filter(Boolean).join('\n');
      return chip;
    });
    this.node.replaceChildren(...chips);
    for (const listener of [...this.listeners]) {
      listener(rows);
    }
  }
}
