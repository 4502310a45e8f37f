// LoginWidget front end: a "Sign in" button that opens the provider in a popup.
//
// The popup is opened synchronously in the click handler, the only moment
// popup blockers allow it, and shows "Signing in…" until the kernel sends
// the provider's URL (`navigate`). The token never comes here: the kernel
// keeps it. When this page is not on the kernel's machine, the provider can
// redirect the popup to the Jupyter server extension's callback page, which
// posts the redirect's query to this window; it is relayed to the kernel,
// which checks `state` and exchanges the code.

const POPUP_NAME = "autosync-login";
const POPUP_FEATURES = "popup,width=520,height=700";
const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "::1", "[::1]"]);
const CALLBACK_PATH = "autosync/oidc/callback";
const REDIRECT_KEYS = ["code", "state", "error", "error_description"];

// The Jupyter server's base URL, from the page config JupyterLab embeds.
function baseUrl() {
  try {
    const config = document.getElementById("jupyter-config-data");
    const value = config ? JSON.parse(config.textContent || "{}").baseUrl : null;
    return typeof value === "string" && value.startsWith("/") ? value : "/";
  } catch {
    return "/";
  }
}

// The callback page's URL if the server extension serves it, else null.
async function findCallback() {
  const base = baseUrl();
  const path = `${base.endsWith("/") ? base : base + "/"}${CALLBACK_PATH}`;
  const url = new URL(path, window.location.origin);
  try {
    const response = await fetch(url.href, { method: "GET", credentials: "same-origin" });
    return response.ok ? url.href : null;
  } catch {
    return null;
  }
}

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text) {
  const node = h("button", `autosync-button ${className}`, text);
  node.type = "button";
  return node;
}

// Only web addresses may be opened (never javascript: or data: URLs).
function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

function openPopup() {
  let popup = null;
  try {
    popup = window.open("", POPUP_NAME, POPUP_FEATURES);
  } catch {
    popup = null;
  }
  if (!popup) return null;
  try {
    // about:blank is same-origin: say what is going on until the provider loads.
    popup.document.title = "Signing in…";
    const message = popup.document.createElement("p");
    message.textContent = "Signing in…";
    message.style.fontFamily = "sans-serif";
    popup.document.body.replaceChildren(message);
  } catch {
    // A window of that name already shows another origin: it will be navigated.
  }
  return popup;
}

export default {
  render({ model, el }) {
    const root = h("div", "autosync-login");
    root.dataset.testid = "autosync-login";
    const signIn = button("autosync-login-button", "Sign in");
    const cancel = button("autosync-login-cancel", "Cancel");
    const signOut = button("autosync-login-signout", "Sign out");
    const status = h("span", "autosync-login-status");
    status.setAttribute("role", "status");
    const device = h("div", "autosync-login-device");
    const link = h("a", "autosync-login-verification");
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    const code = h("code", "autosync-login-code");
    device.append(h("span", null, "Open "), link, h("span", null, " and enter the code "), code);
    root.append(signIn, cancel, signOut, status, device);
    el.append(root);

    let popup = null;
    let deviceFlow = false;
    let watcher = null;
    let callback = null;
    findCallback().then((found) => {
      callback = found;
    });

    function closePopup() {
      clearInterval(watcher);
      watcher = null;
      if (popup && !popup.closed) popup.close();
      popup = null;
    }

    // Closing the popup during the browser flow abandons the sign-in; in the
    // device flow the code can still be entered elsewhere.
    function watchPopup() {
      clearInterval(watcher);
      watcher = setInterval(() => {
        if (!popup || !popup.closed) return;
        clearInterval(watcher);
        watcher = null;
        popup = null;
        if (!deviceFlow && model.get("status") === "waiting") model.send({ type: "cancel" });
      }, 500);
    }

    function draw() {
      const state = model.get("status");
      const who = model.get("who");
      const message = model.get("message");
      root.dataset.status = state;
      signIn.hidden = state === "signed-in";
      signIn.disabled = state === "waiting";
      signIn.textContent = state === "waiting" ? "Signing in…" : "Sign in";
      cancel.hidden = state !== "waiting";
      signOut.hidden = state !== "signed-in";
      if (state === "signed-in") status.textContent = `signed in as ${who}`;
      else if (state === "waiting") status.textContent = message || "signing in…";
      else if (state === "error") status.textContent = message || "sign-in failed";
      else status.textContent = message || "not signed in";
      status.classList.toggle("autosync-error", state === "error");
      const uri = safeUrl(model.get("verification_uri") || "");
      const userCode = model.get("user_code") || "";
      device.hidden = !(state === "waiting" && uri && userCode);
      link.textContent = uri || "";
      if (uri) link.href = uri;
      else link.removeAttribute("href");
      code.textContent = userCode;
    }

    signIn.addEventListener("click", () => {
      popup = openPopup();
      deviceFlow = false;
      if (popup) watchPopup();
      const loopback = LOOPBACK_HOSTS.has(window.location.hostname);
      model.send({ type: "start", loopback, popup: popup !== null, callback });
    });
    cancel.addEventListener("click", () => {
      closePopup();
      model.send({ type: "cancel" });
    });
    signOut.addEventListener("click", () => model.send({ type: "sign-out" }));
    link.addEventListener("click", (event) => {
      const uri = safeUrl(link.href);
      if (!uri) return;
      event.preventDefault();
      popup = window.open(uri, POPUP_NAME, POPUP_FEATURES) || popup;
    });

    function onMessage(message) {
      if (!message || typeof message !== "object") return;
      if (message.type === "navigate") {
        const url = safeUrl(message.url);
        if (message.device) deviceFlow = true;
        if (url && popup && !popup.closed) popup.location.href = url;
      } else if (message.type === "done") {
        closePopup();
      }
    }

    // The callback page's message: same origin only, known string fields only.
    function onWindowMessage(event) {
      if (event.origin !== window.location.origin) return;
      const data = event.data;
      if (!data || typeof data !== "object" || data.type !== "autosync-oidc") return;
      if (model.get("status") !== "waiting") return;
      const params = {};
      for (const key of REDIRECT_KEYS) {
        if (typeof data[key] === "string") params[key] = data[key];
      }
      model.send({ type: "redirect", params });
    }
    window.addEventListener("message", onWindowMessage);

    draw();
    const names = ["status", "who", "message", "user_code", "verification_uri"];
    for (const name of names) model.on(`change:${name}`, draw);
    model.on("msg:custom", onMessage);
    return () => {
      for (const name of names) model.off(`change:${name}`, draw);
      model.off("msg:custom", onMessage);
      window.removeEventListener("message", onWindowMessage);
      clearInterval(watcher);
    };
  },
};
