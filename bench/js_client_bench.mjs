#!/usr/bin/env node
// The official JS client's side of bench/client_bench.py: the same measurements
// the Python client makes, against the same server.
//
//   node bench/js_client_bench.mjs --url ws://127.0.0.1:PORT --mode fetch --doc ID --runs 30
//   node bench/js_client_bench.mjs --url ws://127.0.0.1:PORT --mode roundtrip --doc ID --runs 50
//
// fetch: per run, a fresh Repo (no storage, as a throwaway client) with its
//   own BrowserWebSocketClientAdapter: time from constructing it until
//   repo.find(id) resolved with the document (the handle is ready), then the
//   socket is closed. Module loading is excluded (the process is warm), as it
//   is for Python.
// roundtrip: two Repos (two sockets) with the document open; per run, A sets
//   ping = i, B answers pong = i as soon as it sees it, and the time until A
//   sees pong = i is recorded: one change through the server each way; then
//   A pauses --pause-ms before the next.
//
// Prints one JSON object {"mode", "runs", "times_ms": [...]} on stdout.

import { parseArgs } from "node:util"

import { BrowserWebSocketClientAdapter, Repo } from "./js_packages.mjs"

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    mode: { type: "string", default: "fetch" },
    doc: { type: "string" },
    runs: { type: "string", default: "20" },
    // roundtrip: pause between two round trips (a person typing, not a flood)
    "pause-ms": { type: "string", default: "0" },
    "timeout-s": { type: "string", default: "60" },
  },
  strict: true,
})
if (!args.url || !args.doc) {
  console.error("usage: js_client_bench.mjs --url ws://HOST:PORT --doc ID [--mode fetch|roundtrip] [--runs N]")
  process.exit(2)
}
const runs = Number(args.runs)
setTimeout(() => {
  console.error("js_client_bench: timed out")
  process.exit(1)
}, Number(args["timeout-s"]) * 1000).unref()

// automerge-repo logs some errors with console.log; stdout is for the result.
console.log = (...parts) => console.error("[automerge-repo]", ...parts)

function newRepo() {
  const adapter = new BrowserWebSocketClientAdapter(args.url)
  // The browser default: a client whose share policy says no never even asks
  // the server for a document it does not have.
  const repo = new Repo({ network: [adapter], sharePolicy: async () => true })
  return { repo, adapter }
}

async function fetchOnce() {
  const start = performance.now()
  const { repo, adapter } = newRepo()
  const handle = await repo.find(args.doc)
  handle.doc()
  const elapsed = performance.now() - start
  // Closes the socket (repo.shutdown() would disconnect the adapter a second
  // time, which throws in 2.5.6); the process exits at the end anyway.
  adapter.disconnect()
  return elapsed
}

function waitFor(handle, check) {
  return new Promise(resolve => {
    if (check(handle.doc())) return resolve()
    const onChange = ({ doc }) => {
      if (check(doc)) {
        handle.off("change", onChange)
        resolve()
      }
    }
    handle.on("change", onChange)
  })
}

async function roundtrip() {
  const a = newRepo()
  const b = newRepo()
  const ha = await a.repo.find(args.doc)
  const hb = await b.repo.find(args.doc)
  hb.on("change", ({ doc }) => {
    if (doc.ping !== undefined && doc.ping !== doc.pong) {
      hb.change(d => {
        d.pong = doc.ping
      })
    }
  })
  const times = []
  const base = Date.now()
  for (let i = 0; i < runs; i++) {
    const value = base + i
    const start = performance.now()
    const answered = waitFor(ha, doc => doc.pong === value)
    ha.change(d => {
      d.ping = value
    })
    await answered
    times.push(performance.now() - start)
    await new Promise(resolve => setTimeout(resolve, Number(args["pause-ms"])))
  }
  for (const { adapter } of [a, b]) adapter.disconnect()
  return times
}

let times
if (args.mode === "fetch") {
  times = []
  for (let i = 0; i < runs; i++) times.push(await fetchOnce())
} else if (args.mode === "roundtrip") {
  times = await roundtrip()
} else {
  console.error(`unknown mode ${args.mode}`)
  process.exit(2)
}
process.stdout.write(JSON.stringify({ mode: args.mode, runs, times_ms: times }) + "\n")
process.exit(0)
