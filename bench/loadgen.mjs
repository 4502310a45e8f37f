#!/usr/bin/env node
// Load generator for automerge-repo sync servers, using the official JS client
// (Repo + BrowserWebSocketClientAdapter from tests/interop/js/node_modules).
//
//   node bench/loadgen.mjs --url ws://127.0.0.1:PORT --clients 10 --docs 20 --changes 50
//   node bench/loadgen.mjs --url ... --clients 100 --docs 10 --changes 2 --writers 10 --workers 2
//
// Shape: C clients (one Repo and one WebSocket each), D documents created by
// client 0 and found by the others, and every client makes N changes to every
// document (C*D*N changes in total). Each change appends a send timestamp to
// the client's own list in the document (doc["c<i>"].push(t)), so the lists
// never conflict and every other client can tell exactly which changes it has
// newly seen: on each handle "change" event it reads the new list tails and
// records now - t as the change-propagation latency.
//
// The clients live in --workers K worker threads of this process (client i in
// thread i % K), so that the JS client library can use more than one core: with
// one thread, a large load measures that thread's backlog rather than the
// server. Timestamps are milliseconds since the main thread started, one clock
// for every thread. The main thread only coordinates the phases and adds up
// the results.
//
// A run is done when every change reached every client of its document and
// the server acknowledged every client's final heads (handle.getSyncInfo of
// the server's storage id equals the client's heads). Prints one JSON object
// on stdout; progress goes to stderr. Bounded by --timeout-s; only talks to
// the given URL (loopback in the benchmark).

import { monitorEventLoopDelay } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads"

const options = {
  url: { type: "string" },
  clients: { type: "string", default: "10" },
  docs: { type: "string", default: "20" },
  changes: { type: "string", default: "50" },
  // Only clients 0..W-1 write (all C clients still find every document and
  // measure latency). Default: every client writes. With many clients all
  // writing one document, every sync message carries ~C concurrent heads
  // (32 bytes each, re-encoded by the JS client on every message), which
  // makes a 100-writer run on 2 cores measure the client library, not the
  // server.
  writers: { type: "string" },
  // Pause between a client's rounds (one change to each of its docs).
  // 0 = as fast as the event loop allows (saturation). With a pause, each
  // client also starts at a random offset within one interval, so the
  // clients' rounds are spread out instead of arriving as one burst.
  "interval-ms": { type: "string", default: "0" },
  // Closed loop: a writer makes its next change only once its previous one
  // has reached every other client (then waits --interval-ms, if any). The
  // latency then measures the relay's pacing rather than a backlog. Needs
  // every client in one thread (--workers 1).
  "closed-loop": { type: "boolean", default: false },
  // Threads that host the clients.
  workers: { type: "string", default: "1" },
  "timeout-s": { type: "string", default: "90" },
}
const args = isMainThread ? parseArgs({ options, strict: true }).values : workerData.args
const C = Number(args.clients)
const D = Number(args.docs)
const N = Number(args.changes)
const W = Math.min(C, args.writers === undefined ? C : Number(args.writers))
const K = Math.max(1, Math.min(C, Number(args.workers)))
const intervalMs = Number(args["interval-ms"])
const closedLoop = args["closed-loop"]
const totalChanges = W * D * N

// One clock for every thread: milliseconds since the main thread started
// (small numbers, as the documents store each change's timestamp).
const origin = isMainThread ? performance.timeOrigin : workerData.origin
const now = () => performance.timeOrigin - origin + performance.now()
const deadline = isMainThread ? now() + Number(args["timeout-s"]) * 1000 : workerData.deadline
const timeLeft = () => deadline - now()
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const tick = () => new Promise(resolve => setImmediate(resolve))
const log = (...parts) => console.error(isMainThread ? "[loadgen]" : `[loadgen ${workerData.k}]`, ...parts)

async function until(predicate, what) {
  while (!predicate()) {
    if (timeLeft() <= 0) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

function sameSet(a, b) {
  if (!a || !b || a.length !== b.length) return false
  const s = new Set(a)
  return b.every(x => s.has(x))
}

const round3 = x => Math.round(x * 1000) / 1000

if (isMainThread) await coordinate()
else
  await hostClients().catch(err => {
    // The main thread sees the exit status and fails the run at once.
    log("failed:", err?.message ?? err)
    process.exit(1)
  })

// ---------------------------------------------------------------------------
// The main thread: start the workers, walk them through the phases, report.

async function coordinate() {
  if (!args.url) {
    console.error("usage: loadgen.mjs --url ws://HOST:PORT [--clients C] [--docs D] [--changes N] [--workers K]")
    process.exit(2)
  }
  if (closedLoop && K > 1) {
    console.error("loadgen.mjs: --closed-loop needs every client in one thread (--workers 1)")
    process.exit(2)
  }
  const runId = Math.random().toString(36).slice(2, 8)
  const workers = []
  const inboxes = []
  let failure = null
  let failed
  const failedPromise = new Promise((_, reject) => (failed = reject))
  failedPromise.catch(() => {})
  for (let k = 0; k < K; k++) {
    const worker = new Worker(new URL(import.meta.url), { workerData: { args, k, deadline, runId, origin } })
    const inbox = { messages: [], waiting: [] }
    worker.on("message", message => {
      const waiter = inbox.waiting.findIndex(w => w.type === message.type)
      if (waiter >= 0) inbox.waiting.splice(waiter, 1)[0].resolve(message)
      else inbox.messages.push(message)
    })
    const fail = why => {
      failure ??= `worker ${k}: ${why}`
      failed(new Error(failure))
    }
    worker.on("error", err => fail(err?.stack ?? err))
    worker.on("exit", code => {
      if (code !== 0) fail(`exited with status ${code}`)
    })
    workers.push(worker)
    inboxes.push(inbox)
  }
  const receive = (k, type) => {
    const inbox = inboxes[k]
    const index = inbox.messages.findIndex(m => m.type === type)
    const got =
      index >= 0
        ? Promise.resolve(inbox.messages.splice(index, 1)[0])
        : new Promise(resolve => inbox.waiting.push({ type, resolve }))
    // Workers bound their own waits by the deadline; the margin covers their reports.
    const expiry = sleep(Math.max(0, timeLeft()) + 30_000).then(() => {
      throw new Error(`worker ${k} sent no "${type}" in time`)
    })
    return Promise.race([got, failedPromise, expiry])
  }
  const fromAll = type => Promise.all(workers.map((_, k) => receive(k, type)))
  const toAll = message => workers.forEach(w => w.postMessage(message))

  try {
    // 1. Connect C clients.
    const connected = await fromAll("connected")
    const serverStorageId = connected[0].storageId
    const connectS = Math.max(...connected.map(m => m.connectS))
    log(`${C} clients connected in ${connectS.toFixed(2)} s (${K} thread${K > 1 ? "s" : ""})`)

    // 2. Client 0 creates the documents and waits until the server has them;
    //    the other clients find them.
    const tSetup = now()
    workers[0].postMessage({ type: "create" })
    const { docIds } = await receive(0, "created")
    toAll({ type: "find", docIds })
    await fromAll("found")
    const setupS = (now() - tSetup) / 1000
    log(`${D} documents created and found by ${C - 1} other clients in ${setupS.toFixed(2)} s`)

    // 3. The load.
    log(`load: ${W} writers (of ${C} clients) x ${D} docs x ${N} changes = ${totalChanges} changes`)
    const cpuBefore = process.cpuUsage() // the whole process: every thread
    const tStart = now()
    toAll({ type: "start" })
    const done = await fromAll("done")
    const cpu = process.cpuUsage(cpuBefore)
    const timedOut = done.some(m => m.timedOut)
    const sendS = (Math.max(...done.map(m => m.sentAt)) - tStart) / 1000
    const wallS = ((timedOut ? now() : Math.max(...done.map(m => m.tDone))) - tStart) / 1000
    log(`changes made in ${sendS.toFixed(2)} s; converged after ${wallS.toFixed(2)} s`)

    toAll({ type: "report" })
    const reports = await fromAll("report")

    // 4. Verify convergence (equal heads on every client for every doc) and report.
    let converged = !timedOut
    for (let d = 0; d < D; d++) {
      const heads = reports[0].heads[d][0]
      for (const report of reports) {
        if (!report.heads[d].every(h => sameSet(h, heads))) converged = false
      }
    }
    const sum = key => reports.reduce((a, r) => a + r[key], 0)
    const errors = reports.flatMap(r => r.errors)
    const made = sum("made")
    const traffic = ["messagesIn", "messagesOut", "bytesIn", "bytesOut"].map(key =>
      reports.reduce((a, r) => a + r.traffic[key], 0),
    )
    const result = {
      url: args.url,
      clients: C,
      writers: W,
      docs: D,
      changes_per_doc_per_client: N,
      interval_ms: intervalMs,
      closed_loop: closedLoop,
      workers: K,
      total_changes: totalChanges,
      changes_made: made,
      connect_s: round3(connectS),
      setup_s: round3(setupS),
      send_s: round3(sendS),
      wall_s: round3(wallS),
      throughput_changes_per_s: wallS > 0 ? Math.round(made / wallS) : null,
      // Time from a change to its arrival at another client (C > 1 only).
      latency_ms: summary(reports.flatMap(r => r.propagation)),
      // Time from a change to the server advertising heads that include it.
      ack_latency_ms: summary(reports.flatMap(r => r.ackLatency)),
      // Client-side view of the load phase: messages from/to the server (all
      // types), whole frames in, "data" payload bytes out.
      messages_in: traffic[0],
      messages_out: traffic[1],
      bytes_in: traffic[2],
      bytes_out: traffic[3],
      messages_per_change: made ? Math.round(((traffic[0] + traffic[1]) / made) * 10) / 10 : null,
      missing_deliveries: sum("remainingDeliveries"),
      // This process's own load (every thread): when the generator saturates
      // its cores, latency and throughput are bounded by the client library,
      // not the server.
      loadgen_cpu_s: round3((cpu.user + cpu.system) / 1e6),
      loadgen_max_loop_delay_ms: Math.max(...reports.map(r => r.maxLoopDelayMs)),
      unacked_docs: sum("unacked"),
      // For diagnosis: which (client, document) pairs the server never acknowledged.
      unacked_samples: reports.flatMap(r => r.unackedSamples).slice(0, 5),
      errors: errors.length,
      error_samples: errors.slice(0, 5),
      converged,
    }
    process.stdout.write(JSON.stringify(result) + "\n")
    toAll({ type: "close" })
    await Promise.all(workers.map(w => new Promise(resolve => w.once("exit", resolve))))
    process.exit(converged && errors.length === 0 ? 0 : 1)
  } catch (err) {
    log("failed:", err?.message ?? err)
    await Promise.all(workers.map(w => w.terminate()))
    process.exit(1)
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}

function summary(samples) {
  const sorted = Float64Array.from(samples).sort()
  const sum = samples.reduce((a, b) => a + b, 0)
  const round = x => (x === null ? null : Math.round(x * 100) / 100)
  return {
    count: samples.length,
    p50: round(percentile(sorted, 50)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.length ? sorted[sorted.length - 1] : null),
    mean: round(samples.length ? sum / samples.length : null),
  }
}

// ---------------------------------------------------------------------------
// A worker thread: its share of the clients, driven by the main thread.

async function hostClients() {
  const { BrowserWebSocketClientAdapter, Repo } = await import("./js_packages.mjs")
  const k = workerData.k

  const inbox = []
  let wake = null
  parentPort.on("message", message => {
    inbox.push(message)
    wake?.()
  })
  async function receive(type) {
    for (;;) {
      const index = inbox.findIndex(m => m.type === type)
      if (index >= 0) return inbox.splice(index, 1)[0]
      await new Promise(resolve => (wake = resolve))
    }
  }
  const post = message => parentPort.postMessage(message)

  const errors = []
  const noteError = (where, err) => {
    errors.push(`${where}: ${err?.message ?? err}`)
    if (errors.length <= 5) log("error:", where, err?.message ?? err)
  }
  // automerge-repo reports failures it swallows with console.log ("error
  // receiving message", "sync with peers threw an exception", ...). Count them
  // as errors (they can leave a handle permanently broken) and keep stdout for
  // the result line.
  console.log = (first, ...rest) => {
    const err = rest.find(x => x?.err)?.err ?? rest.find(x => x instanceof Error)
    noteError(`library: ${first}`, err ?? "")
  }
  // The 2.5.6 client throws from event handlers in some states (e.g. "Websocket
  // not ready" while reconnecting); count those instead of crashing the run.
  process.on("uncaughtException", err => noteError("uncaught", err))
  process.on("unhandledRejection", err => noteError("unhandled rejection", err))

  // Wire traffic of these clients during the load phase: a server that sends
  // more (or larger) sync messages per change costs its clients CPU, which
  // shows up here rather than in the server's own CPU time.
  const traffic = { messagesIn: 0, messagesOut: 0, bytesIn: 0, bytesOut: 0 }
  let counting = false
  function countTraffic(adapter) {
    const receiveMessage = adapter.receiveMessage.bind(adapter)
    adapter.receiveMessage = bytes => {
      if (counting) {
        traffic.messagesIn++
        traffic.bytesIn += bytes.byteLength
      }
      return receiveMessage(bytes)
    }
    const send = adapter.send.bind(adapter)
    adapter.send = message => {
      if (counting) {
        traffic.messagesOut++
        traffic.bytesOut += message.data?.byteLength ?? 0
      }
      return send(message)
    }
    return adapter
  }

  // 1. Connect this thread's clients.
  const t0 = now()
  const clients = []
  for (let i = k; i < C; i += K) {
    const repo = new Repo({
      network: [countTraffic(new BrowserWebSocketClientAdapter(args.url))],
      peerId: `loadgen-${workerData.runId}-${i}`,
      sharePolicy: async () => true, // the browser default
    })
    const client = { i, key: `c${i}`, repo, connected: false, handles: [] }
    repo.networkSubsystem.on("peer", () => (client.connected = true))
    clients.push(client)
  }
  await until(() => clients.every(c => c.connected), "all clients to connect")
  const serverStorageId = Object.values(clients[0].repo.peerMetadataByPeerId).find(m => m?.storageId)?.storageId
  if (!serverStorageId) log("warning: the server sent no storageId; server acknowledgements cannot be tracked")
  post({ type: "connected", storageId: serverStorageId, connectS: (now() - t0) / 1000 })

  // 2. Client 0 (in thread 0) creates the documents; every other client finds them.
  const serverHas = handle => sameSet(handle.getSyncInfo(serverStorageId)?.lastHeads, handle.heads())
  let docIds
  if (k === 0) {
    await receive("create")
    docIds = []
    for (let d = 0; d < D; d++) {
      const handle = clients[0].repo.create({})
      clients[0].handles[d] = handle
      docIds.push(handle.documentId)
    }
    if (serverStorageId) {
      await until(() => clients[0].handles.every(serverHas), "the server to store the new documents")
    } else {
      await sleep(1000)
    }
    post({ type: "created", docIds })
  }
  docIds = (await receive("find")).docIds
  await Promise.all(
    clients
      .filter(client => client.i !== 0)
      .flatMap(client =>
        docIds.map(async (documentId, d) => {
          try {
            client.handles[d] = await client.repo.find(documentId)
          } catch (err) {
            noteError(`client ${client.i} find ${documentId}`, err)
            // Late arrival: the handle turns ready if the server pushes it later.
            const handle = client.repo.handles[documentId]
            client.handles[d] = handle
            await until(() => handle.isReady(), `client ${client.i} to get ${documentId}`)
          }
        }),
      ),
  )
  post({ type: "found" })

  // 3. Bookkeeping: deliveries (propagation latency) and server acknowledgements.
  let remainingDeliveries = totalChanges * clients.length // every change must reach each client (incl. its author)
  const propagation = []
  const ackLatency = []
  let ackedPairs = 0
  let tDone = null
  let started = false

  // Closed loop: per writer, a resolver waiting until its latest change has
  // reached every other client (all clients are in this thread then).
  const deliveryWaiters = new Map()
  function seenByAll(author, count) {
    return clients.every(c => c.i === author || c.seen.every(perDoc => perDoc[author] >= count))
  }
  function checkWaiters() {
    for (const [author, { count, resolve }] of deliveryWaiters) {
      if (seenByAll(author, count)) {
        deliveryWaiters.delete(author)
        resolve()
      }
    }
  }
  function delivered(author, count) {
    if (seenByAll(author, count)) return Promise.resolve()
    return new Promise(resolve => deliveryWaiters.set(author, { count, resolve }))
  }

  function checkDone() {
    if (started && tDone === null && remainingDeliveries === 0 && ackedPairs === clients.length * D) tDone = now()
  }

  for (const client of clients) {
    client.seen = docIds.map(() => new Int32Array(C))
    client.pending = docIds.map(() => []) // own changes not yet acknowledged: {t, heads}
    client.acked = docIds.map(() => false)
    client.handles.forEach((handle, d) => {
      const updateAck = () => {
        const info = serverStorageId ? handle.getSyncInfo(serverStorageId) : undefined
        const pending = client.pending[d]
        if (info && pending.length) {
          // The server acknowledges a change once it advertises heads that
          // include it: exactly our heads, or (with concurrent writers) one of
          // our earlier post-change heads.
          let upTo = -1
          if (sameSet(info.lastHeads, handle.heads())) upTo = pending.length - 1
          else {
            const theirs = new Set(info.lastHeads)
            for (let j = pending.length - 1; j >= 0; j--) {
              if (pending[j].heads.every(h => theirs.has(h))) {
                upTo = j
                break
              }
            }
          }
          if (upTo >= 0) {
            const t = now()
            for (const p of pending.splice(0, upTo + 1)) ackLatency.push(t - p.t)
          }
        }
        const acked = Boolean(info) && sameSet(info.lastHeads, handle.heads())
        if (acked !== client.acked[d]) {
          client.acked[d] = acked
          ackedPairs += acked ? 1 : -1
        }
        checkDone()
      }
      handle.on("remote-heads", updateAck)
      handle.on("heads-changed", updateAck)
      handle.on("change", ({ doc }) => {
        const t = now()
        const seen = client.seen[d]
        for (let author = 0; author < C; author++) {
          const list = doc[`c${author}`]
          if (!list) continue
          for (let j = seen[author]; j < list.length; j++) {
            if (author !== client.i) propagation.push(t - list[j])
            remainingDeliveries--
          }
          seen[author] = list.length
        }
        if (deliveryWaiters.size) checkWaiters()
        checkDone()
      })
      updateAck()
    })
  }

  // 4. The load: every writer makes N rounds of one change to each document.
  await receive("start")
  // Event-loop stalls of this thread: over ~5 s the JS server's keep-alive
  // drops our sockets (a missed pong), which is a load-generator failure, not
  // a server one; reported so such runs can be recognised.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  started = true
  counting = true
  let made = 0
  await Promise.all(
    clients
      .filter(client => client.i < W)
      .map(async client => {
        if (intervalMs > 0) await sleep(Math.random() * intervalMs)
        for (let r = 0; r < N && timeLeft() > 0; r++) {
          client.handles.forEach((handle, d) => {
            try {
              const t = now()
              handle.change(doc => {
                if (!doc[client.key]) doc[client.key] = []
                doc[client.key].push(t)
              })
              client.pending[d].push({ t, heads: handle.heads() })
              made++
            } catch (err) {
              noteError(`client ${client.i} change`, err)
            }
          })
          if (closedLoop) {
            await Promise.race([delivered(client.i, r + 1), sleep(Math.max(0, timeLeft()))])
            if (intervalMs > 0) await sleep(intervalMs)
          } else {
            await (intervalMs > 0 ? sleep(intervalMs) : tick())
          }
        }
      }),
  )
  const sentAt = now()
  checkDone()
  let timedOut = false
  try {
    await until(() => tDone !== null, "all changes to reach all clients and the server")
  } catch (err) {
    timedOut = true
    noteError("convergence", err)
  }
  post({ type: "done", tDone, sentAt, timedOut })

  await receive("report")
  counting = false
  loopDelay.disable()
  post({
    type: "report",
    made,
    propagation,
    ackLatency,
    traffic,
    remainingDeliveries,
    maxLoopDelayMs: Math.round(loopDelay.max / 1e6),
    unacked: clients.length * D - ackedPairs,
    unackedSamples: clients
      .flatMap(client =>
        client.handles.map((handle, d) =>
          client.acked[d]
            ? null
            : {
                client: client.i,
                documentId: docIds[d],
                heads: handle.heads(),
                serverHeads: serverStorageId ? handle.getSyncInfo(serverStorageId)?.lastHeads ?? null : null,
              },
        ),
      )
      .filter(Boolean)
      .slice(0, 5),
    // heads[d][j]: the heads of this thread's j-th client for document d.
    heads: docIds.map((_, d) => clients.map(client => client.handles[d].heads())),
    errors,
  })

  await receive("close")
  for (const client of clients) {
    for (const adapter of client.repo.networkSubsystem.adapters) {
      try {
        adapter.disconnect()
      } catch {
        // already closed
      }
    }
  }
  process.exit(0)
}
