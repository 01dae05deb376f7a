// Traffic clients report for this migration: totals, then per-minute charts of operations,
// errors and shadow mismatches, and the p95 latency, over a range the user picks.

import { fill, h } from "../../dom.js";
import { lineChart } from "../../charts.js";
import { count, micros, percent, ratio, stageLabel } from "../../format.js";
import { timeAgo } from "../../dom.js";

const RANGES = [
  [60, "Last hour"],
  [360, "Last 6 hours"],
  [1440, "Last 24 hours"],
];

/** @param {() => void} onRange called when the user picks another range (see `minutes`) */
export function trafficCard(ctx, onRange) {
  let minutes = RANGES[0][0];
  const rangeSelect = h("select", { id: "range", "aria-label": "Time range" }, RANGES.map(([v, label]) => h("option", { value: v, text: label })));
  rangeSelect.addEventListener("change", () => {
    minutes = Number(rangeSelect.value);
    onRange();
  });
  const chartsBox = h("div", { class: "charts" });
  const element = h(
    "section",
    { class: "card", "aria-labelledby": "traffic-title" },
    h("div", { class: "section-head" }, h("h2", { id: "traffic-title", text: "Traffic reported by clients" }), rangeSelect),
    chartsBox,
  );

  const render = () => {
    const t = ctx.facts.traffic;
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
    // The p95 interpolated within the bucket holding it (linearly between the bucket's bounds,
    // by how far into the bucket its rank falls), as Prometheus's histogram_quantile does.
    const p95 = (side) => quantile(side.latency, 0.95, ctx.vocabulary);
    const p95Height = (side) => p95(side)?.us ?? null;
    // In the open-ended last bucket there is nothing to interpolate: the server's label says it.
    const p95Label = (side) => {
      const q = p95(side);
      if (q === null) return "–";
      return q.open ? ctx.vocabulary.latencyLabel(q.bucket) : `≈ ${micros(Math.round(q.us))}`;
    };
    const markers = changeMarkers(ctx.facts.history, from, to);
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
      servicesTable(t.services),
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
        markers,
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
        markers,
      }),
      lineChart({
        title: "Latency p95 (interpolated within its bucket)",
        markers,
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

  return { element, render, minutes: () => minutes };
}

/**
 * Who still uses the old shape: each reporting service's old and new operations over the
 * period, and when it last touched the old shape.
 */
function servicesTable(services) {
  if (!services || services.length === 0) return null;
  const ops = (side) => side.reads + side.writes;
  const rows = [...services].sort((a, b) => ops(b.old) - ops(a.old) || a.service.localeCompare(b.service));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "services", "aria-label": "Old-shape use per service" },
      h("caption", { text: "Who is still on the old shape" }),
      h("thead", {}, h("tr", {}, ["Service", "Old reads", "Old writes", "New operations", "Last old-shape use"].map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        rows.map((s) =>
          h(
            "tr",
            { class: ops(s.old) > 0 ? "uses-old" : "" },
            h("th", { scope: "row", "data-label": "Service", text: s.service }),
            h("td", { "data-label": "Old reads", text: count(s.old.reads) }),
            h("td", { "data-label": "Old writes", text: count(s.old.writes) }),
            h("td", { "data-label": "New operations", text: count(ops(s.new)) }),
            h("td", { "data-label": "Last old-shape use" }, s.last_old_minute_ms ? timeAgo(s.last_old_minute_ms) : "none in the period"),
          ),
        ),
      ),
    ),
  );
}

/**
 * The traffic changes in the audit history that fall within [from, to]: ramps, advances,
 * step-backs and backfill pauses, each a labelled marker on the charts.
 */
export function changeMarkers(history, from, to) {
  if (!history?.entries) return [];
  const marks = [];
  for (const e of history.entries) {
    if (!e.before || !e.after || e.at_ms < from || e.at_ms > to + 60_000) continue;
    const b = e.before;
    const a = e.after;
    let kind = null;
    let label = null;
    if (a.stage !== b.stage) {
      kind = e.action === "advance" ? "advance" : "back";
      label = `${e.action === "advance" ? "advance" : "step back"} to ${stageLabel(a.stage)}`;
    } else if (a.rollout_bp !== b.rollout_bp) {
      kind = a.rollout_bp > b.rollout_bp ? "ramp" : "back";
      label = `${stageLabel(a.stage)} ${percent(b.rollout_bp)} → ${percent(a.rollout_bp)}`;
    } else if (Boolean(a.backfill?.paused) !== Boolean(b.backfill?.paused)) {
      kind = "pause";
      label = a.backfill.paused ? "backfill paused" : "backfill resumed";
    }
    // A plan's own steps say so: the chart shows which moves no person made.
    if (kind && /^plan (step|rollback): /.test(e.reason)) label = `plan: ${label}`;
    if (kind) marks.push({ at: e.at_ms, kind, label, reason: e.reason, actor: e.actor });
  }
  return marks;
}

/**
 * Quantile q: `us`, interpolated linearly within the bucket holding it, that `bucket`, and
 * whether it is the open-ended last one (no upper bound: `us` is then its lower bound). Null
 * without samples.
 */
export function quantile(histogram, q, vocabulary) {
  const total = histogram.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    if (histogram[i] === 0) continue;
    if (seen + histogram[i] >= rank) {
      const lower = vocabulary.latencyLower(i);
      const upper = vocabulary.latencyBuckets[i].upper_bound_us;
      if (upper == null) return { us: lower, bucket: i, open: true };
      return { us: lower + (upper - lower) * ((rank - seen) / histogram[i]), bucket: i, open: false };
    }
    seen += histogram[i];
  }
  return null;
}

function compact(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e7 ? 0 : 1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(v * 10) / 10);
}
