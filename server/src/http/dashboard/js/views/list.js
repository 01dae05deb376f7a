// The migrations list: every migration's stage and front from the live feed, with the facts
// that need extra calls (instances, traffic, gate, backfill) fetched per migration in the
// background, a few at a time, refreshed on each change and every 20 s.

import { h, fill, timeAgo } from "../dom.js";
import { percent, stageLabel } from "../format.js";
import { alerts, fleet, gather } from "../insights.js";

const REFRESH_MS = 20_000;
const PARALLEL = 3;

export function listView(store) {
  const facts = new Map();
  const rows = new Map();
  const body = h("tbody");
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  const table = h(
    "table",
    { class: "migrations" },
    h("caption", { class: "visually-hidden", text: "Migrations, their rollout, gate, clients and alerts" }),
    h(
      "thead",
      {},
      h("tr", {}, ["Migration", "Stage and front", "Gate", "Clients applied", "Alerts"].map((t) => h("th", { scope: "col", text: t }))),
    ),
    body,
  );
  const element = h(
    "section",
    { class: "page" },
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1", text: "Migrations" }), summary),
    h("div", { class: "table-wrap" }, table),
  );

  const render = () => {
    if (!store.loaded) {
      rows.clear();
      fill(body, h("tr", {}, h("td", { colspan: 5, class: "muted", text: "Loading…" })));
      return;
    }
    const all = [...store.migrations.values()].sort(byAttention(store.vocabulary));
    fill(summary, `${all.length} migration${all.length === 1 ? "" : "s"} · snapshot version ${store.version}`);
    if (all.length === 0) {
      rows.clear();
      fill(body, h("tr", {}, h("td", { colspan: 5 }, "No migrations yet. Create one with ", h("code", { text: "switchyard migration create KEY --reason …" }), ".")));
      return;
    }
    const wanted = all.map((m) => updateRow(rows, m, facts.get(m.key), store.vocabulary));
    for (const k of rows.keys()) {
      if (!store.migrations.has(k)) rows.delete(k);
    }
    // Rows are kept and updated in place, and moved only when the order changes, so a refresh
    // never takes keyboard focus off a link.
    const shown = [...body.children];
    if (shown.length !== wanted.length || shown.some((tr, i) => tr !== wanted[i])) body.replaceChildren(...wanted);
  };

  // Fetch queue: keys to refresh, worked off PARALLEL at a time so a long list does not flood
  // the server (or the browser's six connections, one of which the live feed holds).
  const queue = new Set();
  let running = 0;
  let destroyed = false;
  const pump = () => {
    while (!destroyed && running < PARALLEL && queue.size > 0) {
      const key = queue.values().next().value;
      queue.delete(key);
      const m = store.migrations.get(key);
      if (!m) continue;
      running += 1;
      gather(m)
        .then((f) => {
          facts.set(key, f);
          render();
        })
        .catch(() => {})
        .finally(() => {
          running -= 1;
          pump();
        });
    }
  };
  const refresh = (keys) => {
    for (const k of keys) queue.add(k);
    pump();
  };

  const unsubscribe = store.subscribe((key) => {
    render();
    refresh(key ? [key] : store.migrations.keys());
  });
  const timer = setInterval(() => refresh(store.migrations.keys()), REFRESH_MS);
  render();
  if (store.loaded) refresh(store.migrations.keys());

  return {
    element,
    destroy() {
      destroyed = true;
      unsubscribe();
      clearInterval(timer);
    },
  };
}

/** Migrations in motion first (by stage, furthest along first), finished ones last. */
function byAttention(vocabulary) {
  const rank = (m) => (m.stage === "contracted" ? 100 : m.stage === "off" ? 50 : -vocabulary.stageIndex(m.stage));
  return (a, b) => rank(a) - rank(b) || a.key.localeCompare(b.key);
}

/** The row of a migration, created once and refilled (all but its link) on every update. */
function updateRow(rows, m, f, vocabulary) {
  let r = rows.get(m.key);
  if (!r) {
    const link = h("a", { href: `#/m/${encodeURIComponent(m.key)}`, class: "key", text: m.key });
    r = {
      info: h("div"),
      front: h("td", { "data-label": "Stage" }),
      gate: h("td", { "data-label": "Gate" }),
      clients: h("td", { "data-label": "Clients" }),
      alerts: h("td", { "data-label": "Alerts" }),
    };
    r.tr = h("tr", {}, h("th", { scope: "row", "data-label": "Migration" }, link, r.info), r.front, r.gate, r.clients, r.alerts);
    rows.set(m.key, r);
  }
  const details = [m.description, m.owner && `owner ${m.owner}`].filter(Boolean).join(" · ");
  fill(r.info, details && h("div", { class: "sub", text: details }), h("div", { class: "sub" }, "changed ", timeAgo(m.updated_at_ms)));
  fill(r.front, frontCell(m, vocabulary.prevStage(m.stage)));
  fill(r.gate, gateCell(m, f));
  fill(r.clients, clientsCell(m, f));
  fill(r.alerts, alertsCell(m, f));
  return r.tr;
}

function frontCell(m, prev) {
  const label =
    m.stage === "contracted" || m.stage === "off" || m.rollout_bp === 10000 || !prev
      ? `${stageLabel(m.stage)} · ${percent(m.rollout_bp)}`
      : `${stageLabel(m.stage)} · ${percent(m.rollout_bp)} (rest ${stageLabel(prev)})`;
  const meter = h("span", { class: "meter", "aria-hidden": "true" }, h("span", { class: "meter-fill" }));
  meter.firstChild.style.width = `${m.rollout_bp / 100}%`;
  return h("div", { class: "front" }, h("span", { class: ["stage-pill", `stage-${m.stage}`], text: stageLabel(m.stage) }), meter, h("span", { class: "visually-hidden", text: label }), h("span", { class: "front-pct", "aria-hidden": "true", text: percent(m.rollout_bp) }));
}

function gateCell(m, f) {
  if (m.stage === "contracted") return h("span", { class: "ok", text: "Contracted" });
  if (m.stage !== "complete") return h("span", { class: "muted", text: "Not at complete yet" });
  if (!f?.gate) return h("span", { class: "muted", text: "…" });
  if (f.gate.passed) return h("span", { class: "ok", text: "✓ Passes: old shape may be dropped" });
  const failing = f.gate.checks.filter((c) => !c.passed);
  // Only the soak left: not a problem, just time; say when it ends.
  if (failing.length === 1 && failing[0].id === "soak" && f.gate.soak_ends_at_ms) {
    return h("span", { class: "warn", title: failing[0].evidence }, "Soaking: passes ", timeAgo(f.gate.soak_ends_at_ms));
  }
  return h("span", { class: "bad", title: failing.map((c) => `${c.id}: ${c.remedy}`).join("\n"), text: `✗ ${failing.length} of ${f.gate.checks.length} checks failing` });
}

function clientsCell(m, f) {
  if (!f?.instances) return h("span", { class: "muted", text: "…" });
  const { live, applied } = fleet(m, f.instances.instances);
  if (live.length === 0) return h("span", { class: "muted", text: "no live clients" });
  const all = applied.length === live.length;
  return h("span", { class: all ? "ok" : "warn", text: `${applied.length}/${live.length} on v${m.version}` });
}

function alertsCell(m, f) {
  if (!f) return h("span", { class: "muted", text: "…" });
  const list = alerts(m, f);
  if (list.length === 0) return h("span", { class: "muted", text: "None" });
  return h("ul", { class: "alerts" }, list.map((a) => h("li", { class: `alert-${a.level}`, text: a.text })));
}
