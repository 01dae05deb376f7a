// The dashboard's shell: session (sign-in, sign-out, expiry), the live feed, the banner and
// connection indicator, and the fragment router (#/ for the list, #/m/KEY for one migration).

import { api, clearToken, getToken, abilities } from "./api.js";
import { Watch } from "./watch.js";
import { fill, h, refreshTimes } from "./dom.js";
import { span } from "./format.js";
import { signIn } from "./views/signin.js";
import { listView } from "./views/list.js";
import { migrationView } from "./views/migration/page.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const conn = document.getElementById("conn");

/**
 * What every view reads: who is signed in and what they may do, the server's vocabulary, and
 * the migrations as the watch stream last delivered them. Views subscribe and are told which
 * migration changed (null: all of them).
 */
const store = {
  me: null,
  can: abilities(),
  vocabulary: null,
  version: 0,
  migrations: new Map(),
  loaded: false,
  listeners: new Set(),
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  },
  emit(key) {
    for (const fn of this.listeners) fn(key);
  },
};

let watch = null;
let view = null;
let live = false; // the watch stream is connected

function setBanner(message) {
  banner.hidden = !message;
  banner.textContent = message || "";
}

function setConn(state, text) {
  conn.hidden = false;
  conn.className = `conn conn-${state}`;
  conn.textContent = text;
}

function startSession({ me, vocabulary }) {
  store.me = me;
  store.can = abilities(me.permissions);
  store.vocabulary = vocabulary;
  document.getElementById("session").hidden = false;
  fill(
    document.getElementById("who"),
    h("span", { class: "who-name", text: me.name }),
    h("span", { class: ["badge", `role-${me.role}`], text: me.role === "reader" ? "reader · read-only" : me.role }),
    // A scoped token sees only its migrations: say so, or an empty list reads as an empty server.
    me.scope?.length
      ? h("span", { class: "badge scope", text: `only ${me.scope.join(", ")}`, title: "this token is scoped: other migrations are not shown" })
      : null,
  );
  watch = new Watch({
    onSnapshot(snapshot) {
      store.version = snapshot.version;
      store.migrations = new Map(snapshot.migrations.map((m) => [m.key, m]));
      store.loaded = true;
      store.emit(null);
    },
    onChange(m) {
      store.version = Math.max(store.version, m.version);
      store.migrations.set(m.key, m);
      store.emit(m.key);
    },
    onStatus({ state, retryInMs }) {
      live = state === "live";
      if (state === "live") {
        setConn("live", "Live");
        setBanner(null);
      } else if (state === "connecting") {
        setConn("connecting", "Connecting…");
      } else {
        setConn("down", "Reconnecting…");
        setBanner(`Cannot reach the Switchyard server: the page shows the last state it received. Retrying in ${span(Math.ceil(retryInMs / 1000))}…`);
      }
    },
    onUnauthenticated() {
      endSession("The server no longer accepts your token (revoked or unknown). Sign in again.");
    },
  });
  watch.start();
  route();
}

function endSession(message) {
  watch?.stop();
  watch = null;
  live = false;
  clearToken();
  store.me = null;
  store.can = abilities();
  store.vocabulary = null;
  store.loaded = false;
  store.migrations = new Map();
  document.getElementById("session").hidden = true;
  conn.hidden = true;
  setBanner(null);
  view?.destroy?.();
  view = null;
  fill(main, signIn({ message, onSignedIn: startSession }));
  main.querySelector("input")?.focus();
}

function route() {
  if (!store.me) return;
  const hash = location.hash || "#/";
  // Only "#/…" fragments are routes; others (none today) are in-page anchors.
  if (!hash.startsWith("#/")) return;
  view?.destroy?.();
  const match = hash.match(/^#\/m\/(.+)$/);
  view = match ? migrationView(decodeURIComponent(match[1]), store) : listView(store);
  fill(main, view.element);
  document.title = match ? `${decodeURIComponent(match[1])} · Switchyard` : "Migrations · Switchyard";
  // Move focus to the new page's heading, as a full page load would, for keyboard and screen
  // reader users; the heading is focusable only programmatically.
  main.querySelector("h1")?.focus({ preventScroll: false });
}

window.addEventListener("hashchange", route);
window.addEventListener("switchyard:unauthenticated", () => {
  if (store.me) endSession("Your token was refused (revoked or unknown). Sign in again.");
});
window.addEventListener("switchyard:offline", () => {
  if (store.me) setBanner("Cannot reach the Switchyard server. Retrying…");
});
// A request that failed while the stream stayed up raised the banner; the next success clears
// it. While the stream is down, the stream's own status owns the banner.
window.addEventListener("switchyard:online", () => {
  if (live) setBanner(null);
});
document.getElementById("signout").addEventListener("click", () => endSession("Signed out."));
document.getElementById("skip").addEventListener("click", () => main.focus());
setInterval(() => refreshTimes(main), 15_000);

async function boot() {
  const token = getToken();
  if (!token) {
    endSession(null);
    return;
  }
  try {
    startSession(await api.session());
  } catch (e) {
    endSession(e.status === 401 ? "Your token was refused (revoked or unknown). Sign in again." : `Could not check your token: ${e.message}`);
  }
}

boot();
