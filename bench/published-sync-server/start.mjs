#!/usr/bin/env node
// Runs the published sync server, @automerge/automerge-repo-sync-server
// 0.2.8 (automerge-repo 1.2.1; what sync.automerge.org runs), unchanged, for
// bench/server_bench.py. Install: npm ci --prefix bench/published-sync-server
//
// Only three things are added around it, none touching how it syncs:
//   * its HTTP server binds to 127.0.0.1 (the package listens on every
//     interface; benchmark traffic stays on loopback);
//   * one stdout line "listening on ws://127.0.0.1:PORT" once it accepts
//     connections, the line tests/interop/servers.py waits for;
//   * exit status 0 on SIGTERM (the package installs no handler).
// It reads PORT and DATA_DIR from the environment, as the package does.

import http from "node:http"

const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port, ...rest) {
  const callback = rest.find(arg => typeof arg === "function")
  return listen.call(this, port, "127.0.0.1", callback)
}
// Its own "Listening on port N" goes to stderr: stdout is for the line above.
console.log = (...parts) => console.error("[sync-server-0.2.8]", ...parts)

const { Server } = await import("@automerge/automerge-repo-sync-server/src/server.js")
const server = new Server()
await server.ready()
// The repo hands sockets to its adapter once it has read its storage id;
// give it that moment so no client joins unanswered.
await new Promise(resolve => setTimeout(resolve, 300))
process.stdout.write(`listening on ws://127.0.0.1:${process.env.PORT}\n`)

const stop = () => process.exit(0)
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
