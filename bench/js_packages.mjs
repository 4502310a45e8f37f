// The official automerge-repo packages for the benchmark scripts, loaded from
// the interop test install so benchmarks and tests always use the same pinned
// versions (npm ci --prefix tests/interop/js).

import { createRequire } from "node:module"
import path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))
const jsDir = path.resolve(here, "..", "tests", "interop", "js")
const require = createRequire(path.join(jsDir, "package.json"))
const load = name => import(pathToFileURL(require.resolve(name)).href)

export const { Repo } = await load("@automerge/automerge-repo")
export const { BrowserWebSocketClientAdapter } = await load(
  "@automerge/automerge-repo-network-websocket",
)
