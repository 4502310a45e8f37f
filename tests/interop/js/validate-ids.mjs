#!/usr/bin/env node
// Check document ids with one automerge-repo release's own validators, and
// make a few ids the way that release makes them.
//
//   echo '{"ids": ["4NMN...", ...], "generate": 20}' | node validate-ids.mjs --repo-version 1.2.1
//
// Prints one JSON object: {version, releases, results, generated}; for every
// id, results holds {id, url, documentId, interpret}: isValidAutomergeUrl of
// "automerge:<id>", isValidDocumentId(id) (false also when it throws), and
// whether interpretAsDocumentId (what repo.find() runs first; it throws
// "Invalid AutomergeUrl") gives the id back.
// generated: ids from the release's generateAutomergeUrl().

import { parseArgs } from "node:util"

import { RELEASES, loadRelease } from "./versions.mjs"

const { values: args } = parseArgs({
  options: { "repo-version": { type: "string" } },
  strict: true,
})

const release = await loadRelease(args["repo-version"])
const { generateAutomergeUrl, interpretAsDocumentId, isValidAutomergeUrl, isValidDocumentId, parseAutomergeUrl } =
  release.repo

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const request = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}")

// True when fn returns a truthy value; false when it returns falsy or throws
// (1.x isValidDocumentId throws "Stringified UUID is invalid" for non-UUIDs).
function holds(fn) {
  try {
    return Boolean(fn())
  } catch {
    return false
  }
}

const results = (request.ids ?? []).map(id => ({
  id,
  url: holds(() => isValidAutomergeUrl(`automerge:${id}`)),
  documentId: holds(() => isValidDocumentId(id)),
  interpret: holds(() => interpretAsDocumentId(id) === id),
}))
const generated = Array.from(
  { length: request.generate ?? 0 },
  () => parseAutomergeUrl(generateAutomergeUrl()).documentId,
)

process.stdout.write(
  JSON.stringify({ version: release.version, releases: Object.keys(RELEASES), results, generated }) + "\n",
)
