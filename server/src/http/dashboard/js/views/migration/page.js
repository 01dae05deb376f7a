// One migration's page: the header and alerts, then one card each for the stage track, the
// controls (ramp, advance, step back, record), the gate's checklist with the soak countdown,
// backfill progress (pause/resume), client instances, traffic charts, what the target database
// saw of the old shape, and the audit log.
//
// The migration record comes from the live feed, so the track, the controls and the version a
// change expects follow every change without a reload. The rest (instances, traffic, backfill
// checkpoints, gate, database usage, audit) is not in the feed: it is fetched when the
// migration changes and polled. Each card is built once and refilled by its render(), so an
// update replaces content without moving keyboard focus.

import { api } from "../../api.js";
import { announce, fill, h, timeAgo } from "../../dom.js";
import { warnOpenDialog } from "../../dialog.js";
import { duration, percent, stageLabel } from "../../format.js";
import { alerts } from "../../insights.js";
import { actions } from "./actions.js";
import { auditCard } from "./audit.js";
import { backfillCard } from "./backfill.js";
import { controlsCard } from "./controls.js";
import { gateCard } from "./gate.js";
import { instancesCard } from "./instances.js";
import { trackCard } from "./track.js";
import { trafficCard } from "./traffic.js";
import { usageCard } from "./usage.js";
import { mismatchesCard } from "./mismatches.js";
import { timelineCard } from "./timeline.js";
import { planCard } from "./plan.js";
import { approvalsCard } from "../approvals.js";

const POLL_MS = 10_000;

export function migrationView(key, store) {
  let destroyed = false;
  let shownVersion = 0;
  let renderedVersion = 0;
  // What the cards read: the record from the store, and the facts fetched beside it (null while
  // loading, undefined when unavailable).
  const ctx = {
    key,
    store,
    vocabulary: store.vocabulary,
    current: () => store.migrations.get(key),
    facts: { instances: null, traffic: null, trafficHour: null, backfill: null, gate: null, usage: null, mismatches: null, audit: null, history: null, actions: null, plan: null, approvals: null },
    isDestroyed: () => destroyed,
  };
  const { facts, current } = ctx;

  const publish = (m, own) => {
    if (own) shownVersion = m.version;
    store.migrations.set(m.key, m);
    store.emit(m.key);
  };
  const changes = actions(ctx, publish);
  const track = trackCard(ctx);
  const controls = controlsCard(ctx, changes.act, changes.result);
  const gate = gateCard(ctx);
  const backfill = backfillCard(ctx, changes.act);
  const instances = instancesCard(ctx);
  const traffic = trafficCard(ctx, () => loadTraffic());
  const usage = usageCard(ctx);
  const mismatches = mismatchesCard(ctx);
  const audit = auditCard(ctx);
  const timeline = timelineCard(ctx);
  const planBox = planCard(ctx, changes.act);
  const approvalsBox = approvalsCard(ctx, changes.act);
  // A request filed or decided here: the card and the plan show it at once, not at the next poll.
  ctx.approvalsChanged = () => {
    load("approvals", () => api.approvals(key));
    load("plan", async () => (await api.plans()).plans.find((p) => p.key === key) ?? false);
  };

  const head = h("div", { class: "page-head" });
  const alertBox = h("div", { class: "alerts-box" });
  const columns = h(
    "div",
    { class: "columns" },
    // Three groups: on a wide screen the side group is a column beside the other two; on a
    // phone they stack in this order, so the gate comes before the long traffic and audit.
    h("div", { class: "col-top" }, track.element, controls.element, timeline.element),
    h("div", { class: "col-side" }, approvalsBox.element, planBox.element, gate.element, backfill.element, instances.element),
    h("div", { class: "col-bottom" }, traffic.element, mismatches.element, usage.element, audit.element),
  );
  const element = h("article", { class: "page migration-page" }, h("a", { href: "#/", class: "back", text: "← All migrations" }), head, alertBox, columns);

  // The heading is kept across updates: the router focuses it, and a live change must not
  // drop that focus.
  const heading = h("h1", { tabindex: "-1", class: "key", text: key });
  const renderHead = (m) => {
    const meta = [
      ["Owner", m.owner || "—"],
      ["Entity", m.entity_kind || "—"],
      ["Services", m.expected_services.length ? m.expected_services.join(", ") : "any"],
      ["Database", m.target_database || "—"],
      ["Drops", m.old_shape && m.old_shape.length ? m.old_shape.join(", ") : "—"],
      ["Soak", duration(m.soak_seconds)],
      // Retire before drop: chosen at creation; while retired the old shape is renamed in the
      // database and the front is held.
      ["Retire probation", m.retire_probation_seconds ? duration(m.retire_probation_seconds) : "—"],
      ["Retired", m.retired_at_ms ? timeAgo(m.retired_at_ms) : "—"],
      ["Version", String(m.version)],
      ["Changed", timeAgo(m.updated_at_ms)],
    ];
    fill(
      head,
      h(
        "div",
        { class: "title-row" },
        heading,
        h("span", { class: ["stage-pill", `stage-${m.stage}`], text: stageLabel(m.stage) }),
        !store.can.operate && h("span", { class: "badge", text: store.can.recordSchema ? "schema events only" : "read-only" }),
      ),
      m.description && h("p", { class: "description", text: m.description }),
      h("dl", { class: "meta" }, meta.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v)))),
    );
  };

  const renderAlerts = () => {
    const m = current();
    if (!m) return;
    const list = alerts(m, { instances: facts.instances, traffic: facts.trafficHour, backfill: facts.backfill });
    // A halted plan is the first thing to see: the guardrail, its figures and the window.
    if (facts.plan && facts.plan.status === "halted") list.unshift({ level: "error", text: `Plan halted: ${facts.plan.status_reason}. Look at the traffic below, then resume the plan or take over.` });
    fill(alertBox, list.length > 0 && h("ul", { class: "alerts alerts-page", "aria-label": "Alerts" }, list.map((a) => h("li", { class: `alert-${a.level}`, text: a.text }))));
  };
  // What each fact redraws when it arrives.
  const sections = {
    gate: gate.render,
    usage: usage.render,
    mismatches: mismatches.render,
    backfill: backfill.render,
    instances: instances.render,
    audit: audit.render,
    alerts: renderAlerts,
    actions: controls.render,
    plan: planBox.render,
    approvals: approvalsBox.render,
    history: () => {
      timeline.render();
      traffic.render();
    },
  };

  const render = () => {
    const m = current();
    if (!store.loaded) {
      fill(head, heading, h("p", { class: "muted", text: "Loading…" }));
      return;
    }
    if (!m) {
      fill(head, heading, h("p", { class: "callout callout-error", text: `There is no migration ${key}.` }));
      columns.hidden = true;
      return;
    }
    columns.hidden = false;
    // The record's sections are rebuilt only when it changes, so a poll never takes focus
    // from the heading or a control.
    if (m.version !== renderedVersion) {
      renderedVersion = m.version;
      renderHead(m);
      track.render();
      controls.render();
      for (const section of Object.values(sections)) section();
    }
  };

  const load = async (name, fetcher) => {
    const before = facts[name];
    try {
      facts[name] = await fetcher();
    } catch (e) {
      if (e.status === 401 || destroyed) return;
      // Keep the last good data on a transient failure; show "unavailable" only if there is none.
      if (!facts[name] || e.status === 404) facts[name] = undefined;
    }
    // An unchanged answer redraws nothing, so a poll does not take keyboard focus or reset what
    // the user opened (the gate's evaluation time and the usage report's default start change on
    // every call and do not count).
    if (destroyed) return;
    if (sameFacts(before, facts[name])) {
      if (name === "gate") gate.reevaluated();
      return;
    }
    sections[name]?.();
    renderAlerts();
  };
  const loadTraffic = async () => {
    const minutes = traffic.minutes();
    await load("traffic", () => api.traffic(key, minutes));
    // Alerts speak of the last hour whatever range the charts show.
    if (minutes === 60) facts.trafficHour = facts.traffic;
    else await load("trafficHour", () => api.traffic(key, 60));
    if (!destroyed) traffic.render();
  };
  const loadRecordFacts = () => {
    load("gate", () => api.gate(key));
    load("usage", () => api.usage(key));
    load("mismatches", () => api.mismatches(key));
    load("instances", () => api.instances(key));
    if (current()?.has_backfill) load("backfill", () => api.backfill(key));
    // From the list of plans (never a 404 for a migration without one); false: no plan.
    load("plan", async () => (await api.plans()).plans.find((p) => p.key === key) ?? false);
    load("approvals", () => api.approvals(key));
  };
  const loadAll = () => {
    load("audit", () => api.audit(key));
    load("history", () => api.history(key));
    if (store.can.operate) load("actions", () => api.actions(key));
    loadRecordFacts();
  };
  const poll = () => {
    loadRecordFacts();
    // The rules' verdicts depend on the fleet too (rules 3 and 5), which changes without a
    // change to the migration.
    if (store.can.operate) load("actions", () => api.actions(key));
    loadTraffic();
  };

  const unsubscribe = store.subscribe((changed) => {
    if (changed !== null && changed !== key) return;
    const m = current();
    if (m && shownVersion && m.version > shownVersion) {
      warnOpenDialog(`This migration changed while this dialog was open (now version ${m.version}, ${stageLabel(m.stage)} ${percent(m.rollout_bp)}). Confirming will be refused as stale (rule 8): cancel, review the new state, and try again.`);
      if (changed === key) announce(`${key} changed: now ${stageLabel(m.stage)} at ${percent(m.rollout_bp)}, version ${m.version}.`);
      // The outcome of this page's last action described the state before this change.
      changes.clear();
    }
    if (m) shownVersion = m.version;
    render();
    if (m) loadAll();
  });
  const timer = setInterval(poll, POLL_MS);
  const ticker = setInterval(() => {
    gate.tick();
    planBox.tick();
  }, 1000);

  shownVersion = current()?.version ?? 0;
  render();
  traffic.render();
  if (current()) loadAll();
  loadTraffic();

  return {
    element,
    destroy() {
      destroyed = true;
      unsubscribe();
      clearInterval(timer);
      clearInterval(ticker);
    },
  };
}

function sameFacts(a, b) {
  const strip = (v) => {
    if (!v || typeof v !== "object") return v;
    if ("evaluated_at_ms" in v) return { ...v, evaluated_at_ms: 0 };
    if ("since_ms" in v && "statements" in v) return { ...v, since_ms: 0 };
    return v;
  };
  return a !== null && a !== undefined && JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}
