// Which automerge-repo release a peer or sync server runs: the pinned 2.5.6
// (the line the public sync server installs) or one of the older and newer
// releases installed side by side under npm aliases (package.json:
// "repo121": "npm:@automerge/automerge-repo@1.2.1", ...).
//
// Chosen with --repo-version on the command line, else $AUTOMERGE_REPO_VERSION,
// else 2.5.6. loadRelease() returns the release's modules plus the small
// shims needed to drive 1.x and 2.x from one script (1.x: find() returns a
// handle at once, doc() is async, heads are hex strings, the adapters have
// their old names).

import { createHash } from "node:crypto"
import fs from "node:fs"
import { createRequire } from "node:module"

export const DEFAULT_VERSION = "2.5.6"

// version -> [repo, network-websocket, storage-nodefs] package names as
// installed. storage-nodefs has no 2.0.8 or 2.6 release: 2.0.7 and 2.5.6 are
// the ones an app on those lines uses.
export const RELEASES = {
  "1.2.1": ["repo121", "repo121-ws", "repo121-nodefs"],
  "2.0.8": ["repo208", "repo208-ws", "repo208-nodefs"],
  "2.5.6": [
    "@automerge/automerge-repo",
    "@automerge/automerge-repo-network-websocket",
    "@automerge/automerge-repo-storage-nodefs",
  ],
  // Declares node >= 22.13; on Node 20 see addNode22Builtins().
  "2.6.0-alpha.3": ["repo26", "repo26-ws", "@automerge/automerge-repo-storage-nodefs"],
}

const require = createRequire(import.meta.url)

function installedVersion(name) {
  // Read package.json from disk: "exports" maps of these packages do not
  // expose it to require().
  const entry = require.resolve(name)
  const marker = `/node_modules/${name}/`
  const root = entry.slice(0, entry.indexOf(marker) + marker.length)
  return JSON.parse(fs.readFileSync(root + "package.json", "utf8")).version
}

// 2.6.0-alpha.3 declares node >= 22.13 and uses three things Node 20 lacks:
// Promise.withResolvers, Set.prototype.difference (both ES2024/2025, in V8
// from Node 22) and, in its client adapter, the global WebSocket (unflagged
// from Node 22; jspeer.py starts such peers with --experimental-websocket,
// Node 20's flag for the same undici implementation). The two builtins are
// added here, as the specification defines them, only where they are missing
// and only for that release.
function addNode22Builtins() {
  if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
      let resolve, reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    }
  }
  if (typeof Set.prototype.difference !== "function") {
    Object.defineProperty(Set.prototype, "difference", {
      value: function difference(other) {
        const result = new Set()
        for (const value of this) if (!other.has(value)) result.add(value)
        return result
      },
      writable: true,
      configurable: true,
    })
  }
}

export async function loadRelease(requested) {
  const version = requested || process.env.AUTOMERGE_REPO_VERSION || DEFAULT_VERSION
  const names = RELEASES[version]
  if (!names) {
    throw new Error(`unknown automerge-repo version ${JSON.stringify(version)}; known: ${Object.keys(RELEASES).join(", ")}`)
  }
  if (version.startsWith("2.6")) addNode22Builtins()
  const [repoName, wsName, nodefsName] = names
  const [repo, ws, nodefs] = await Promise.all(names.map(name => import(name)))
  const installed = installedVersion(repoName)
  if (installed !== version) {
    throw new Error(`${repoName} is automerge-repo ${installed}, expected ${version}: run npm ci --prefix tests/interop/js`)
  }
  const legacy = version.startsWith("1.")
  return {
    version,
    installed: { repo: installed, ws: installedVersion(wsName), nodefs: installedVersion(nodefsName) },
    legacy,
    repo,
    Repo: repo.Repo,
    ClientAdapter: ws.WebSocketClientAdapter ?? ws.BrowserWebSocketClientAdapter,
    ServerAdapter: ws.WebSocketServerAdapter ?? ws.NodeWSServerAdapter,
    NodeFSStorageAdapter: nodefs.NodeFSStorageAdapter,
    // 1.x strings are text and immutable strings are RawString.
    isImmutableString: repo.isImmutableString ?? (value => value instanceof repo.RawString),
    // The document of a ready handle (1.x: docSync(); doc() is async there).
    docOf: handle => (legacy ? handle.docSync() : handle.doc()),
    // Heads as [bs58check (2.x URL form), hex]; 1.x handles give hex.
    headsOf: handle => {
      const heads = handle.heads()
      if (!legacy) return [heads, repo.decodeHeads(heads)]
      return [heads.map(hexToBs58check), heads]
    },
    // What the handle believes the server (by storage id) has.
    remoteHeadsOf: (handle, storageId) => {
      if (legacy) {
        const hex = handle.getRemoteHeads(storageId)
        return hex ? hex.map(hexToBs58check) : undefined
      }
      return handle.getSyncInfo(storageId)?.lastHeads
    },
    // repo.find: 2.x resolves with a ready handle or rejects "... unavailable";
    // 1.x returns the handle at once and it becomes ready or unavailable.
    find: async (r, documentId) => {
      if (!legacy) return await r.find(documentId)
      const handle = r.find(documentId)
      await handle.whenReady(["ready", "unavailable", "deleted"])
      if (!handle.isReady()) throw new Error(`Document ${documentId} is unavailable`)
      return handle
    },
  }
}

// bs58check (Bitcoin alphabet, 4-byte double SHA-256 checksum) of hex bytes.
const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

function hexToBs58check(hex) {
  const payload = Buffer.from(hex, "hex")
  const sha = data => createHash("sha256").update(data).digest()
  const bytes = Buffer.concat([payload, sha(sha(payload)).subarray(0, 4)])
  let n = BigInt("0x" + (bytes.toString("hex") || "0"))
  let out = ""
  while (n > 0n) {
    out = ALPHABET[Number(n % 58n)] + out
    n /= 58n
  }
  for (const byte of bytes) {
    if (byte !== 0) break
    out = "1" + out
  }
  return out
}
