#!/usr/bin/env node
// A scriptable official automerge-repo client peer for the Python interop
// tests (driven by tests/interop/jspeer.py).
//
// It is the stock client a browser or Node app would use:
//   new Repo({ network: [new WebSocketClientAdapter(url)],
//              storage: NodeFSStorageAdapter(dir) (only with --storage),
//              peerId (only with --peer-id), sharePolicy: async () => share })
// so what the Python server sees is exactly what real JS clients send.
// --repo-version (or $AUTOMERGE_REPO_VERSION) picks the release: 2.5.6 by
// default, or an older or newer one installed under an npm alias (see
// versions.mjs); "ready" reports the versions actually loaded.
//
// Wire protocol over stdio, one JSON object per line:
//   stdin   {"id": n, "cmd": "...", ...args}
//   stdout  {"id": n, "ok": true, ...result} | {"id": n, "ok": false, "error": "..."}
//   stdout  {"event": "...", ...}  unsolicited: ready, peer, peer-disconnected,
//           change, ephemeral, wire (with --trace), error (an exception the
//           library threw from a callback), library-log (a failure the
//           library swallowed and only console.log'ed)
// Commands: info create find doc heads change history wait_for broadcast events
// presence_start presence_broadcast presence_states presence_stop
// import export disconnect reconnect peers sync_info flush sleep close.
// Requests run concurrently (a long wait_for does not block other commands);
// match replies by id. stderr carries human-readable logs only.
//
// Values crossing JSON: Uint8Array <-> {"$bytes": base64}, Date <-> {"$date": ms};
// Counter -> its number (create one with the "counter" op); text -> string.

import readline from "node:readline"
import { parseArgs } from "node:util"

import { loadRelease } from "./versions.mjs"

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    storage: { type: "string" },
    "peer-id": { type: "string" },
    // announce policy: "true" (browser default: share every document with
    // every peer) or "false" (only documents a peer asked for).
    share: { type: "string", default: "true" },
    // The adapter's reconnect interval; 5000 ms is the library default.
    "retry-interval": { type: "string", default: "5000" },
    // Emit a "wire" event for every protocol message sent or received.
    trace: { type: "boolean", default: false },
    // automerge-repo release (versions.mjs); default $AUTOMERGE_REPO_VERSION or 2.5.6.
    "repo-version": { type: "string" },
  },
  strict: true,
})
if (!args.url) {
  console.error(
    "usage: peer.mjs --url ws://host:port [--storage DIR] [--peer-id ID] [--share true|false] [--trace] [--repo-version V]",
  )
  process.exit(2)
}

const release = await loadRelease(args["repo-version"])
const { Repo, ClientAdapter, NodeFSStorageAdapter, docOf, headsOf, isImmutableString } = release
const { Counter, cbor, isValidAutomergeUrl, mark, parseAutomergeUrl, splice, unmark } = release.repo

const log = (...parts) => console.error(`[peer ${args["peer-id"] ?? ""}]`, ...parts)

function emit(obj) {
  // One write per line so lines from concurrent requests never interleave.
  process.stdout.write(JSON.stringify(obj) + "\n")
}

// automerge-repo reports some failures only with console.log ("error receiving
// message", "sync with peers threw an exception"); keep stdout for JSON lines
// and surface them as events so a test can notice them.
console.log = (first, ...rest) => {
  console.error("[automerge-repo]", first, ...rest)
  const err = rest.find(x => x?.err)?.err ?? rest.find(x => x instanceof Error)
  emit({ event: "library-log", message: String(first), error: err ? String(err.message ?? err) : null })
}

// The library throws from event handlers and timers in a few places (e.g. the
// 2.5.6 client throws "Websocket not ready" when a sync message is sent while a
// reconnect is in progress). Report those instead of dying, so a test sees them.
process.on("uncaughtException", err => {
  log("uncaught exception:", err?.stack ?? err)
  emit({ event: "error", error: String(err?.message ?? err) })
})
process.on("unhandledRejection", err => {
  log("unhandled rejection:", err?.stack ?? err)
  emit({ event: "error", error: String(err?.message ?? err) })
})

// ---------------------------------------------------------------------------
// Repo setup

const adapter = new ClientAdapter(args.url, Number(args["retry-interval"]))
const share = args.share === "true"
const repo = new Repo({
  network: [adapter],
  storage: args.storage ? new NodeFSStorageAdapter(args.storage) : undefined,
  peerId: args["peer-id"] || undefined,
  sharePolicy: async () => share,
})

// Our own peer id (1.x keeps it on the network subsystem only).
const peerId = repo.peerId ?? repo.networkSubsystem.peerId

repo.networkSubsystem.on("peer", ({ peerId, peerMetadata }) => {
  emit({ event: "peer", peerId, peerMetadata: plain(peerMetadata ?? null) })
})
repo.networkSubsystem.on("peer-disconnected", ({ peerId }) => {
  emit({ event: "peer-disconnected", peerId })
})

if (args.trace) {
  // Received messages: the adapter emits every decoded non-handshake message;
  // peer/error are consumed inside the adapter, so hook the decoder instead.
  const origReceive = adapter.receiveMessage.bind(adapter)
  adapter.receiveMessage = bytes => {
    traceBytes("in", bytes)
    return origReceive(bytes)
  }
  const origSend = adapter.send.bind(adapter)
  adapter.send = message => {
    emit({ event: "wire", dir: "out", msg: summarize(message) })
    return origSend(message)
  }
}

function traceBytes(dir, bytes) {
  try {
    emit({ event: "wire", dir, msg: summarize(cbor.decode(new Uint8Array(bytes))) })
  } catch (err) {
    emit({ event: "wire", dir, error: String(err) })
  }
}

// A JSON view of a wire message: binary fields shortened to their length and
// first bytes, and CBOR undefined (which JS sends, e.g. storageId of an
// ephemeral peer) kept distinct from null as {"$undefined": true}.
function summarize(value) {
  if (value === undefined) return { $undefined: true }
  if (value instanceof Uint8Array) return { $len: value.byteLength, $hex: hexPrefix(value) }
  if (Array.isArray(value)) return value.map(summarize)
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, summarize(v)]))
  }
  return value
}

function hexPrefix(bytes) {
  return Buffer.from(bytes.subarray(0, 48)).toString("hex")
}

// ---------------------------------------------------------------------------
// Handles we know about, with listeners attached exactly once.

const handles = new Map() // documentId -> DocHandle
const ephemeralInbox = [] // drained by the "events" command
const presences = new Map() // documentId -> Presence (presence_* commands)

function track(handle) {
  if (handles.has(handle.documentId)) return handle
  handles.set(handle.documentId, handle)
  handle.on("change", () => {
    emit({ event: "change", documentId: handle.documentId, heads: handle.isReady() ? headsOf(handle)[0] : [] })
  })
  handle.on("ephemeral-message", ({ senderId, message }) => {
    const record = { documentId: handle.documentId, senderId, message: plain(message), at: Date.now() }
    ephemeralInbox.push(record)
    emit({ event: "ephemeral", ...record })
  })
  return handle
}

function docIdOf(idOrUrl) {
  if (typeof idOrUrl !== "string" || !idOrUrl) throw new Error("missing documentId/url")
  return isValidAutomergeUrl(idOrUrl) ? parseAutomergeUrl(idOrUrl).documentId : idOrUrl
}

function knownHandle(req) {
  const documentId = docIdOf(req.documentId ?? req.url)
  const handle = handles.get(documentId) ?? repo.handles[documentId]
  if (!handle) throw new Error(`unknown document ${documentId}: create, find or import it first`)
  return track(handle)
}

function snapshot(handle) {
  const ready = handle.isReady()
  const [heads, headsHex] = ready ? headsOf(handle) : [null, null]
  return {
    documentId: handle.documentId,
    url: handle.url,
    state: handle.state,
    doc: ready ? plain(docOf(handle)) : null,
    heads,
    // Hex change hashes, as the Automerge core (and Python bindings) print them.
    headsHex,
  }
}

// ---------------------------------------------------------------------------
// JSON <-> Automerge values

function plain(value) {
  if (value === null || value === undefined) return null
  if (value instanceof Counter) return value.value
  if (isImmutableString(value)) return value.toString()
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("base64") }
  if (value instanceof Date) return { $date: value.getTime() }
  if (Array.isArray(value)) return value.map(plain)
  if (typeof value === "object") {
    const out = {}
    for (const [k, v] of Object.entries(value)) out[k] = plain(v)
    return out
  }
  if (typeof value === "bigint") return Number(value)
  return value
}

function fromJson(value) {
  if (Array.isArray(value)) return value.map(fromJson)
  if (value && typeof value === "object") {
    const keys = Object.keys(value)
    if (keys.length === 1 && keys[0] === "$bytes") return new Uint8Array(Buffer.from(value.$bytes, "base64"))
    if (keys.length === 1 && keys[0] === "$date") return new Date(value.$date)
    const out = {}
    for (const [k, v] of Object.entries(value)) out[k] = fromJson(v)
    return out
  }
  return value
}

function getAt(root, path) {
  let node = root
  for (const key of path) {
    if (node === undefined || node === null) throw new Error(`path ${JSON.stringify(path)} does not exist`)
    node = node[key]
  }
  return node
}

function parentAndKey(root, path) {
  if (!Array.isArray(path) || path.length === 0) throw new Error("path must be a non-empty list")
  const parent = getAt(root, path.slice(0, -1))
  if (parent === undefined || parent === null || typeof parent !== "object") {
    throw new Error(`parent of ${JSON.stringify(path)} is not an object or list`)
  }
  return [parent, path[path.length - 1]]
}

function applyOp(d, op) {
  switch (op.op) {
    case "set": {
      const [parent, key] = parentAndKey(d, op.path)
      parent[key] = fromJson(op.value)
      return
    }
    case "delete": {
      const [parent, key] = parentAndKey(d, op.path)
      if (Array.isArray(parent)) parent.splice(key, 1)
      else delete parent[key]
      return
    }
    case "splice":
      // Collaborative text edit (strings are Text objects in automerge 3).
      splice(d, op.path, op.index ?? 0, op.delete ?? 0, op.insert ?? "")
      return
    case "counter": {
      const [parent, key] = parentAndKey(d, op.path)
      parent[key] = new Counter(op.value ?? 0)
      return
    }
    case "increment": {
      const counter = getAt(d, op.path)
      if (!(counter instanceof Counter)) throw new Error(`${JSON.stringify(op.path)} is not a counter`)
      counter.increment(op.by ?? 1)
      return
    }
    case "mark":
      // A rich-text mark over [start, end) of the text at op.path.
      mark(d, op.path, { start: op.start, end: op.end, expand: op.expand ?? "after" }, op.name, fromJson(op.value))
      return
    case "unmark":
      unmark(d, op.path, { start: op.start, end: op.end, expand: op.expand ?? "after" }, op.name)
      return
    case "push": {
      const list = getAt(d, op.path)
      if (!Array.isArray(list)) throw new Error(`${JSON.stringify(op.path)} is not a list`)
      list.push(...(op.values ?? [op.value]).map(fromJson))
      return
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(op.op)}`)
  }
}

// ---------------------------------------------------------------------------
// Commands

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

function withTimeout(promise, ms) {
  let timer
  const timeout = new Promise(resolve => {
    timer = setTimeout(() => resolve(TIMEOUT), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
const TIMEOUT = Symbol("timeout")

async function waitUntil(check, timeoutMs, handle) {
  // Re-check on every document event and on a 20 ms poll (state transitions
  // such as unavailable -> ready emit no event of their own).
  const start = performance.now()
  for (;;) {
    const result = check()
    if (result) return result
    const left = timeoutMs - (performance.now() - start)
    if (left <= 0) return null
    await new Promise(resolve => {
      const done = () => {
        clearTimeout(timer)
        handle?.off("heads-changed", done)
        resolve()
      }
      const timer = setTimeout(done, Math.min(20, left))
      handle?.on("heads-changed", done)
    })
  }
}

// The storage id the (single) server advertised in its peer message.
function serverStorageId() {
  return Object.values(repo.peerMetadataByPeerId).find(m => m?.storageId)?.storageId
}

function sameSet(a, b) {
  if (!a || !b || a.length !== b.length) return false
  const s = new Set(a)
  return b.every(x => s.has(x))
}

function deepEqual(a, b) {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b))
}
function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical)
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.keys(v).sort().map(k => [k, canonical(v[k])]))
  }
  return v
}

const commands = {
  async info() {
    return {
      repoVersion: release.version,
      installed: release.installed,
      peerId,
      storageId: (await repo.storageId()) ?? null,
      peers: repo.peers,
      url: args.url,
    }
  },

  async create(req) {
    const handle = track(repo.create(fromJson(req.value ?? {})))
    return snapshot(handle)
  },

  async find(req) {
    // Reports "ready", "unavailable" or "timeout" (never throws for those),
    // and how long it took. repo.find() rejects with "Document X is
    // unavailable" once every peer answered doc-unavailable; the handle stays
    // in the repo, so a later arrival turns it ready (see wait_for state).
    const documentId = docIdOf(req.documentId ?? req.url)
    const timeoutMs = req.timeout_ms ?? 10_000
    const start = performance.now()
    const outcome = await withTimeout(
      release.find(repo, documentId).then(
        handle => ({ state: "ready", handle }),
        error => ({ state: /unavailable/.test(String(error?.message)) ? "unavailable" : "failed", error }),
      ),
      timeoutMs,
    )
    const elapsed_ms = performance.now() - start
    const handle = repo.handles[documentId]
    if (handle) track(handle)
    if (outcome === TIMEOUT) {
      return { state: "timeout", elapsed_ms, handleState: handle?.state ?? null, doc: null, heads: null, documentId }
    }
    if (outcome.state === "failed") throw outcome.error
    return { ...snapshot(handle ?? outcome.handle), state: outcome.state, handleState: handle?.state, elapsed_ms }
  },

  async doc(req) {
    return snapshot(knownHandle(req))
  },

  async heads(req) {
    const handle = knownHandle(req)
    if (!handle.isReady()) throw new Error(`document ${handle.documentId} is ${handle.state}`)
    const [heads, headsHex] = headsOf(handle)
    return { heads, headsHex }
  },

  async change(req) {
    const handle = knownHandle(req)
    if (!Array.isArray(req.ops)) throw new Error("ops must be a list")
    const options = req.message ? { message: req.message } : {}
    handle.change(d => {
      for (const op of req.ops) applyOp(d, op)
    }, options)
    const [heads, headsHex] = headsOf(handle)
    return { heads, headsHex }
  },

  async history(req) {
    // Every change of the document as automerge decodes it (inspectChange:
    // hash, actor, seq, time in seconds, message, deps), in the handle's
    // topological order (handle.history(), automerge-repo 2.x).
    const handle = knownHandle(req)
    if (!handle.isReady()) throw new Error(`document ${handle.documentId} is ${handle.state}`)
    if (typeof handle.history !== "function") {
      throw new Error(`automerge-repo ${release.version} has no handle.history()`)
    }
    const changes = handle.history().map(heads => {
      const change = handle.metadata(heads[0])
      return {
        hash: change.hash,
        actor: change.actor,
        seq: change.seq,
        time: change.time,
        message: change.message ?? null,
        deps: change.deps,
        startOp: change.startOp,
        ops: change.ops?.length ?? null,
      }
    })
    return { changes }
  },

  async wait_for(req) {
    // One of: {path, equals}, {heads}, {state}, {doc}, {synced: true}. Fails
    // on timeout with the last seen value, so the Python side can print a
    // useful diff. "synced" = the server (known by its storage id) has
    // acknowledged exactly our heads: its sync messages advertised them.
    const handle = knownHandle(req)
    const timeoutMs = req.timeout_ms ?? 10_000
    const check = () => {
      if (req.state !== undefined) return handle.state === req.state
      if (!handle.isReady()) return false
      if (req.heads !== undefined) return sameSet(headsOf(handle)[0], req.heads)
      if (req.synced) {
        const storageId = req.storageId ?? serverStorageId()
        if (!storageId) throw new Error("the server advertised no storageId; cannot tell what it has")
        return sameSet(release.remoteHeadsOf(handle, storageId), headsOf(handle)[0])
      }
      const doc = plain(docOf(handle))
      if (req.doc !== undefined) return deepEqual(doc, req.doc)
      if (req.path !== undefined) {
        let value
        try {
          value = getAt(doc, req.path)
        } catch {
          return false
        }
        return deepEqual(value ?? null, req.equals ?? null)
      }
      throw new Error("wait_for needs one of path+equals, heads, state, doc, synced")
    }
    const start = performance.now()
    const ok = await waitUntil(check, timeoutMs, handle)
    const elapsed_ms = performance.now() - start
    if (!ok) {
      const last = snapshot(handle)
      throw new Error(
        `wait_for timed out after ${timeoutMs} ms; state=${last.state} heads=${JSON.stringify(last.heads)} doc=${JSON.stringify(last.doc)}`,
      )
    }
    return { ...snapshot(handle), elapsed_ms }
  },

  async broadcast(req) {
    const handle = knownHandle(req)
    handle.broadcast(fromJson(req.message))
    return {}
  },

  // automerge-repo's own Presence (2.x): start announcing a state, change
  // one key, read what the other peers announced, stop (goodbye).
  async presence_start(req) {
    const handle = knownHandle(req)
    if (!release.repo.Presence) throw new Error(`automerge-repo ${release.version} has no Presence`)
    let presence = presences.get(handle.documentId)
    if (!presence) {
      presence = new release.repo.Presence({ handle })
      presences.set(handle.documentId, presence)
    }
    presence.start({
      initialState: fromJson(req.state ?? {}),
      heartbeatMs: req.heartbeat_ms,
      peerTtlMs: req.ttl_ms,
    })
    return {}
  },

  async presence_broadcast(req) {
    const presence = presences.get(knownHandle(req).documentId)
    if (!presence) throw new Error("presence_start first")
    presence.broadcast(req.channel, fromJson(req.value))
    return {}
  },

  async presence_states(req) {
    const presence = presences.get(knownHandle(req).documentId)
    if (!presence) throw new Error("presence_start first")
    return { peers: plain(presence.getPeerStates().value) }
  },

  async presence_stop(req) {
    const presence = presences.get(knownHandle(req).documentId)
    presence?.stop()
    return {}
  },

  async events(req) {
    // Drain (or with keep: true, peek at) received ephemeral messages.
    const items = req.keep ? [...ephemeralInbox] : ephemeralInbox.splice(0)
    return { events: items }
  },

  async import(req) {
    // repo.import(binary, {docId}) in 2.5.6: loadIncremental into the handle
    // for that id (creating it), registers it with the synchronizer, becomes
    // ready as soon as the binary brings changes; with a share policy of true
    // it is then announced to the server with "sync" messages.
    const binary = new Uint8Array(Buffer.from(req.binary, "base64"))
    const handle = track(req.documentId ? repo.import(binary, { docId: docIdOf(req.documentId) }) : repo.import(binary))
    return snapshot(handle)
  },

  async export(req) {
    const handle = knownHandle(req)
    const binary = await repo.export(handle.documentId)
    return { binary: Buffer.from(binary).toString("base64") }
  },

  async disconnect() {
    // Closes the socket and stops the retry timer; the repo sees the server
    // peer disconnect.
    adapter.disconnect()
    return {}
  },

  async reconnect(req) {
    // Quirk: repo.networkSubsystem.reconnect() calls adapter.connect(peerId)
    // without metadata, so the next join would carry peerMetadata {} (no
    // storageId, no isEphemeral). Pass the repo's real metadata instead, as
    // the initial connect does.
    const metadata = await repo.networkSubsystem.peerMetadata
    const connected = new Promise(resolve => repo.networkSubsystem.once("peer", resolve))
    adapter.connect(peerId, metadata)
    if (req.wait ?? true) {
      const result = await withTimeout(connected, req.timeout_ms ?? 10_000)
      if (result === TIMEOUT) throw new Error("reconnect: no peer message from the server")
    }
    return { peers: repo.peers }
  },

  async peers() {
    return {
      peerId,
      peers: repo.peers,
      metadata: plain(repo.peerMetadataByPeerId),
    }
  },

  async sync_info(req) {
    // What this client believes the server (by storage id) has for a doc.
    const handle = knownHandle(req)
    const storageId = req.storageId ?? serverStorageId()
    const info = storageId && !release.legacy ? handle.getSyncInfo(storageId) : undefined
    const lastHeads = storageId ? release.remoteHeadsOf(handle, storageId) : undefined
    return { storageId: storageId ?? null, lastHeads: lastHeads ?? null, lastSyncTimestamp: info?.lastSyncTimestamp ?? null }
  },

  async flush() {
    await repo.flush(
      Object.values(repo.handles)
        .filter(h => h.isReady())
        .map(h => h.documentId),
    )
    return {}
  },

  async sleep(req) {
    await sleep(req.ms ?? 0)
    return {}
  },

  async close() {
    // Flush only ready handles: repo.shutdown()/flush() throw "DocHandle is
    // not ready" if any handle is unavailable (e.g. after a failed find).
    adapter.disconnect()
    await commands.flush()
    setTimeout(() => process.exit(0), 10)
    return {}
  },
}

async function handleLine(line) {
  if (!line.trim()) return
  let req
  try {
    req = JSON.parse(line)
  } catch (err) {
    emit({ event: "error", error: `bad request line: ${err.message}` })
    return
  }
  const { id, cmd } = req
  const fn = Object.hasOwn(commands, cmd) ? commands[cmd] : undefined
  if (!fn) {
    emit({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` })
    return
  }
  try {
    const result = await fn(req)
    emit({ id, ok: true, ...result })
  } catch (err) {
    log(`${cmd} failed:`, err?.stack ?? err)
    emit({ id, ok: false, error: String(err?.message ?? err) })
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on("line", line => void handleLine(line))
// stdin closed = the driver went away: do not linger as an orphan.
rl.on("close", () => {
  setTimeout(() => process.exit(0), 50)
})

emit({
  event: "ready",
  repoVersion: release.version,
  installed: release.installed,
  peerId,
  storageId: (await repo.storageId()) ?? null,
  url: args.url,
})
