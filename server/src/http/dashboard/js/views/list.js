// The migrations list: every migration's stage and front from the live feed, with the facts
// that need extra calls (instances, traffic, gate, backfill) fetched per migration in the
// background, a few at a time, refreshed on each change and every 20 s.

import { h, fill, timeAgo } from "../dom.js";
import { count, percent, span, stageLabel } from "../format.js";
import { alerts, fleet, gather } from "../insights.js";
import { approvalsInbox } from "./approvals.js";

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
      h("tr", {}, ["Migration", "Stage and front", "At stage", "Backfill", "Gate", "Clients applied", "Alerts"].map((t) => h("th", { scope: "col", text: t }))),
    ),
    body,
  );
  // Filter (by key, description or owner, and by stage) and sort, kept in the page's state only.
  const search = h("input", { id: "list-filter", type: "search", placeholder: "key, description or owner", autocomplete: "off" });
  const stageFilter = h("select", { id: "list-stage" }, h("option", { value: "", text: "every stage" }), (store.vocabulary?.stages ?? []).map((st) => h("option", { value: st, text: stageLabel(st) })));
  const sortBy = h(
    "select",
    { id: "list-sort" },
    [
      ["attention", "needing attention first"],
      ["key", "key"],
      ["at-stage", "longest at its stage first"],
      ["changed", "most recently changed first"],
    ].map(([v, t]) => h("option", { value: v, text: t })),
  );
  for (const control of [search, stageFilter, sortBy]) control.addEventListener("input", () => render());
  const tools = h(
    "div",
    { class: "list-tools", role: "search" },
    // Labels beside their controls, not around them: a wrapping label's name would take in
    // the select's options.
    h("div", { class: "tool" }, h("label", { for: "list-filter", text: "Filter" }), search),
    h("div", { class: "tool" }, h("label", { for: "list-stage", text: "Stage" }), stageFilter),
    h("div", { class: "tool" }, h("label", { for: "list-sort", text: "Sort by" }), sortBy),
  );
  const inbox = approvalsInbox();
  const element = h(
    "section",
    { class: "page" },
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1", text: "Migrations" }), summary),
    inbox.element,
    tools,
    h("div", { class: "table-wrap" }, table),
  );

  const render = () => {
    if (!store.loaded) {
      rows.clear();
      fill(body, h("tr", {}, h("td", { colspan: 7, class: "muted", text: "Loading…" })));
      return;
    }
    const every = [...store.migrations.values()];
    const needle = search.value.trim().toLowerCase();
    const all = every
      .filter((m) => !stageFilter.value || m.stage === stageFilter.value)
      .filter((m) => !needle || [m.key, m.description, m.owner].some((t) => String(t ?? "").toLowerCase().includes(needle)))
      .sort(ORDERS[sortBy.value]?.(store.vocabulary) ?? byAttention(store.vocabulary));
    const shownCount = all.length === every.length ? "" : ` (${all.length} shown)`;
    fill(summary, `${every.length} migration${every.length === 1 ? "" : "s"}${shownCount} · snapshot version ${store.version}`);
    if (every.length === 0) {
      rows.clear();
      fill(body, h("tr", {}, h("td", { colspan: 7 }, "No migrations yet. Create one with ", h("code", { text: "switchyard migration create KEY --reason …" }), ".")));
      return;
    }
    if (all.length === 0) {
      fill(body, h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No migration matches the filter." })));
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
    inbox.refresh();
  });
  const timer = setInterval(() => {
    refresh(store.migrations.keys());
    inbox.refresh();
  }, REFRESH_MS);
  render();
  if (store.loaded) refresh(store.migrations.keys());
  inbox.refresh();

  return {
    element,
    destroy() {
      destroyed = true;
      unsubscribe();
      clearInterval(timer);
    },
  };
}

const stageSince = (m) => m.stage_since_ms ?? m.updated_at_ms;
const ORDERS = {
  attention: byAttention,
  key: () => (a, b) => a.key.localeCompare(b.key),
  "at-stage": () => (a, b) => stageSince(a) - stageSince(b) || a.key.localeCompare(b.key),
  changed: () => (a, b) => b.updated_at_ms - a.updated_at_ms || a.key.localeCompare(b.key),
};

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
      atStage: h("td", { "data-label": "At stage", class: "at-stage" }),
      backfill: h("td", { "data-label": "Backfill" }),
      gate: h("td", { "data-label": "Gate" }),
      clients: h("td", { "data-label": "Clients" }),
      alerts: h("td", { "data-label": "Alerts" }),
    };
    r.tr = h("tr", { "data-key": m.key }, h("th", { scope: "row", "data-label": "Migration" }, link, r.info), r.front, r.atStage, r.backfill, r.gate, r.clients, r.alerts);
    rows.set(m.key, r);
  }
  const details = [m.description, m.owner && `owner ${m.owner}`].filter(Boolean).join(" · ");
  fill(r.info, details && h("div", { class: "sub", text: details }), h("div", { class: "sub" }, "changed ", timeAgo(m.updated_at_ms)));
  fill(r.front, frontCell(m, vocabulary.prevStage(m.stage)));
  fill(r.atStage, h("span", { title: `at ${stageLabel(m.stage)} since ${new Date(stageSince(m)).toLocaleString()}`, text: span((Date.now() - stageSince(m)) / 1000) }));
  fill(r.backfill, backfillCell(m, f));
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

function backfillCell(m, f) {
  if (!m.has_backfill) return h("span", { class: "muted", text: "—" });
  const status = m.backfill?.status ?? "not_started";
  if (status === "complete") return h("span", { class: "ok", text: "✓ complete" });
  if (status !== "running") return h("span", { class: "muted", text: stageLabel(status) });
  const b = f?.backfill;
  if (!b) return h("span", { text: m.backfill.paused ? "running, paused" : "running" });
  const total = Math.max(b.rows_total_estimate, b.rows_done);
  const pct = total > 0 ? Math.min(100, (100 * b.rows_done) / total) : 0;
  const meter = h("span", { class: "meter", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(pct), "aria-label": `backfill ${Math.round(pct)}%` }, h("span", { class: "meter-fill" }));
  meter.firstChild.style.width = `${pct}%`;
  return h("div", { class: "front" }, meter, h("span", { class: "front-pct", text: `${Math.round(pct)}%${b.paused ? " · paused" : ""}` }), h("div", { class: "sub", text: `${count(b.rows_done)} of ~${count(total)} rows` }));
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
