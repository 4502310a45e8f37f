// DocumentBrowser front end: a table of documents with open / copy URL / create.
//
// Rows come from Python (`rows`); "last change" is shown relative to now and
// ticks every second here. While the table is on screen it asks Python for a
// refresh every 2 s, so peer counts stay current. Document ids and other
// values reach the page through textContent only.

const TICK_MS = 1000;
const POLL_MS = 2000;

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, title) {
  const node = h("button", `autosync-button ${className}`, text);
  node.type = "button";
  if (title) node.title = title;
  return node;
}

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function relative(iso, now) {
  if (!iso) return "—";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "—";
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

export default {
  render({ model, el }) {
    const root = h("div", "autosync-browser");
    root.dataset.testid = "autosync-browser";

    const toolbar = h("div", "autosync-browser-toolbar");
    const source = h("span", "autosync-browser-source");
    const create = button("autosync-browser-create", "New document", "create an empty document");
    const input = h("input", "autosync-browser-open-input");
    input.type = "text";
    input.placeholder = "document id or automerge: URL";
    input.spellcheck = false;
    const openById = button("autosync-browser-open-id", "Open", "open this document");
    const status = h("div", "autosync-browser-status");
    status.setAttribute("role", "status");
    toolbar.append(create, input, openById);

    const table = h("table", "autosync-browser-table");
    const head = h("thead");
    const headRow = h("tr");
    for (const name of ["Document", "Size", "Heads", "Peers", "Last change", ""]) {
      headRow.append(h("th", null, name));
    }
    head.append(headRow);
    const body = h("tbody");
    table.append(head, body);
    root.append(source, toolbar, status, table);
    el.append(root);

    let notice = "";
    let noticeTimer = null;

    function showNotice(text) {
      notice = text;
      drawStatus();
      clearTimeout(noticeTimer);
      noticeTimer = setTimeout(() => {
        notice = "";
        drawStatus();
      }, 3000);
    }

    function drawStatus() {
      const text = notice || model.get("message") || "";
      status.textContent = text;
      status.hidden = !text;
    }

    function copyFallback(cell, url) {
      // No clipboard API (an http: page, or permission refused): select the
      // text so the user can copy it by hand.
      let field = cell.querySelector(".autosync-browser-copy-fallback");
      if (!field) {
        field = h("input", "autosync-browser-copy-fallback");
        field.readOnly = true;
        cell.append(field);
      }
      field.value = url;
      field.focus();
      field.select();
      showNotice("press Ctrl+C (⌘C) to copy the selected URL");
    }

    function copy(cell, url) {
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(url).then(
          () => showNotice(`copied ${url}`),
          () => copyFallback(cell, url),
        );
      } else {
        copyFallback(cell, url);
      }
    }

    function drawRows() {
      const rows = model.get("rows") || [];
      const selected = model.get("selected");
      const now = Date.now();
      body.replaceChildren();
      if (!rows.length) {
        const empty = h("tr", "autosync-browser-empty");
        const cell = h("td", null, model.get("kind") === "server"
          ? "No documents yet: create one, or let a peer add one."
          : "No documents open on this connection: open one by id or URL, or create one.");
        cell.colSpan = 6;
        empty.append(cell);
        body.append(empty);
        return;
      }
      for (const row of rows) {
        const tr = h("tr", "autosync-browser-row");
        tr.dataset.documentId = row.id;
        tr.dataset.state = row.state || "";
        if (row.id === selected) tr.classList.add("autosync-selected");
        const id = h("td", "autosync-browser-id");
        id.append(h("code", null, row.id));
        id.title = row.url;
        const size = h("td", "autosync-browser-size", formatSize(row.size));
        const heads = h("td", "autosync-browser-heads", (row.heads || []).join(" ") || "—");
        const peers = h("td", "autosync-browser-peers",
          row.peers === null || row.peers === undefined ? "—" : String(row.peers));
        const last = h("td", "autosync-browser-last-change", relative(row.last_change, now));
        if (row.last_change) {
          last.dataset.time = row.last_change;
          last.title = row.last_change;
        }
        const actions = h("td", "autosync-browser-actions");
        const open = button("autosync-browser-open", "Open", "show this document below");
        open.addEventListener("click", (event) => {
          event.stopPropagation();
          model.send({ type: "open", id: row.id });
        });
        const copyButton = button("autosync-browser-copy", "Copy URL", row.url);
        copyButton.addEventListener("click", (event) => {
          event.stopPropagation();
          copy(actions, row.url);
        });
        actions.append(open, copyButton);
        tr.append(id, size, heads, peers, last, actions);
        tr.addEventListener("dblclick", () => model.send({ type: "open", id: row.id }));
        body.append(tr);
      }
    }

    function tick() {
      const now = Date.now();
      for (const cell of body.querySelectorAll(".autosync-browser-last-change[data-time]")) {
        cell.textContent = relative(cell.dataset.time, now);
      }
    }

    function drawSource() {
      source.textContent = model.get("source") || "";
    }

    function drawBusy() {
      create.disabled = !!model.get("busy");
    }

    function openTyped() {
      const text = input.value.trim();
      if (!text) return;
      model.send({ type: "open-url", id: text });
    }

    create.addEventListener("click", () => model.send({ type: "create" }));
    openById.addEventListener("click", openTyped);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") openTyped();
    });

    drawRows();
    drawStatus();
    drawSource();
    drawBusy();
    const handlers = [
      ["change:rows", drawRows],
      ["change:selected", drawRows],
      ["change:kind", drawRows],
      ["change:message", drawStatus],
      ["change:source", drawSource],
      ["change:busy", drawBusy],
    ];
    for (const [name, fn] of handlers) model.on(name, fn);
    const ticker = setInterval(tick, TICK_MS);
    const poller = setInterval(() => model.send({ type: "refresh" }), POLL_MS);
    return () => {
      for (const [name, fn] of handlers) model.off(name, fn);
      clearInterval(ticker);
      clearInterval(poller);
      clearTimeout(noticeTimer);
    };
  },
};
