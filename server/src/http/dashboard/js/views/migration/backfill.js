// Backfill progress from the runners' checkpoints: status, rows, rate, ETA, whether the runner
// holds for the database's health (and why), the settings set on the server, and the pause or
// resume button when the server says one applies and the token may operate.

import { api } from "../../api.js";
import { fill, h, timeAgo } from "../../dom.js";
import { count, span } from "../../format.js";
import { isStalled } from "../../insights.js";

// The settings set with `switchyard backfill set`, as people write them; 0 turns a threshold off.
const SETTINGS = [
  ["batch_size", "batch size", (v) => count(v)],
  ["max_rows_per_second", "max rows/s", (v) => (v ? count(v) : "off")],
  ["max_replica_lag_ms", "max replica lag", (v) => (v ? `${v / 1000} s` : "off")],
  ["max_replica_lag_bytes", "max replica lag", (v) => (v ? bytes(v) : "off")],
  ["max_wal_bytes_per_second", "max WAL", (v) => (v ? `${bytes(v)}/s` : "off")],
  ["batch_target_ms", "batch target", (v) => (v ? `${v} ms` : "off")],
  ["yield_to_blocked_sessions", "yield to blocked sessions", (v) => (v ? "on" : "off")],
  ["hold_during_autovacuum", "hold during autovacuum", (v) => (v ? "on" : "off")],
];

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function settingsText(settings) {
  const parts = SETTINGS.filter(([k]) => settings?.[k] != null).map(([k, label, show]) => `${label} ${show(settings[k])}`);
  return parts.length ? parts.join(", ") : "the runner's own";
}

// The settings form: each field left empty keeps the stored value. Raw units (rows, ms,
// bytes) as the API takes them, named in each label.
const FORM_NUMBERS = [
  ["batch_size", "Batch size (rows)", 1],
  ["max_rows_per_second", "Max rows per second (0: no limit)", 0],
  ["max_replica_lag_ms", "Max replica lag, ms (0: off)", 0],
  ["max_replica_lag_bytes", "Max replica lag, bytes (0: off)", 0],
  ["max_wal_bytes_per_second", "Max WAL, bytes per second (0: off)", 0],
  ["batch_target_ms", "Batch target, ms (0: off)", 0],
];
const FORM_SWITCHES = [
  ["yield_to_blocked_sessions", "Yield to blocked sessions"],
  ["hold_during_autovacuum", "Hold during autovacuum"],
];

function settingsForm(current) {
  const fields = [];
  const read = [];
  for (const [name, label, min] of FORM_NUMBERS) {
    const id = `bf-set-${name}`;
    const input = h("input", { id, name, type: "number", min, step: name === "max_rows_per_second" ? "any" : 1, inputmode: "numeric", placeholder: current?.[name] != null ? String(current[name]) : "runner's own" });
    fields.push(h("div", { class: "field" }, h("label", { for: id, text: label }), input));
    read.push(() => (input.value === "" ? [] : [[name, Number(input.value)]]));
  }
  for (const [name, label] of FORM_SWITCHES) {
    const id = `bf-set-${name}`;
    const select = h(
      "select",
      { id, name },
      h("option", { value: "", text: current?.[name] == null ? "unchanged (runner's own)" : `unchanged (${current[name] ? "on" : "off"})` }),
      h("option", { value: "on", text: "on" }),
      h("option", { value: "off", text: "off" }),
    );
    fields.push(h("div", { class: "field" }, h("label", { for: id, text: label }), select));
    read.push(() => (select.value === "" ? [] : [[name, select.value === "on"]]));
  }
  return { fields, values: () => Object.fromEntries(read.flatMap((r) => r())) };
}

// What each steering event asks before it is sent.
const STEER = {
  backfill_paused: { button: "Pause backfill…", title: "Pause the backfill?", text: "Runners stop between batches; a running statement finishes first.", confirm: "Pause" },
  backfill_resumed: { button: "Resume backfill…", title: "Resume the backfill?", text: "Runners continue with their next batch.", confirm: "Resume" },
};

export function backfillCard(ctx, act) {
  const element = h("section", { class: "card", "aria-labelledby": "backfill-title" });
  let steer = null; // the pause or resume event the button sends
  // One persistent button (its label and action follow the state) so a poll does not take
  // keyboard focus away from it.
  const pauseButton = h("button", { type: "button", class: "btn" });
  pauseButton.addEventListener("click", () => {
    const event = steer;
    act({
      title: STEER[event].title,
      body: [h("p", { text: STEER[event].text })],
      confirmLabel: STEER[event].confirm,
      send: (v, reason) => api.record(ctx.key, event, v, reason),
      done: (n) => `Backfill ${n.backfill.paused ? "paused" : "resumed"} (version ${n.version}).`,
    });
  });

  // Thresholds and pace, changed while the backfill runs: its runner applies them at its next batch.
  const settingsButton = h("button", { type: "button", class: "btn", text: "Change settings…" });
  settingsButton.addEventListener("click", () => {
    const form = settingsForm(ctx.facts.backfill?.settings);
    act({
      title: "Change the backfill's settings?",
      body: [h("p", { text: "Runners apply them at their next batch. Leave a field empty to keep its value." }), ...form.fields],
      confirmLabel: "Change settings",
      versioned: false,
      reasonLabel: "Reason (kept with the settings)",
      send: async (_version, reason) => {
        const settings = form.values();
        if (Object.keys(settings).length === 0) throw new Error("Nothing to change: give at least one setting.");
        ctx.facts.backfill = await api.backfillSettings(ctx.key, settings, reason);
        render();
        return null;
      },
      done: () => "Backfill settings changed; runners apply them at their next batch.",
    });
  });

  const render = () => {
    const m = ctx.current();
    if (!m) return;
    if (!m.has_backfill) {
      element.hidden = true;
      return;
    }
    element.hidden = false;
    const b = ctx.facts.backfill;
    const title = h("h2", { id: "backfill-title", text: "Backfill" });
    if (!b) return fill(element, title, h("p", { class: "muted", text: b === null ? "Loading…" : "Progress is unavailable right now." }));
    const total = b.rows_total_estimate;
    const pct = total > 0 ? Math.min(100, (100 * b.rows_done) / total) : b.status === "complete" ? 100 : 0;
    const status = b.status === "running" ? (b.paused ? "paused" : isStalled(m, b) ? "stalled" : "running") : b.status.replace("_", " ");
    const running = b.status === "running";
    // Older servers send no throttle: not throttled.
    const throttle = b.throttle ?? { throttled: false, reason: "", since_ms: null, throttled_seconds: 0 };
    const held = running && throttle.throttled;
    steer = ctx.vocabulary.offered(m, ctx.store.can).find((e) => Object.hasOwn(STEER, e.name))?.name ?? null;
    fill(
      element,
      title,
      h(
        "p",
        {},
        h("span", { class: ["badge", `bf-${status.replace(" ", "-")}`], text: status }),
        held && h("span", { class: ["badge", "bf-throttled"], text: "throttled" }),
        b.runner && h("span", { class: "muted", text: ` runner ${b.runner}` }),
      ),
      held && h("p", { class: "bf-throttle-reason", text: `Holding for the database: ${throttle.reason}${throttle.since_ms ? ` (since ${new Date(throttle.since_ms).toLocaleTimeString()})` : ""}` }),
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
          ["Held in all", throttle.throttled_seconds >= 1 ? span(throttle.throttled_seconds) : "—"],
          ["Settings", settingsText(b.settings)],
          // timeAgo gives an element (a <time> that keeps itself current): a child, not text.
          b.settings_changed && ["Settings changed", h("span", {}, timeAgo(b.settings_changed.at_ms), ` by ${b.settings_changed.by}: ${b.settings_changed.reason}`)],
        ]
          .filter(Boolean)
          .map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v))),
      ),
      (steer || ctx.store.can.operate) && h("div", { class: "steps" }, steer && pauseButton, ctx.store.can.operate && settingsButton),
    );
    if (steer) fill(pauseButton, STEER[steer].button);
  };

  return { element, render };
}
