// LiveView front end: a collapsible, read-only tree of an Automerge document.
//
// The Python side sends the whole tree (at most ~10 times a second); this
// file re-renders it, keeping what the user collapsed or expanded, and
// briefly highlights what changed. Document content only ever reaches the
// page through textContent, never as HTML.
//
// The timeline (the "history" button) is a slider over the document's
// versions: Python sends the chosen version's tree with the paths its change
// touched, which stay highlighted while it is shown. The presence row lists
// who is in the document; this user's name comes from JupyterLab's identity
// (GET api/me), which the page can ask for and the kernel cannot.

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

// JupyterLab's page config: base URL and (when the server uses one) token.
function pageConfig() {
  try {
    const node = document.getElementById("jupyter-config-data");
    return node ? JSON.parse(node.textContent || "{}") : null;
  } catch {
    return null;
  }
}

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

// The notebook user's identity as JupyterLab knows it, or null outside Lab.
async function jupyterIdentity() {
  const config = pageConfig();
  if (!config || !config.baseUrl) return null;
  const headers = {};
  if (config.token) headers.Authorization = `token ${config.token}`;
  const xsrf = cookie("_xsrf");
  if (xsrf) headers["X-XSRFToken"] = xsrf;
  try {
    const base = config.baseUrl.endsWith("/") ? config.baseUrl : config.baseUrl + "/";
    const response = await fetch(`${base}api/me`, { headers, credentials: "same-origin" });
    if (!response.ok) return null;
    const identity = (await response.json()).identity || {};
    const name = identity.display_name || identity.name || identity.username;
    if (!name) return null;
    // Jupyter's colours are CSS variables: peers elsewhere need the colour itself.
    let color = identity.color || "";
    const variable = /^var\((--[\w-]+)\)$/.exec(color.trim());
    if (variable) color = getComputedStyle(document.body).getPropertyValue(variable[1]).trim();
    return color ? { name, color } : { name };
  } catch {
    return null;
  }
}

function describePath(path) {
  if (!Array.isArray(path)) return "";
  return path.length ? path.map(String).join(" › ") : "the whole document";
}

function localTime(iso) {
  if (!iso) return "time unknown";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "time unknown" : date.toLocaleString();
}

export default {
  render({ model, el }) {
    const root = h("div", "autosync-live-view");
    root.dataset.testid = "autosync-live-view";
    const header = h("div", "autosync-live-header");
    const title = h("span", "autosync-live-title");
    const heads = h("span", "autosync-live-heads");
    const updated = h("span", "autosync-live-updated");
    const historyButton = h("button", "autosync-button autosync-timeline-toggle", "history");
    historyButton.type = "button";
    historyButton.title = "browse the document's versions";
    header.append(title, heads, updated, historyButton);
    const people = h("div", "autosync-presence");
    people.dataset.testid = "autosync-presence";
    const error = h("div", "autosync-live-error");
    const loading = h("div", "autosync-live-loading", "loading…");

    // The timeline pane.
    const pane = h("div", "autosync-timeline");
    const sliderRow = h("div", "autosync-timeline-row");
    const slider = h("input", "autosync-timeline-slider");
    slider.type = "range";
    slider.min = "1";
    slider.step = "1";
    slider.setAttribute("aria-label", "version");
    const position = h("span", "autosync-timeline-position");
    const liveButton = h("button", "autosync-button autosync-timeline-live", "live");
    liveButton.type = "button";
    liveButton.title = "follow the document again";
    sliderRow.append(slider, position, liveButton);
    const details = h("div", "autosync-timeline-row autosync-timeline-details");
    const author = h("span", "autosync-timeline-author");
    const when = h("span", "autosync-timeline-time");
    const message = h("span", "autosync-timeline-message");
    details.append(author, when, message);
    const actions = h("div", "autosync-timeline-row");
    const restore = h("button", "autosync-button autosync-timeline-restore", "restore this version");
    restore.type = "button";
    restore.title = "write this version's content back as a new change (history is kept)";
    const copy = h("button", "autosync-button autosync-timeline-copy", "copy link");
    copy.type = "button";
    copy.title = "copy this version's automerge: URL";
    const link = h("input", "autosync-timeline-url");
    link.readOnly = true;
    link.setAttribute("aria-label", "link to this version");
    actions.append(restore, copy, link);
    const status = h("div", "autosync-timeline-status");
    pane.append(sliderRow, details, actions, status);

    const tree = h("div", "autosync-tree");
    root.append(header, people, error, loading, pane, tree);
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

    function pinned() {
      const past = model.get("past");
      return model.get("version") > 0 && past ? past : null;
    }

    // The paths a past version's change touched stay highlighted; a deleted
    // key or a collapsed container shows on its nearest ancestor on screen.
    function markChanged(past) {
      for (const path of past.changed || []) {
        for (let n = path.length; n >= 0; n--) {
          const key = JSON.stringify(path.slice(0, n));
          const row = [...tree.querySelectorAll(".autosync-node")].find((r) => r.dataset.path === key);
          if (row) {
            row.firstChild.classList.add("autosync-history-changed");
            break;
          }
        }
      }
    }

    // Re-render from the model; `before` is the tree to compare against.
    function draw(before) {
      const past = pinned();
      const value = past ? past.tree : model.get("value");
      tree.replaceChildren();
      tree.classList.toggle("autosync-tree-past", Boolean(past));
      if (value === null || value === undefined) return;
      const top = node(null, value, past ? undefined : before, [], 0);
      top.classList.add("autosync-root");
      tree.append(top);
      if (past) markChanged(past);
    }

    function timeline_() {
      const open = model.get("timeline");
      pane.hidden = !open;
      historyButton.classList.toggle("autosync-active", open);
      historyButton.setAttribute("aria-pressed", String(open));
      const versions = model.get("versions") || 0;
      const past = pinned();
      slider.max = String(Math.max(versions, 1));
      slider.disabled = versions === 0;
      if (document.activeElement !== slider || !past) {
        slider.value = String(past ? past.version : versions);
      }
      root.classList.toggle("autosync-live-past", Boolean(past));
      liveButton.disabled = !past;
      restore.disabled = !past || past.version === versions;
      copy.disabled = !past || !past.url;
      if (past) {
        position.textContent = `version ${past.version} of ${versions}`;
        author.replaceChildren();
        const dot = h("span", "autosync-presence-dot");
        dot.style.background = past.color;
        author.append(dot, h("span", "", `${past.actor} #${past.seq}`));
        author.title = `author (actor id) ${past.actor}…`;
        when.textContent = past.time ? localTime(past.time) : "time unknown";
        when.title = past.when;
        message.textContent = past.message ? `“${past.message}”` : "";
        link.value = past.url;
        link.hidden = !past.url;
      } else {
        position.textContent = versions ? `live · ${versions} version${versions === 1 ? "" : "s"}` : "";
        author.replaceChildren();
        when.textContent = "";
        message.textContent = "";
        link.value = "";
        link.hidden = true;
      }
      status.textContent = model.get("status") || "";
    }

    function presence_() {
      const rows = model.get("presence") || [];
      people.replaceChildren();
      people.hidden = rows.length === 0;
      for (const row of rows) {
        const chip = h("span", "autosync-presence-peer");
        chip.dataset.peer = row.peer;
        if (row.me) chip.classList.add("autosync-presence-me");
        const dot = h("span", "autosync-presence-dot");
        dot.style.background = row.color || "#888";
        const label = row.me ? `${row.name} (you)` : row.name;
        chip.append(dot, h("span", "autosync-presence-name", label));
        const where = describePath(row.viewing);
        const bits = [row.peer];
        if (where) bits.push(`viewing ${where}`);
        if (row.heads) bits.push(`at a past version (${[].concat(row.heads).join(" ")})`);
        chip.title = bits.join("\n");
        people.append(chip);
      }
    }

    function pin(version) {
      model.set("version", version);
      model.save_changes();
    }

    historyButton.addEventListener("click", () => {
      model.set("timeline", !model.get("timeline"));
      model.save_changes();
    });
    slider.addEventListener("input", () => pin(Number(slider.value)));
    liveButton.addEventListener("click", () => pin(0));
    restore.addEventListener("click", () => {
      const past = pinned();
      if (past) model.send({ type: "restore", version: past.version });
    });
    copy.addEventListener("click", async () => {
      const past = pinned();
      if (!past || !past.url) return;
      link.hidden = false;
      link.select();
      try {
        await navigator.clipboard.writeText(past.url);
        status.textContent = "link copied";
      } catch {
        // No clipboard (an insecure page, a denied permission): the link is
        // selected in the field, ready for the keyboard.
        status.textContent = "press Ctrl+C (⌘C) to copy the selected link";
      }
    });

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

    function onPast() {
      draw();
      timeline_();
    }

    previous = model.get("value");
    draw();
    header_();
    timeline_();
    presence_();
    const listeners = [
      ["change:value", onValue],
      ["change:past", onPast],
      ["change:version", onPast],
      ["change:presence", presence_],
    ];
    for (const name of ["title", "url", "heads", "updated", "error", "loading"]) {
      listeners.push([`change:${name}`, header_]);
    }
    for (const name of ["timeline", "versions", "status"]) {
      listeners.push([`change:${name}`, timeline_]);
    }
    for (const [event, fn] of listeners) model.on(event, fn);
    // Only the first view of a model asks: every view shows the same user.
    if (!model.get("identity") || !Object.keys(model.get("identity")).length) {
      jupyterIdentity().then((identity) => {
        if (identity) {
          model.set("identity", identity);
          model.save_changes();
        }
      });
    }
    return () => {
      for (const [event, fn] of listeners) model.off(event, fn);
      for (const timer of timers) clearTimeout(timer);
    };
  },
};
