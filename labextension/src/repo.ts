/**
 * The one automerge-repo `Repo` of this browser tab: no storage, one network
 * adapter, a WebSocket to the Jupyter server's `autosync/ws`.
 *
 * Automerge's WebAssembly is bundled as base64 (the "slim" entry points plus
 * `@automerge/automerge/automerge.wasm.base64`), so nothing is fetched from
 * outside the Jupyter server and JupyterLab's bundler needs no `.wasm`
 * support.
 */
import {
  AutomergeUrl,
  DocumentId,
  Repo,
  initializeBase64Wasm,
  interpretAsDocumentId,
  isValidAutomergeUrl,
  isValidDocumentId,
  parseAutomergeUrl,
  stringifyAutomergeUrl
} from '@automerge/automerge-repo/slim';
import { WebSocketClientAdapter } from '@automerge/automerge-repo-network-websocket';

import { relaySocketUrl, syncSocketUrl } from './api';

let repoPromise: Promise<Repo> | null = null;
let wasmPromise: Promise<void> | null = null;

/** Initialise Automerge's WebAssembly once (a separate chunk, fetched on first use). */
function initWasm(): Promise<void> {
  if (wasmPromise === null) {
    wasmPromise = (async () => {
      // A separate 4.6 MB chunk, fetched from the extension's own static
      // files the first time a document is opened, not at page load.
      const { automergeWasmBase64 } = await import(
        /* webpackChunkName: "automerge-wasm" */ '@automerge/automerge/automerge.wasm.base64'
      );
      await initializeBase64Wasm(automergeWasmBase64);
    })();
    wasmPromise.catch(() => {
      wasmPromise = null;
    });
  }
  return wasmPromise;
}

/**
 * What each peer of a `Repo` last said it has of each document (its heads),
 * recorded from the moment the `Repo` exists: a tab opened again after it was
 * closed knows at once that the server has its document, although no sync
 * message goes by then.
 */
export class PeerHeads {
  private readonly heads = new Map<string, Map<string, string[]>>();
  private readonly listeners = new Set<(documentId: string) => void>();

  constructor(repo: Repo) {
    repo.synchronizer.on('sync-state', ({ documentId, peerId, syncState }) => {
      // Automerge's SyncState is opaque in its types; `theirHeads` is what
      // the peer last said it has.
      const theirs = (syncState as unknown as { theirHeads?: string[] | null }).theirHeads;
      let peers = this.heads.get(documentId);
      if (peers === undefined) {
        peers = new Map();
        this.heads.set(documentId, peers);
      }
      peers.set(peerId, theirs ?? []);
      this.emit(documentId);
    });
    repo.networkSubsystem.on('peer-disconnected', ({ peerId }) => {
      for (const [documentId, peers] of this.heads) {
        if (peers.delete(peerId)) {
          this.emit(documentId);
        }
      }
    });
  }

  /** The heads `peerId` has of `documentId`, if it said. */
  of(documentId: string, peerId: string): string[] | undefined {
    return this.heads.get(documentId)?.get(peerId);
  }

  /** Call `listener` with the document id whenever a peer's heads of it change; returns the undo. */
  listen(listener: (documentId: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(documentId: string): void {
    for (const listener of [...this.listeners]) {
      listener(documentId);
    }
  }
}

const peerHeads = new WeakMap<Repo, PeerHeads>();

/** A `Repo` connected through `url`, its `PeerHeads` recording from the start. */
function makeRepo(url: string): Repo {
  const repo = new Repo({ network: [new WebSocketClientAdapter(url)] });
  peerHeads.set(repo, new PeerHeads(repo));
  return repo;
}

/** The peers' heads of the documents of a `Repo` made here. */
export function peerHeadsOf(repo: Repo): PeerHeads {
  let heads = peerHeads.get(repo);
  if (heads === undefined) {
    heads = new PeerHeads(repo);
    peerHeads.set(repo, heads);
  }
  return heads;
}

/** The shared `Repo`, created (and the WebAssembly initialised) on first use. */
export function sharedRepo(): Promise<Repo> {
  if (repoPromise === null) {
    repoPromise = (async () => {
      await initWasm();
      return makeRepo(syncSocketUrl());
    })();
    repoPromise.catch(() => {
      repoPromise = null;
    });
  }
  return repoPromise;
}

const serverRepos = new Map<string, Promise<Repo>>();

/**
 * The `Repo` connected to a kernel-hosted server (`ws://127.0.0.1:PORT`)
 * through the Jupyter server's relay, one per server URL, created on first
 * use and kept for the page's lifetime.
 */
export function serverRepo(serverUrl: string): Promise<Repo> {
  let promise = serverRepos.get(serverUrl);
  if (promise === undefined) {
    promise = (async () => {
      await initWasm();
      return makeRepo(relaySocketUrl(serverUrl));
    })();
    promise.catch(() => {
      serverRepos.delete(serverUrl);
    });
    serverRepos.set(serverUrl, promise);
  }
  return promise;
}

/** The hub's `Repo` when `serverUrl` is empty, else that server's. */
export function repoFor(serverUrl?: string | null): Promise<Repo> {
  return serverUrl ? serverRepo(serverUrl) : sharedRepo();
}

/**
 * Resolves true once `repo` has a peer, false after `timeoutMs` without one
 * (null: no time limit) or when the function handed to `onCancel` is called.
 */
export function waitForPeer(
  repo: Repo,
  timeoutMs: number | null,
  onCancel?: (cancel: () => void) => void
): Promise<boolean> {
  if (repo.peers.length > 0) {
    return Promise.resolve(true);
  }
  return new Promise(resolve => {
    let done = false;
    const onPeer = () => finish(true);
    const timer = timeoutMs === null ? null : window.setTimeout(() => finish(false), timeoutMs);
    function finish(result: boolean): void {
      if (done) {
        return;
      }
      done = true;
      if (timer !== null) {
        window.clearTimeout(timer);
      }
      repo.networkSubsystem.off('peer', onPeer);
      resolve(result);
    }
    repo.networkSubsystem.on('peer', onPeer);
    onCancel?.(() => finish(false));
  });
}

/** A short, stable hash of a string (FNV-1a, 32 bits, hex): for widget ids. */
export function shortHash(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/**
 * Turn what a user typed (an `automerge:` URL, possibly with heads, or a bare
 * document id) into a canonical `automerge:` URL, or null when it is neither.
 */
export function normalizeAutomergeUrl(text: string): AutomergeUrl | null {
  const value = text.trim();
  if (isValidAutomergeUrl(value)) {
    const { documentId } = parseAutomergeUrl(value);
    return stringifyAutomergeUrl({ documentId });
  }
  if (isValidDocumentId(value)) {
    return stringifyAutomergeUrl({ documentId: value as DocumentId });
  }
  try {
    return stringifyAutomergeUrl({ documentId: interpretAsDocumentId(value as DocumentId) });
  } catch {
    return null;
  }
}

/** The document id of a canonical URL. */
export function documentIdOf(url: AutomergeUrl): DocumentId {
  return parseAutomergeUrl(url).documentId;
}
