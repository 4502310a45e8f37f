#!/usr/bin/env node
// The official automerge-repo sync server, set up exactly as the public one
// (automerge-repo-sync-server v0.3.0, protocol.md §8.2), so the Python tests
// and the benchmark can compare our server against the real thing.
//
// Differences from the public server, none of which changes the protocol:
//   * plain node:http instead of Express (Express only served GET / and the
//     upgrade), so the test install stays small;
//   * configuration by command line instead of PORT/DATA_DIR env vars, and
//     port 0 (pick a free port) is allowed so parallel test runs don't clash;
//   * optional TLS (--tls-cert/--tls-key → https server → wss://) because the
//     Python client tests need a wss:// JS server;
//   * a clean shutdown on SIGTERM/SIGINT that flushes pending document saves
//     (the public server has none; its saves are throttled by 100 ms, so a
//     plain kill can lose the last changes, which would make tests flaky).
//
// Usage:
//   node sync-server.mjs --port 0 --host 127.0.0.1 --data-dir DIR \
//        [--tls-cert cert.pem --tls-key key.pem] [--peer-id ID] \
//        [--repo-version V]
// --repo-version (or $AUTOMERGE_REPO_VERSION) picks the automerge-repo
// release, 2.5.6 by default (versions.mjs); the release is logged to stderr.
// Prints exactly one stdout line "listening on ws://HOST:PORT" (wss:// with
// TLS) once connections are accepted. Everything else goes to stderr; run with
// DEBUG=automerge-repo:*,WebsocketServer for the library's own trace.

import fs from "node:fs"
import http from "node:http"
import https from "node:https"
import os from "node:os"
import { parseArgs } from "node:util"

import { WebSocketServer } from "ws"

import { loadRelease } from "./versions.mjs"

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "3030" },
    host: { type: "string", default: "127.0.0.1" },
    "data-dir": { type: "string", default: ".amrg" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    // Only for tests that need two JS servers with distinct ids on one host;
    // the default is the public server's id.
    "peer-id": { type: "string" },
    "repo-version": { type: "string" },
  },
  strict: true,
})

const log = (...parts) => console.error("[sync-server]", ...parts)
// automerge-repo logs some swallowed errors with console.log; stdout is
// reserved for the "listening on" line.
console.log = (...parts) => console.error("[automerge-repo]", ...parts)

const release = await loadRelease(args["repo-version"])
const { Repo, ServerAdapter, NodeFSStorageAdapter } = release

const dataDir = args["data-dir"]
fs.mkdirSync(dataDir, { recursive: true })

if (Boolean(args["tls-cert"]) !== Boolean(args["tls-key"])) {
  log("--tls-cert and --tls-key must be given together")
  process.exit(2)
}
const tls = Boolean(args["tls-cert"])

// GET / is the public server's health check; any other plain HTTP request is 404.
const onRequest = (req, res) => {
  if (req.method === "GET" && req.url === "/") {
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8" })
    res.end("👍 @automerge/automerge-repo-sync-server is running")
  } else {
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" })
    res.end("not found")
  }
}
const server = tls
  ? https.createServer(
      { cert: fs.readFileSync(args["tls-cert"]), key: fs.readFileSync(args["tls-key"]) },
      onRequest,
    )
  : http.createServer(onRequest)

// noServer + manual upgrade on *any* path, as the public server does. The ws
// default maxPayload (100 MiB) is kept on purpose (protocol.md §1.4).
const wss = new WebSocketServer({ noServer: true })
server.on("upgrade", (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, ws => {
    wss.emit("connection", ws, request)
  })
})

const repo = new Repo({
  network: [new ServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dataDir),
  peerId: args["peer-id"] ?? `storage-server-${os.hostname()}`,
  // A server does not share generously: it only syncs documents a peer asks
  // for by id (announce = false, access = true).
  sharePolicy: async () => false,
})

server.on("error", err => {
  log("server error:", err.message)
  process.exit(1)
})

server.listen(Number(args.port), args.host, async () => {
  const { address, port } = server.address()
  const host = address.includes(":") ? `[${address}]` : address
  log(`automerge-repo ${release.version} peerId=${repo.peerId ?? repo.networkSubsystem.peerId} dataDir=${dataDir}`)
  // The WebSocket adapter only starts handling sockets once the repo has read
  // its storage id (NetworkSubsystem calls adapter.connect() when peerMetadata
  // resolves). A client that joins before that is never answered and is cut
  // by the keep-alive 5 s later, so announce "listening" only after it.
  await repo.networkSubsystem.peerMetadata
  await new Promise(resolve => setImmediate(resolve))
  // The one line harnesses wait for; written in one call so it is never split.
  process.stdout.write(`listening on ${tls ? "wss" : "ws"}://${host}:${port}\n`)
})

let stopping = false
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  log(`${signal}: shutting down`)
  // Hard deadline so a wedged flush can never hang a test run.
  setTimeout(() => {
    log("shutdown timed out")
    process.exit(1)
  }, 5000).unref()
  try {
    // Drop client sockets first (no new work arrives), then flush. Quirk:
    // repo.flush() with no arguments throws "DocHandle is not ready" when the
    // repo holds a handle that is unavailable (any unknown id a client asked
    // for), so flush only the ready handles.
    for (const client of wss.clients) client.terminate()
    wss.close()
    const ready = Object.values(repo.handles)
      .filter(h => h.isReady())
      .map(h => h.documentId)
    await repo.flush(ready)
    server.closeAllConnections?.()
    await new Promise(resolve => server.close(() => resolve()))
  } catch (err) {
    log("error during shutdown:", err?.stack ?? err)
    process.exit(1)
  }
  process.exit(0)
}
process.on("SIGTERM", () => void shutdown("SIGTERM"))
process.on("SIGINT", () => void shutdown("SIGINT"))
