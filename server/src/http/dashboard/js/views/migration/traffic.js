// Traffic clients report for this migration: totals, then per-minute charts of operations,
// errors and shadow mismatches, and the p95 latency, over a range the user picks.

import { fill, h } from "../../dom.js";
import { lineChart } from "../../charts.js";
import { count, micros, ratio } from "../../format.js";

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
    // The bucket holding the p95, drawn at its bound and named with the server's label.
    const p95 = (side) => quantile(side.latency, 0.95);
    const p95Height = (side) => (p95(side) === null ? null : ctx.vocabulary.latencyHeight(p95(side)));
    const p95Label = (side) => (p95(side) === null ? "–" : ctx.vocabulary.latencyLabel(p95(side)));
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

  return { element, render, minutes: () => minutes };
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
