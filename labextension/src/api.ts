/**
 * The REST API of the autosync Jupyter server extension
 * (`{base}autosync/api/...`), reached through `ServerConnection` so requests
 * carry Jupyter's XSRF header, cookie and token.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One row of `GET autosync/api/documents` (and of a kernel server's list). */
export interface IDocumentSummary {
  id: string;
  url: string;
  /** Bytes of storage, or null when unknown. */
  size?: number | null;
  heads?: string[];
  peers?: number;
  loaded?: boolean;
  /** ISO 8601 (or seconds / milliseconds since the epoch), null when unknown. */
  last_change?: number | string | null;
  /** The document's top-level `title` (else `name`) text, null when none or not loaded. */
  title?: string | null;
  /** Why this one document cannot be read, null when it can. */
  error?: string | null;
}

/** The reply of `GET autosync/api/documents/{id}`. */
export interface IDocumentDetail {
  id: string;
  url: string;
  heads: string[];
  content: unknown;
}

/** The reply of `POST autosync/api/documents`. */
export interface ICreatedDocument {
  id: string;
  url: string;
}

/** The text shown when the server side of autosync-jupyter is not there. */
export const SERVER_EXTENSION_MISSING = 'Automerge server extension not available';

/** A failed call of the autosync REST API, with a message fit for the user. */
export class AutosyncApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
    readonly serverMissing: boolean = false
  ) {
    super(message);
    this.name = 'AutosyncApiError';
  }
}

/** The Jupyter server connection settings, made once. */
let settingsCache: ServerConnection.ISettings | null = null;

export function serverSettings(): ServerConnection.ISettings {
  if (settingsCache === null) {
    settingsCache = ServerConnection.makeSettings();
  }
  return settingsCache;
}

/** The sync WebSocket URL: `{wsUrl}autosync/ws`, plus `?token=` when Jupyter uses one. */
export function syncSocketUrl(
  settings: ServerConnection.ISettings = serverSettings()
): string {
  const url = URLExt.join(settings.wsUrl, 'autosync', 'ws');
  if (settings.token) {
    return `${url}?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}

/**
 * The WebSocket URL of a kernel-hosted server relayed by the Jupyter server:
 * `{wsUrl}autosync/relay?server=<its announced URL>` (plus `&token=`), so its
 * documents open wherever the browser is, not only on the kernel's machine.
 */
export function relaySocketUrl(
  serverUrl: string,
  settings: ServerConnection.ISettings = serverSettings()
): string {
  const url = URLExt.join(settings.wsUrl, 'autosync', 'relay');
  const query = `server=${encodeURIComponent(serverUrl)}`;
  if (settings.token) {
    return `${url}?${query}&token=${encodeURIComponent(settings.token)}`;
  }
  return `${url}?${query}`;
}

/** How long a REST call may take (ms) before it fails; 0 waits forever. */
let requestTimeoutMs = 10000;

/** Set the REST timeout (the `requestTimeout` setting). */
export function setRequestTimeout(ms: number): void {
  requestTimeoutMs = Number.isFinite(ms) && ms > 0 ? ms : 0;
}

async function call<T>(
  path: string,
  init: RequestInit,
  settings: ServerConnection.ISettings = serverSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'autosync', 'api', path);
  const timeout = requestTimeoutMs;
  const controller = new AbortController();
  const timer = timeout > 0 ? window.setTimeout(() => controller.abort(), timeout) : null;
  let response: Response;
  let text: string;
  try {
    response = await ServerConnection.makeRequest(
      url,
      { ...init, signal: controller.signal },
      settings
    );
    text = await response.text();
  } catch (error) {
    throw new AutosyncApiError(
      controller.signal.aborted
        ? `The Jupyter server did not answer within ${timeout / 1000} s`
        : `Cannot reach the Jupyter server: ${String(error)}`,
      null
    );
  } finally {
    if (timer !== null) {
      window.clearTimeout(timer);
    }
  }
  let body: unknown = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  const isJsonObject = body !== null && typeof body === 'object';
  if (response.status === 404 && !(isJsonObject && 'message' in (body as object))) {
    // Tornado's default 404 page: no handler is mounted under autosync/api.
    throw new AutosyncApiError(SERVER_EXTENSION_MISSING, 404, true);
  }
  if (!response.ok) {
    const detail =
      isJsonObject && typeof (body as { message?: unknown }).message === 'string'
        ? (body as { message: string }).message
        : response.statusText || 'request failed';
    throw new AutosyncApiError(`${detail} (HTTP ${response.status})`, response.status);
  }
  if (!isJsonObject) {
    throw new AutosyncApiError(SERVER_EXTENSION_MISSING, response.status, true);
  }
  return body as T;
}

function isDocumentSummary(d: unknown): d is IDocumentSummary {
  return (
    d !== null &&
    typeof d === 'object' &&
    typeof (d as IDocumentSummary).id === 'string' &&
    typeof (d as IDocumentSummary).url === 'string'
  );
}

/** List the documents of the server's hub. */
export async function listDocuments(): Promise<IDocumentSummary[]> {
  const reply = await call<{ documents?: unknown }>('documents', { method: 'GET' });
  if (!Array.isArray(reply.documents)) {
    throw new AutosyncApiError('Malformed reply from the autosync server extension', 200);
  }
  return reply.documents.filter(isDocumentSummary);
}

/** Create a document with the given content on the server; returns its id and URL. */
export async function createDocument(
  content: Record<string, unknown> = {}
): Promise<ICreatedDocument> {
  return call<ICreatedDocument>('documents', {
    method: 'POST',
    body: JSON.stringify({ content }),
    headers: { 'Content-Type': 'application/json' }
  });
}

/** One kernel-hosted sync server (`%autosync serve`) of `GET autosync/api/servers`. */
export interface IKernelServer {
  id: string;
  /** Its sync WebSocket, e.g. `ws://127.0.0.1:PORT`. */
  url: string;
  name: string;
  /** At most the 40 newest documents. */
  documents: IDocumentSummary[];
  /** How many documents the server really holds. */
  documentCount: number;
  updated?: string;
}

/**
 * List the kernel-hosted servers that announced themselves to the server
 * extension, or null when the server extension is too old to know about them
 * (HTTP 404).
 */
export async function listKernelServers(): Promise<IKernelServer[] | null> {
  let reply: { servers?: unknown };
  try {
    reply = await call<{ servers?: unknown }>('servers', { method: 'GET' });
  } catch (error) {
    if (error instanceof AutosyncApiError && error.status === 404) {
      return null;
    }
    throw error;
  }
  if (!Array.isArray(reply.servers)) {
    throw new AutosyncApiError('Malformed reply from the autosync server extension', 200);
  }
  const servers: IKernelServer[] = [];
  for (const s of reply.servers as unknown[]) {
    if (s === null || typeof s !== 'object') {
      continue;
    }
    const server = s as Record<string, unknown>;
    if (typeof server.url !== 'string' || !server.url) {
      continue;
    }
    const documents = Array.isArray(server.documents)
      ? server.documents.filter(isDocumentSummary)
      : [];
    servers.push({
      id: typeof server.id === 'string' ? server.id : server.url,
      url: server.url,
      name: typeof server.name === 'string' && server.name ? server.name : server.url,
      documents,
      documentCount:
        typeof server.document_count === 'number' && server.document_count >= documents.length
          ? server.document_count
          : documents.length,
      updated: typeof server.updated === 'string' ? server.updated : undefined
    });
  }
  return servers;
}

/** Read one document (a JSON snapshot) through the REST API. */
export async function getDocument(id: string): Promise<IDocumentDetail> {
  return call<IDocumentDetail>(`documents/${encodeURIComponent(id)}`, { method: 'GET' });
}
