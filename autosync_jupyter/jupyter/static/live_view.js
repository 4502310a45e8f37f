// LiveView front end: a collapsible, read-only tree of an Automerge document.
//
// The Python side sends the whole tree (at most ~10 times a second); this
// file re-renders it, keeping what the user collapsed or expanded, and
// briefly highlights what changed. Document content only ever reaches the
// page through textContent, never as HTML.

const MARKERS = new Set(["$bytes", "$date", "$counter", "$int", "$float", "$map", "$unknown"]);
const LONG_STRING = 200;
const BIG_CONTAINER = 50;
const OPEN_DEPTH = 3;
const FLASH_MS = 1200;

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function markerOf(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
  const keys = Object.keys(value);
  return keys.length === 1 && MARKERS.has(keys[0]) ? keys[0] : null;
}

// What a tree value is: "map", "list" or a scalar kind, and its entries.
function describe(value) {
  const marker = markerOf(value);
  if (marker === "$map") return { kind: "map", entries: Object.entries(value.$map) };
  if (marker) return { kind: marker.slice(1), payload: value[marker] };
  if (Array.isArray(value)) return { kind: "list", entries: value.map((v, i) => [i, v]) };
  if (value !== null && typeof value === "object") {
    return { kind: "map", entries: Object.entries(value) };
  }
  if (value === null) return { kind: "null" };
  return { kind: typeof value };
}

function byteLength(base64) {
  const pad = base64.endsWith("==") ? 2 : base64.endsWith("=") ? 1 : 0;
  return Math.floor((base64.length * 3) / 4) - pad;
}

function bytesPreview(base64) {
  let hex = "";
  try {
    const raw = atob(base64);
    for (let i = 0; i < Math.min(raw.length, 16); i++) {
      hex += raw.charCodeAt(i).toString(16).padStart(2, "0");
    }
    if (raw.length > 16) hex += "…";
  } catch {
    hex = "?";
  }
  return hex;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export default {
  render({ model, el }) {
    const root = h("div", "autosync-live-view");
    root.dataset.testid = "autosync-live-view";
    const header = h("div", "autosync-live-header");
    const title = h("span", "autosync-live-title");
    const heads = h("span", "autosync-live-heads");
    const updated = h("span", "autosync-live-updated");
    header.append(title, heads, updated);
    const error = h("div", "autosync-live-error");
    const loading = h("div", "autosync-live-loading", "loading…");
    const tree = h("div", "autosync-tree");
    root.append(header, error, loading, tree);
    el.append(root);

    // Paths (JSON arrays of keys) the user toggled away from the default,
    // and long strings the user expanded; both survive re-renders.
    const toggled = new Set();
    const expanded = new Set();
    let previous;
    const timers = new Set();

    function flash(node) {
      node.classList.add("autosync-changed");
      const timer = setTimeout(() => {
        node.classList.remove("autosync-changed");
        timers.delete(timer);
      }, FLASH_MS);
      timers.add(timer);
    }

    function scalar(info, path) {
      const key = JSON.stringify(path);
      const span = h("span", `autosync-value autosync-kind-${info.kind}`);
      switch (info.kind) {
        case "string": {
          const text = info.payload;
          if (text.length > LONG_STRING && !expanded.has(key)) {
            span.textContent = JSON.stringify(text.slice(0, LONG_STRING)).slice(0, -1) + "…";
            const more = h("button", "autosync-more", `+${text.length - LONG_STRING} chars`);
            more.type = "button";
            more.title = "show the whole text";
            more.addEventListener("click", () => {
              expanded.add(key);
              draw();
            });
            const wrap = h("span", "autosync-long");
            wrap.append(span, more);
            return wrap;
          }
          span.textContent = JSON.stringify(text);
          break;
        }
        case "number":
        case "boolean":
          span.textContent = String(info.payload);
          break;
        case "null":
          span.textContent = "null";
          break;
        case "bytes":
          span.textContent = `bytes[${byteLength(info.payload)}] ${bytesPreview(info.payload)}`;
          span.title = "byte array (hex preview)";
          break;
        case "date":
          span.textContent = info.payload;
          span.title = "timestamp (UTC)";
          break;
        case "counter":
          span.textContent = `${typeof info.payload === "object" ? info.payload.$int : info.payload}`;
          span.title = "counter";
          break;
        case "int":
          span.textContent = info.payload;
          span.title = "64-bit integer (beyond JavaScript's safe range)";
          break;
        case "float":
          span.textContent = info.payload;
          break;
        default:
          span.textContent = String(info.payload);
          span.title = "a value type this viewer does not know";
      }
      return span;
    }

    function node(label, value, before, path, depth) {
      const info = describe(value);
      if (info.kind !== "map" && info.kind !== "list" && info.payload === undefined) {
        info.payload = value;
      }
      const row = h("div", "autosync-node");
      row.dataset.path = JSON.stringify(path);
      const line = h("div", "autosync-line");
      row.append(line);
      const container = info.kind === "map" || info.kind === "list";
      const toggle = h("span", "autosync-toggle");
      line.append(toggle);
      if (label !== null) {
        const labelClass = typeof label === "number" ? "autosync-index" : "autosync-key";
        line.append(h("span", labelClass, String(label)));
        line.append(h("span", "autosync-colon", ": "));
      }
      if (before !== undefined && !container && !same(before, value)) flash(line);
      if (!container) {
        line.append(scalar(info, path));
        return row;
      }
      const count = info.entries.length;
      const key = JSON.stringify(path);
      const closedByDefault = depth >= OPEN_DEPTH || (depth > 0 && count > BIG_CONTAINER);
      const open = closedByDefault === toggled.has(key);
      toggle.textContent = count ? (open ? "▾" : "▸") : " ";
      toggle.classList.add("autosync-clickable");
      const summary = info.kind === "map"
        ? `{${count} key${count === 1 ? "" : "s"}}`
        : `[${count} item${count === 1 ? "" : "s"}]`;
      const badge = h("span", `autosync-summary autosync-kind-${info.kind}`, summary);
      line.append(badge);
      if (before !== undefined && !same(before, value) && !open) flash(line);
      line.addEventListener("click", (event) => {
        if (event.target.closest("button")) return;
        if (toggled.has(key)) toggled.delete(key);
        else toggled.add(key);
        draw();
      });
      if (!open || !count) return row;
      const children = h("div", "autosync-children");
      const prior = before === undefined ? undefined : describe(before);
      const priorMap = prior && prior.kind === info.kind ? new Map(prior.entries) : null;
      for (const [childKey, childValue] of info.entries) {
        const childBefore = priorMap ? priorMap.get(childKey) : undefined;
        const child = node(childKey, childValue, childBefore, path.concat([childKey]), depth + 1);
        if (priorMap && !priorMap.has(childKey)) flash(child.firstChild);
        children.append(child);
      }
      row.append(children);
      return row;
    }

    // Re-render from the model; `before` is the tree to compare against.
    function draw(before) {
      const value = model.get("value");
      tree.replaceChildren();
      if (value === null || value === undefined) return;
      const top = node(null, value, before, [], 0);
      top.classList.add("autosync-root");
      tree.append(top);
    }

    function header_() {
      title.textContent = model.get("title") || "Document";
      title.title = model.get("url") || "";
      const list = model.get("heads") || [];
      heads.textContent = list.length ? `heads ${list.join(" ")}` : "no changes";
      const n = model.get("updated") || 0;
      updated.textContent = `${n} update${n === 1 ? "" : "s"}`;
      error.textContent = model.get("error") || "";
      error.hidden = !model.get("error");
      loading.hidden = !model.get("loading");
    }

    function onValue() {
      const before = previous;
      previous = model.get("value");
      draw(before);
    }

    previous = model.get("value");
    draw();
    header_();
    model.on("change:value", onValue);
    for (const name of ["title", "url", "heads", "updated", "error", "loading"]) {
      model.on(`change:${name}`, header_);
    }
    return () => {
      model.off("change:value", onValue);
      for (const name of ["title", "url", "heads", "updated", "error", "loading"]) {
        model.off(`change:${name}`, header_);
      }
      for (const timer of timers) clearTimeout(timer);
    };
  },
};
