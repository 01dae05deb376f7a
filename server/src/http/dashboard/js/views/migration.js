// One migration's page: the stage track with the front, the controls (ramp, advance, step
// back, record, backfill pause/resume), alerts, traffic charts, backfill progress, the gate's
// checklist with the soak countdown, client instances and the audit log.
//
// The migration record comes from the live feed, so the track, the controls and the version a
// change expects follow every change without a reload. The rest (instances, traffic, backfill
// checkpoints, gate) is not in the feed: it is fetched when the migration changes and polled.

import { api, ApiError, NetworkError } from "../api.js";
import { announce, fill, h, timeAgo } from "../dom.js";
import { confirmChange, warnOpenDialog } from "../dialog.js";
import { lineChart } from "../charts.js";
import { count, duration, micros, parsePercent, percent, ratio, span, stageLabel } from "../format.js";
import { alerts, isStalled } from "../insights.js";

const POLL_MS = 10_000;
const PRESETS = [1, 5, 25, 50, 100];
const RANGES = [
  [60, "Last hour"],
  [360, "Last 6 hours"],
  [1440, "Last 24 hours"],
];
const CHECK_LABELS = {
  soak: "Soak period at complete 100%",
  clients_applied: "Every live client on this state",
  no_old_shape_traffic: "No old-shape reads or writes",
  no_shadow_mismatch: "No shadow mismatch in the last live window",
  new_shape_errors: "New-shape errors under the limit",
  backfill: "Backfill complete",
  contracted: "Contracted",
};

export function migrationView(key, store) {
  const current = () => store.migrations.get(key);
  const vocabulary = store.vocabulary;
  const facts = { instances: null, traffic: null, trafficHour: null, backfill: null, gate: null, audit: null };
  let minutes = 60;
  let destroyed = false;
  let shownVersion = 0;
  let renderedVersion = 0;

  // Sections, built once; each has a render function that refills it from `current()` and
  // `facts`, so a live update replaces content without moving keyboard focus.
  const head = h("div", { class: "page-head" });
  const alertBox = h("div", { class: "alerts-box" });
  const track = h("section", { class: "card", "aria-labelledby": "track-title" });
  const controls = h("section", { class: "card controls", "aria-labelledby": "controls-title" });
  const traffic = h("section", { class: "card", "aria-labelledby": "traffic-title" });
  const audit = h("section", { class: "card", "aria-labelledby": "audit-title" });
  const gate = h("section", { class: "card", "aria-labelledby": "gate-title" });
  const backfill = h("section", { class: "card", "aria-labelledby": "backfill-title" });
  const instances = h("section", { class: "card", "aria-labelledby": "instances-title" });
  const element = h(
    "article",
    { class: "page migration-page" },
    h("a", { href: "#/", class: "back", text: "← All migrations" }),
    head,
    alertBox,
    // Three groups: on a wide screen the side group is a column beside the other two; on a
    // phone they stack in this order, so the gate comes before the long traffic and audit.
    h(
      "div",
      { class: "columns" },
      h("div", { class: "col-top" }, track, controls),
      h("div", { class: "col-side" }, gate, backfill, instances),
      h("div", { class: "col-bottom" }, traffic, audit),
    ),
  );

  // --- header and track ---------------------------------------------------------------------

  // The heading is kept across updates: the router focuses it, and a live change must not
  // drop that focus.
  const heading = h("h1", { tabindex: "-1", class: "key", text: key });
  const renderHead = (m) => {
    const meta = [
      ["Owner", m.owner || "—"],
      ["Entity", m.entity_kind || "—"],
      ["Services", m.expected_services.length ? m.expected_services.join(", ") : "any"],
      ["Soak", duration(m.soak_seconds)],
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

  const renderTrack = (m) => {
    const at = vocabulary.stageIndex(m.stage);
    const prev = vocabulary.prevStage(m.stage);
    const steps = vocabulary.stages.map((stage, i) => {
      const state = i < at ? "done" : i === at ? "current" : "todo";
      const li = h("li", { class: ["step", `step-${state}`], "aria-current": i === at ? "step" : undefined }, h("span", { class: "step-dot", "aria-hidden": "true" }), h("span", { class: "step-name", text: stageLabel(stage) }));
      if (i === at && stage !== "contracted") {
        const bar = h("span", { class: "step-bar", "aria-hidden": "true" }, h("span", { class: "step-bar-fill" }));
        bar.firstChild.style.width = `${m.rollout_bp / 100}%`;
        li.append(bar, h("span", { class: "step-pct", text: percent(m.rollout_bp) }));
      }
      return li;
    });
    fill(
      track,
      h("h2", { id: "track-title", text: "Stage and rollout front" }),
      h("ol", { class: "track" }, steps),
      h("p", { class: "front-text", "data-testid": "front" }, frontSentence(m, prev)),
      h(
        "p",
        { class: "facts" },
        fact("Expand DDL", m.expand_applied ? "applied" : "not recorded", m.expand_applied),
        m.has_backfill && fact("Backfill", m.backfill.status.replace("_", " ") + (m.backfill.paused ? " (paused)" : ""), m.backfill.status === "complete"),
        m.old_shape_stale && fact("Old shape", "stale (old writes stopped)", false),
      ),
    );
  };

  // --- controls -----------------------------------------------------------------------------

  // Not a live region itself: successes go through the page's announcer, refusals are role=alert.
  const result = h("div", { class: "result" });
  const rampInput = h("input", { id: "ramp-pct", name: "percent", type: "number", min: 0, max: 100, step: 0.01, inputmode: "decimal", required: true, "aria-describedby": "ramp-help" });
  let rampDirty = false;
  rampInput.addEventListener("input", () => {
    rampDirty = true;
    rampInput.setCustomValidity("");
  });
  const rampLabel = h("label", { for: "ramp-pct" });
  const rampHelp = h("p", { id: "ramp-help", class: "hint" });
  const rampButton = h("button", { type: "submit", class: "btn btn-primary", text: "Ramp…" });
  const rampForm = h(
    "form",
    { class: "ramp", "aria-label": "Ramp the rollout" },
    rampLabel,
    h(
      "div",
      { class: "ramp-row" },
      h("span", { class: "pct-field" }, rampInput, h("span", { class: "pct-sign", "aria-hidden": "true", text: "%" })),
      rampButton,
    ),
    h(
      "div",
      { class: "presets", role: "group", "aria-label": "Preset percentages" },
      PRESETS.map((p) =>
        h("button", {
          type: "button",
          class: "btn btn-small",
          text: `${p}%`,
          onclick: () => {
            rampInput.value = String(p);
            rampDirty = true;
            rampInput.setCustomValidity("");
            rampButton.focus();
          },
        }),
      ),
    ),
    rampHelp,
  );
  rampForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const m = current();
    const bp = parsePercent(rampInput.value);
    if (bp === null) {
      rampInput.setCustomValidity("Enter a percentage from 0 to 100, with at most two decimals.");
      rampInput.reportValidity();
      return;
    }
    act({
      title: `Ramp ${stageLabel(m.stage)} to ${percent(bp)}?`,
      body: [changeLine(`${stageLabel(m.stage)} ${percent(m.rollout_bp)}`, `${stageLabel(m.stage)} ${percent(bp)}`), rampConsequence(m, vocabulary.prevStage(m.stage), bp)],
      confirmLabel: `Ramp to ${percent(bp)}`,
      danger: bp < m.rollout_bp,
      send: (v, reason) => api.rollout(key, bp, v, reason),
      done: (n) => `Rollout of ${stageLabel(n.stage)} is now ${percent(n.rollout_bp)} (version ${n.version}).`,
      after: () => {
        rampDirty = false;
      },
    });
  });

  const advanceButton = h("button", { type: "button", class: "btn", "aria-describedby": "advance-help" });
  const advanceHelp = h("span", { id: "advance-help", class: "hint" });
  const retreatButton = h("button", { type: "button", class: "btn btn-danger-outline", "aria-describedby": "retreat-help" });
  const retreatHelp = h("span", { id: "retreat-help", class: "hint" });
  advanceButton.addEventListener("click", () => {
    const m = current();
    const next = vocabulary.nextStage(m.stage);
    act({
      title: `Advance to ${stageLabel(next)}?`,
      body: [changeLine(`${stageLabel(m.stage)} ${percent(m.rollout_bp)}`, `${stageLabel(next)} 0%`), h("p", { text: `The front moves to ${stageLabel(next)} at 0%: no entity changes yet; ramp it from there.` })],
      confirmLabel: `Advance to ${stageLabel(next)}`,
      send: (v, reason) => api.advance(key, v, reason),
      done: (n) => `Advanced to ${stageLabel(n.stage)} at ${percent(n.rollout_bp)} (version ${n.version}).`,
    });
  });
  retreatButton.addEventListener("click", () => {
    const m = current();
    const prev = vocabulary.prevStage(m.stage);
    act({
      title: `Step back to ${stageLabel(prev)}?`,
      body: [changeLine(`${stageLabel(m.stage)} ${percent(m.rollout_bp)}`, `${stageLabel(prev)} 100%`), h("p", { text: "Every entity is already at the previous stage; this makes it the current one so you can ramp it down." })],
      confirmLabel: `Step back to ${stageLabel(prev)}`,
      danger: true,
      send: (v, reason) => api.retreat(key, v, reason),
      done: (n) => `Stepped back to ${stageLabel(n.stage)} at ${percent(n.rollout_bp)} (version ${n.version}).`,
    });
  });

  const eventSelect = h("select", { id: "event", name: "event" });
  const recordForm = h(
    "form",
    { class: "record", "aria-label": "Record an event" },
    h("label", { for: "event", text: "Record an event" }),
    h("div", { class: "ramp-row" }, eventSelect, h("button", { type: "submit", class: "btn", text: "Record…" })),
  );
  recordForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const event = eventSelect.value;
    const { label } = vocabulary.events.find((v) => v.name === event);
    act({
      title: `Record “${label}”?`,
      body: [h("p", {}, "Records ", h("strong", { text: label.toLowerCase() }), ` for ${key}. Events are facts the safety rules rely on: record only what has happened.`)],
      confirmLabel: "Record",
      danger: event === "contracted",
      send: (v, reason) => api.record(key, event, v, reason),
      done: (n) => `Recorded ${label.toLowerCase()} (version ${n.version}).`,
    });
  });

  const renderControls = (m) => {
    if (!store.can.recordSchema) {
      controls.hidden = true;
      return;
    }
    const final = m.stage === "contracted";
    const next = vocabulary.nextStage(m.stage);
    const prev = vocabulary.prevStage(m.stage);
    fill(rampLabel, `Rollout of ${stageLabel(m.stage)}, in percent of ${m.entity_kind || "entities"}`);
    fill(rampHelp, `Now ${percent(m.rollout_bp)}. Entities below the front are at ${stageLabel(m.stage)}${prev ? `, the rest at ${stageLabel(prev)}` : ""}.`);
    if (!rampDirty && document.activeElement !== rampInput) rampInput.value = String(m.rollout_bp / 100);
    fill(advanceButton, next ? `Advance to ${stageLabel(next)}…` : "Advance");
    advanceButton.disabled = !next || final;
    fill(advanceHelp, !next ? "" : m.rollout_bp === 10000 ? "Ready: the front is at 100%." : `Needs ${stageLabel(m.stage)} at 100% (rule 1).`);
    fill(retreatButton, prev ? `Step back to ${stageLabel(prev)}…` : "Step back");
    retreatButton.disabled = !prev || final;
    fill(retreatHelp, !prev ? "" : m.rollout_bp === 0 ? "Ready: the front is at 0%." : `Needs ${stageLabel(m.stage)} at 0% (rule 1).`);
    // Pause and resume have their own button on the backfill card.
    const events = vocabulary.offered(m, store.can).filter((e) => e.milestone);
    const selected = eventSelect.value;
    fill(eventSelect, events.map(({ name, label }) => h("option", { value: name, text: label, selected: name === selected })));
    recordForm.hidden = events.length === 0;
    // A gate token can only record; with nothing to record there is nothing to control.
    controls.hidden = !store.can.operate && events.length === 0;
    if (final) {
      controls.dataset.layout = "final";
      fill(controls, h("h2", { id: "controls-title", text: "Controls" }), h("p", { class: "muted", text: "Contracted is final: nothing can change this migration." }), result);
      return;
    }
    // The form set depends on whether there is anything to ramp; rebuilt only when that flips,
    // so ordinary updates keep focus where it is.
    const layout = m.stage === "off" ? "off" : "ramp";
    if (controls.dataset.layout !== layout) {
      controls.dataset.layout = layout;
      fill(
        controls,
        h("h2", { id: "controls-title", text: "Controls" }),
        store.can.operate && m.stage !== "off" && rampForm,
        store.can.operate && m.stage === "off" && h("p", { class: "hint", text: "Off has nothing behind it to ramp: record the expand DDL, then advance to dual write and ramp from there." }),
        store.can.operate && h("div", { class: "steps" }, h("div", {}, advanceButton, advanceHelp), h("div", {}, retreatButton, retreatHelp)),
        recordForm,
        result,
      );
    }
  };

  /** One change: confirm with a reason, send it with the version the page shows, report the outcome. */
  async function act({ title, body, confirmLabel, danger, send, done, after }) {
    const expected = current().version;
    const reason = await confirmChange({
      title,
      body: [...body, h("p", { class: "hint", text: `Expects version ${expected}: if someone changes the migration first, this change is refused (rule 8).` })],
      confirmLabel,
      danger,
    });
    if (reason === null || destroyed) return;
    showResult("busy", "Sending…");
    try {
      const m = await send(expected, reason);
      after?.();
      // The response is the committed state: show it now rather than wait for the feed.
      if ((current()?.version ?? 0) < m.version) {
        shownVersion = m.version;
        store.migrations.set(m.key, m);
        store.emit(m.key);
      }
      const text = done(m);
      showResult("ok", text);
      announce(text);
    } catch (e) {
      // A refusal names the newer state it was judged against: show it now rather than wait for
      // the feed. The error's copy lacks the events that apply, so the record is fetched whole.
      if (e instanceof ApiError && e.current && e.current.version > (current()?.version ?? 0)) {
        const fresh = await api.migration(key).catch(() => null);
        if (fresh && fresh.version > (current()?.version ?? 0)) {
          store.migrations.set(fresh.key, fresh);
          store.emit(fresh.key);
        }
      }
      const text = explain(e);
      showResult("error", text.title, text.detail);
    }
  }

  const showResult = (level, title, detail) => {
    fill(
      result,
      h(
        "div",
        { class: ["callout", level === "error" ? "callout-error" : level === "ok" ? "callout-ok" : ""], role: level === "error" ? "alert" : undefined, "data-testid": "result" },
        h("strong", { text: title }),
        detail && h("p", { class: "detail", text: detail }),
      ),
    );
  };

  // --- traffic --------------------------------------------------------------------------------

  const rangeSelect = h("select", { id: "range", "aria-label": "Time range" }, RANGES.map(([v, label]) => h("option", { value: v, text: label })));
  rangeSelect.addEventListener("change", () => {
    minutes = Number(rangeSelect.value);
    loadTraffic();
  });
  const chartsBox = h("div", { class: "charts" });
  fill(traffic, h("div", { class: "section-head" }, h("h2", { id: "traffic-title", text: "Traffic reported by clients" }), rangeSelect), chartsBox);

  const renderTraffic = () => {
    const t = facts.traffic;
    if (t === null) return fill(chartsBox, h("p", { class: "muted", text: "Loading…" }));
    if (t === undefined) return fill(chartsBox, h("p", { class: "muted", text: "Traffic is unavailable right now." }));
    const to = Math.floor(Date.now() / 60_000) * 60_000;
    const from = to - (minutes - 1) * 60_000;
    const byMinute = new Map(t.minutes.map((row) => [row.minute_ms, row]));
    const series = (pick) => {
      const values = [];
      for (let at = from; at <= to; at += 60_000) {
        const row = byMinute.get(at);
        values.push(row ? pick(row) : null);
      }
      return values;
    };
    const ops = (side) => side.reads + side.writes;
    const total = t.total;
    // The bucket holding the p95, drawn at its bound and named with the server's label.
    const p95 = (side) => quantile(side.latency, 0.95);
    const p95Height = (side) => (p95(side) === null ? null : vocabulary.latencyHeight(p95(side)));
    const p95Label = (side) => (p95(side) === null ? "–" : vocabulary.latencyLabel(p95(side)));
    const totals = h(
      "dl",
      { class: "totals" },
      [
        ["Old operations", count(ops(total.old))],
        ["New operations", count(ops(total.new))],
        ["New-shape errors", `${count(total.new.errors)} (${ratio(total.new.errors, ops(total.new))})`],
        ["Mismatches", `${count(total.mismatches)} of ${count(total.comparisons)} compared`],
      ].map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v }))),
    );
    if (t.minutes.length === 0) {
      return fill(chartsBox, totals, h("p", { class: "muted", text: "No client reported traffic for this migration in this period." }));
    }
    fill(
      chartsBox,
      totals,
      lineChart({
        title: "Operations per minute",
        from,
        to,
        series: [
          { name: "old shape", cls: "s-old", values: series((r) => ops(r.old)) },
          { name: "new shape", cls: "s-new", values: series((r) => ops(r.new)) },
        ],
        format: compact,
        integer: true,
        summary: `${count(ops(total.old))} old and ${count(ops(total.new))} new operations in the period.`,
      }),
      lineChart({
        title: "Errors and shadow mismatches per minute",
        from,
        to,
        series: [
          { name: "old errors", cls: "s-old", values: series((r) => r.old.errors) },
          { name: "new errors", cls: "s-new", values: series((r) => r.new.errors) },
          { name: "mismatches", cls: "s-bad", values: series((r) => r.mismatches) },
        ],
        format: compact,
        integer: true,
        summary: `${count(total.old.errors)} old errors, ${count(total.new.errors)} new errors, ${count(total.mismatches)} mismatches.`,
      }),
      lineChart({
        title: "Latency p95 (bucket upper bound)",
        from,
        to,
        series: [
          { name: "old shape", cls: "s-old", values: series((r) => p95Height(r.old)) },
          { name: "new shape", cls: "s-new", values: series((r) => p95Height(r.new)) },
        ],
        format: (v) => (v === 0 ? "0" : micros(Math.round(v))),
        summary: `p95 over the period: old ${p95Label(total.old)}, new ${p95Label(total.new)}.`,
      }),
    );
  };

  // --- gate -------------------------------------------------------------------------------------

  const soakText = h("span", { "aria-live": "off" });
  let gateOpen = false; // the folded checklist stays open across refreshes once opened
  const renderGate = () => {
    const g = facts.gate;
    const title = h("h2", { id: "gate-title", text: "Contract gate" });
    if (!g) return fill(gate, title, h("p", { class: "muted", text: g === null ? "Loading…" : "The gate is unavailable right now." }));
    // Before complete the gate cannot pass and its failures are expected, not alarming: say so
    // and keep the checklist one click away.
    const early = !g.passed && vocabulary.stageIndex(current().stage) < vocabulary.stageIndex("complete");
    const checklist = h(
        "ul",
        { class: "checklist" },
        g.checks.map((c) =>
          h(
            "li",
            { class: c.passed ? "check-pass" : "check-fail" },
            h("span", { class: "check-icon", "aria-hidden": "true", text: c.passed ? "✓" : "✗" }),
            h(
              "div",
              {},
              h("span", { class: "check-name" }, h("span", { class: "visually-hidden", text: c.passed ? "Passed: " : "Failed: " }), CHECK_LABELS[c.id] ?? c.id),
              h("p", { class: "evidence", text: c.evidence }),
              c.remedy && h("p", { class: "remedy", text: `→ ${c.remedy}` }),
            ),
          ),
        ),
      );
    fill(
      gate,
      title,
      early
        ? h("p", { class: "verdict verdict-early", text: "Not yet: the gate applies once the migration is at complete 100%" })
        : h("p", { class: ["verdict", g.passed ? "verdict-pass" : "verdict-fail"] }, g.passed ? "✓ Passes: the old shape may be dropped" : "✗ Fails: the old shape must not be dropped yet"),
      g.soak_ends_at_ms && h("p", { class: "soak" }, soakText),
      early
        ? h("details", { open: gateOpen, ontoggle: (e) => (gateOpen = e.target.open) }, h("summary", { text: `Show the ${g.checks.length} checks` }), checklist)
        : checklist,
      h("p", { class: "hint" }, "Evaluated ", timeAgo(g.evaluated_at_ms)),
    );
    tickSoak();
  };
  const tickSoak = () => {
    const ends = facts.gate?.soak_ends_at_ms;
    if (!ends) return;
    const left = (ends - Date.now()) / 1000;
    soakText.title = new Date(ends).toString();
    fill(soakText, left > 0 ? `Soak ends in ${span(left)}` : "Soak period complete");
  };

  // --- backfill -------------------------------------------------------------------------------

  const renderBackfill = (m) => {
    if (!m.has_backfill) {
      backfill.hidden = true;
      return;
    }
    backfill.hidden = false;
    const b = facts.backfill;
    const title = h("h2", { id: "backfill-title", text: "Backfill" });
    if (!b) return fill(backfill, title, h("p", { class: "muted", text: b === null ? "Loading…" : "Progress is unavailable right now." }));
    const total = b.rows_total_estimate;
    const pct = total > 0 ? Math.min(100, (100 * b.rows_done) / total) : b.status === "complete" ? 100 : 0;
    const status = b.status === "running" ? (b.paused ? "paused" : isStalled(m, b) ? "stalled" : "running") : b.status.replace("_", " ");
    const running = b.status === "running";
    const toggle = vocabulary.offered(m, store.can).find((e) => e.name === "backfill_paused" || e.name === "backfill_resumed");
    fill(
      backfill,
      title,
      h("p", {}, h("span", { class: ["badge", `bf-${status.replace(" ", "-")}`], text: status }), b.runner && h("span", { class: "muted", text: ` runner ${b.runner}` })),
      h("label", { for: "bf-progress", class: "visually-hidden", text: "Backfill progress" }),
      h("progress", { id: "bf-progress", max: 100, value: pct.toFixed(1) }),
      h(
        "dl",
        { class: "meta" },
        [
          ["Rows", total ? `${count(b.rows_done)} of ~${count(total)} (${pct.toFixed(1)}%)` : count(b.rows_done)],
          ["Rate", running && b.rate_rows_per_second > 0 ? `${count(Math.round(b.rate_rows_per_second))} rows/s` : "—"],
          ["ETA", running && !b.paused && b.eta_seconds != null ? span(b.eta_seconds) : "—"],
          ["Checkpoint", b.updated_at_ms ? timeAgo(b.updated_at_ms) : "none yet"],
        ].map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v))),
      ),
      toggle && h("div", { class: "steps" }, pauseButton),
    );
    fill(pauseButton, toggle?.name === "backfill_resumed" ? "Resume backfill…" : "Pause backfill…");
  };
  // One persistent button (its label and action follow the state) so a poll does not take
  // keyboard focus away from it.
  const pauseButton = h("button", { type: "button", class: "btn" });
  pauseButton.addEventListener("click", () =>
    current().backfill.paused
      ? backfillEvent("backfill_resumed", "Resume the backfill?", "Runners continue with their next batch.")
      : backfillEvent("backfill_paused", "Pause the backfill?", "Runners stop between batches; a running statement finishes first."),
  );
  const backfillEvent = (event, title, text) =>
    act({
      title,
      body: [h("p", { text })],
      confirmLabel: event === "backfill_paused" ? "Pause" : "Resume",
      send: (v, reason) => api.record(key, event, v, reason),
      done: (n) => `Backfill ${n.backfill.paused ? "paused" : "resumed"} (version ${n.version}).`,
    });

  // --- instances ------------------------------------------------------------------------------

  const renderInstances = (m) => {
    const title = h("h2", { id: "instances-title", text: "Client instances" });
    const list = facts.instances?.instances;
    if (!list) return fill(instances, title, h("p", { class: "muted", text: list === null ? "Loading…" : "Instances are unavailable right now." }));
    const live = list.filter((i) => i.live);
    const applied = live.filter((i) => i.applied_version >= m.version);
    fill(
      instances,
      title,
      h("p", { class: live.length && applied.length === live.length ? "ok" : "muted" }, live.length === 0 ? "No live client instance names this migration." : `${applied.length} of ${live.length} live instances applied version ${m.version}.`),
      list.length > 0 &&
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "instances" },
            h("thead", {}, h("tr", {}, ["Service", "Instance", "Applied", "Last seen"].map((t) => h("th", { scope: "col", text: t })))),
            h(
              "tbody",
              {},
              [...list]
                .sort((a, b) => a.service.localeCompare(b.service) || a.instance_id.localeCompare(b.instance_id))
                .map((i) =>
                  h(
                    "tr",
                    { class: i.live ? "" : "stale" },
                    h("td", { text: i.service }),
                    h("td", { class: "mono", text: i.instance_id }),
                    h("td", {}, h("span", { class: i.applied_version >= m.version ? "ok" : "warn", text: `v${i.applied_version}${i.applied_version >= m.version ? " ✓" : " behind"}` })),
                    h("td", {}, timeAgo(i.last_seen_ms), !i.live && h("div", { class: "muted small", text: "not live" })),
                  ),
                ),
            ),
          ),
        ),
    );
  };

  // --- audit ------------------------------------------------------------------------------------

  const auditBody = h("tbody");
  const moreButton = h("button", { type: "button", class: "btn btn-small", text: "Load older entries" });
  moreButton.addEventListener("click", async () => {
    moreButton.disabled = true;
    try {
      const page = await api.audit(key, facts.audit.next_before_id);
      facts.audit = { entries: [...facts.audit.entries, ...page.entries], next_before_id: page.next_before_id };
      renderAudit();
    } catch {
      moreButton.disabled = false;
    }
  });
  fill(
    audit,
    h("h2", { id: "audit-title", text: "Audit log" }),
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "audit" }, h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Change", "Reason"].map((t) => h("th", { scope: "col", text: t })))), auditBody),
    ),
    moreButton,
  );
  const renderAudit = () => {
    const a = facts.audit;
    if (!a) {
      fill(auditBody, h("tr", {}, h("td", { colspan: 5, class: "muted", text: a === null ? "Loading…" : "The audit log is unavailable right now." })));
      moreButton.hidden = true;
      return;
    }
    fill(
      auditBody,
      a.entries.map((e) =>
        h(
          "tr",
          {},
          h("td", { "data-label": "When" }, timeAgo(e.at_ms)),
          h("td", { "data-label": "Who", text: e.actor }),
          h("td", { "data-label": "Action" }, h("code", { text: e.action })),
          h("td", { "data-label": "Change", text: describeChange(e.before, e.after) }),
          h("td", { "data-label": "Reason", class: "reason", text: e.reason }),
        ),
      ),
    );
    moreButton.hidden = !a.next_before_id;
    moreButton.disabled = false;
  };

  // --- data -------------------------------------------------------------------------------------

  const render = () => {
    const m = current();
    if (!store.loaded) {
      fill(head, heading, h("p", { class: "muted", text: "Loading…" }));
      return;
    }
    if (!m) {
      fill(head, heading, h("p", { class: "callout callout-error", text: `There is no migration ${key}.` }));
      element.querySelector(".columns").hidden = true;
      return;
    }
    element.querySelector(".columns").hidden = false;
    // The record's sections are rebuilt only when it changes, so a poll never takes focus
    // from the heading or a control.
    if (m.version !== renderedVersion) {
      renderedVersion = m.version;
      renderHead(m);
      renderTrack(m);
      renderControls(m);
      for (const section of Object.values(sections)) section();
    }
  };

  const renderAlerts = () => {
    const m = current();
    if (!m) return;
    const list = alerts(m, { instances: facts.instances, traffic: facts.trafficHour, backfill: facts.backfill });
    fill(alertBox, list.length > 0 && h("ul", { class: "alerts alerts-page", "aria-label": "Alerts" }, list.map((a) => h("li", { class: `alert-${a.level}`, text: a.text }))));
  };
  // What each fact redraws when it arrives.
  const sections = {
    gate: () => renderGate(),
    backfill: () => current() && renderBackfill(current()),
    instances: () => current() && renderInstances(current()),
    audit: () => renderAudit(),
    alerts: renderAlerts,
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
    // the user opened (the gate's evaluation time changes on every call and does not count).
    if (destroyed) return;
    if (sameFacts(before, facts[name])) {
      const evaluated = name === "gate" && gate.querySelector("time[data-ms]");
      if (evaluated) evaluated.replaceWith(timeAgo(facts.gate.evaluated_at_ms));
      return;
    }
    sections[name]?.();
    renderAlerts();
  };
  const loadTraffic = async () => {
    await load("traffic", () => api.traffic(key, minutes));
    // Alerts speak of the last hour whatever range the charts show.
    if (minutes === 60) facts.trafficHour = facts.traffic;
    else await load("trafficHour", () => api.traffic(key, 60));
    if (!destroyed) renderTraffic();
  };
  const loadAll = () => {
    load("audit", () => api.audit(key));
    load("gate", () => api.gate(key));
    load("instances", () => api.instances(key));
    if (current()?.has_backfill) load("backfill", () => api.backfill(key));
  };
  const poll = () => {
    load("gate", () => api.gate(key));
    load("instances", () => api.instances(key));
    if (current()?.has_backfill) load("backfill", () => api.backfill(key));
    loadTraffic();
  };

  const unsubscribe = store.subscribe((changed) => {
    if (changed !== null && changed !== key) return;
    const m = current();
    if (m && shownVersion && m.version > shownVersion) {
      warnOpenDialog(`This migration changed while this dialog was open (now version ${m.version}, ${stageLabel(m.stage)} ${percent(m.rollout_bp)}). Confirming will be refused as stale (rule 8): cancel, review the new state, and try again.`);
      if (changed === key) announce(`${key} changed: now ${stageLabel(m.stage)} at ${percent(m.rollout_bp)}, version ${m.version}.`);
      // The outcome of this page's last action described the state before this change.
      fill(result);
    }
    if (m) shownVersion = m.version;
    render();
    if (m) loadAll();
  });
  const timer = setInterval(poll, POLL_MS);
  const ticker = setInterval(tickSoak, 1000);

  shownVersion = current()?.version ?? 0;
  render();
  renderTraffic();
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
  const strip = (v) => (v && typeof v === "object" && "evaluated_at_ms" in v ? { ...v, evaluated_at_ms: 0 } : v);
  return a !== null && a !== undefined && JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

function fact(name, value, good) {
  return h("span", { class: ["fact", good ? "ok" : "warn"] }, `${name}: `, h("strong", { text: value }));
}

function changeLine(before, after) {
  return h("p", { class: "change-line" }, h("span", { class: "before", text: before }), h("span", { "aria-hidden": "true", text: " → " }), h("span", { class: "visually-hidden", text: " to " }), h("span", { class: "after", text: after }));
}

function rampConsequence(m, prev, bp) {
  const delta = bp - m.rollout_bp;
  if (delta === 0) return h("p", { text: "The rollout does not change." });
  const moved = percent(Math.abs(delta));
  const who = m.entity_kind ? `${m.entity_kind} entities` : "entities";
  return h(
    "p",
    {
      text:
        delta > 0
          ? `${moved} of ${who} move forward from ${stageLabel(prev ?? m.stage)} to ${stageLabel(m.stage)}.`
          : `${moved} of ${who} move back from ${stageLabel(m.stage)} to ${stageLabel(prev ?? m.stage)}.`,
    },
  );
}

function frontSentence(m, prev) {
  const who = m.entity_kind ? `${m.entity_kind} entities` : "entities";
  if (m.stage === "contracted") return "Contracted: the old shape was dropped. This is final.";
  if (m.rollout_bp === 10000 || !prev) return `All ${who} are at ${stageLabel(m.stage)}.`;
  if (m.rollout_bp === 0) return `All ${who} are at ${stageLabel(prev)}; ramp to move them to ${stageLabel(m.stage)}.`;
  return `${percent(m.rollout_bp)} of ${who} are at ${stageLabel(m.stage)}; the rest are at ${stageLabel(prev)}.`;
}

/** Why a change failed, in the server's words (a refused rule's message names the rule). */
function explain(e) {
  if (e instanceof NetworkError) {
    return { title: "Could not reach the server", detail: "The change may or may not have been made: check the audit log once the connection is back." };
  }
  if (!(e instanceof ApiError)) return { title: "Something went wrong", detail: String(e.message || e) };
  switch (e.code) {
    case "rule_refused":
      return { title: `Refused by rule ${e.rule}`, detail: e.message };
    case "stale_version":
      return { title: "Someone changed this migration first (rule 8)", detail: `${e.message}. The page now shows the current state.` };
    case "permission_denied":
      return { title: "Your token may not do this", detail: e.message };
    case "not_applicable":
      return { title: "Not applicable now", detail: e.message };
    default:
      return { title: `Refused (${e.code})`, detail: e.message };
  }
}

function describeChange(before, after) {
  if (!after) return "";
  const front = (m) => `${stageLabel(m.stage)} ${percent(m.rollout_bp)}`;
  if (!before) return `created at ${front(after)}`;
  const parts = [];
  if (before.stage !== after.stage || before.rollout_bp !== after.rollout_bp) parts.push(`${front(before)} → ${front(after)}`);
  if (before.expand_applied !== after.expand_applied) parts.push("expand applied");
  const bb = before.backfill ?? {};
  const ab = after.backfill ?? {};
  if (bb.status !== ab.status) parts.push(`backfill ${String(bb.status).replace("_", " ")} → ${String(ab.status).replace("_", " ")}`);
  if (bb.paused !== ab.paused) parts.push(ab.paused ? "backfill paused" : "backfill resumed");
  if (before.old_shape_stale && !after.old_shape_stale) parts.push("old shape repaired");
  return parts.join("; ") || "—";
}

/** The index of the histogram bucket holding quantile q, or null without samples. */
function quantile(histogram, q) {
  const total = histogram.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(total * q));
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i];
    if (seen >= rank) return i;
  }
  return null;
}

function compact(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e7 ? 0 : 1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(v * 10) / 10);
}
