// Time at each stage: the migration's history as a bar of periods (one per stage it entered,
// in order, sized by how long it stayed) and the same as a list, from the audit history.

import { fill, h, timeAgo } from "../../dom.js";
import { span, stageLabel } from "../../format.js";

export function timelineCard(ctx) {
  const body = h("div", { class: "timeline-body" });
  const element = h("section", { class: "card", "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title", text: "Time at each stage" }), body);

  const render = () => {
    const history = ctx.facts.history;
    const m = ctx.current();
    if (!m) return;
    if (history === null) return fill(body, h("p", { class: "muted", text: "Loading…" }));
    if (history === undefined) return fill(body, h("p", { class: "muted", text: "The history is unavailable right now." }));
    const periods = stagePeriods(history.entries, m, Date.now());
    const total = periods.reduce((sum, p) => sum + (p.until - p.from), 0) || 1;
    const bar = h(
      "div",
      { class: "timeline-bar", "aria-hidden": "true" },
      periods.map((p) => {
        const segment = h("span", { class: ["timeline-segment", `stage-${p.stage}`], title: `${stageLabel(p.stage)}: ${span((p.until - p.from) / 1000)}` });
        // Every period stays visible, however short beside the others.
        segment.style.flexGrow = String(Math.max((p.until - p.from) / total, 0.02));
        return segment;
      }),
    );
    const list = h(
      "ol",
      { class: "timeline-list" },
      periods.map((p) =>
        h(
          "li",
          { "data-stage": p.stage },
          h("span", { class: ["stage-pill", `stage-${p.stage}`], text: stageLabel(p.stage) }),
          " ",
          h("span", { class: "timeline-span", text: p.current ? `${span((p.until - p.from) / 1000)} so far` : span((p.until - p.from) / 1000) }),
          h("span", { class: "muted" }, " · entered ", timeAgo(p.from)),
        ),
      ),
    );
    fill(body, bar, list, history.next_before_id && h("p", { class: "hint", text: "Earlier history is not shown: the first period starts at the oldest change shown." }));
  };

  return { element, render };
}

/**
 * The stages the migration went through, in order, each with when it entered and left (the
 * current one until `now`). `entries` are audit records newest first.
 */
export function stagePeriods(entries, m, now) {
  const periods = [];
  for (const e of [...entries].reverse()) {
    if (!e.after) continue;
    if (!e.before) {
      periods.push({ stage: e.after.stage, from: e.at_ms });
    } else if (e.before.stage !== e.after.stage) {
      if (periods.length === 0) periods.push({ stage: e.before.stage, from: e.before.stage_since_ms ?? e.before.updated_at_ms });
      periods.push({ stage: e.after.stage, from: e.at_ms });
    }
  }
  if (periods.length === 0) periods.push({ stage: m.stage, from: m.stage_since_ms ?? m.updated_at_ms });
  return periods.map((p, i) => {
    const last = i === periods.length - 1;
    return { ...p, until: last ? Math.max(now, p.from) : periods[i + 1].from, current: last };
  });
}
