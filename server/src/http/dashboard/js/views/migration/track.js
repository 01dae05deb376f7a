// The stage track: every stage in the server's order, the current one with its rollout front,
// a sentence saying where entities are, and the recorded facts (expand DDL, backfill, old shape).

import { fill, h } from "../../dom.js";
import { percent, stageLabel } from "../../format.js";

export function trackCard(ctx) {
  const element = h("section", { class: "card", "aria-labelledby": "track-title" });

  const render = () => {
    const m = ctx.current();
    const at = ctx.vocabulary.stageIndex(m.stage);
    const prev = ctx.vocabulary.prevStage(m.stage);
    const steps = ctx.vocabulary.stages.map((stage, i) => {
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
      element,
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

  return { element, render };
}

function fact(name, value, good) {
  return h("span", { class: ["fact", good ? "ok" : "warn"] }, `${name}: `, h("strong", { text: value }));
}

function frontSentence(m, prev) {
  const who = m.entity_kind ? `${m.entity_kind} entities` : "entities";
  if (m.stage === "contracted") return "Contracted: the old shape was dropped. This is final.";
  if (m.rollout_bp === 10000 || !prev) return `All ${who} are at ${stageLabel(m.stage)}.`;
  if (m.rollout_bp === 0) return `All ${who} are at ${stageLabel(prev)}; ramp to move them to ${stageLabel(m.stage)}.`;
  return `${percent(m.rollout_bp)} of ${who} are at ${stageLabel(m.stage)}; the rest are at ${stageLabel(prev)}.`;
}
