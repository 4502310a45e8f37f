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

import { syncSocketUrl } from './api';

let repoPromise: Promise<Repo> | null = null;

/** The shared `Repo`, created (and the WebAssembly initialised) on first use. */
export function sharedRepo(): Promise<Repo> {
  if (repoPromise === null) {
    repoPromise = (async () => {
      // A separate 4.6 MB chunk, fetched from the extension's own static
      // files the first time a document is opened, not at page load.
      const { automergeWasmBase64 } = await import(
        /* webpackChunkName: "automerge-wasm" */ '@automerge/automerge/automerge.wasm.base64'
      );
      await initializeBase64Wasm(automergeWasmBase64);
      return new Repo({
        network: [new WebSocketClientAdapter(syncSocketUrl())]
      });
    })();
    repoPromise.catch(() => {
      repoPromise = null;
    });
  }
  return repoPromise;
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
