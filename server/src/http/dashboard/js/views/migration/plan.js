// The migration's plan: whether it runs, its steps stage by stage with where the front is, what
// it does next with a countdown to it, why a step waits, and pause / resume.

import { api } from "../../api.js";
import { fill, h } from "../../dom.js";
import { percent, span, stageLabel } from "../../format.js";

const THEN = { advance: " then advance", approve: " then advance once approved", stop: " then stop" };

export function planCard(ctx, act) {
  const { key, store, current } = ctx;
  const element = h("section", { class: "card plan", "aria-labelledby": "plan-title" });
  const countdown = h("span", { class: "plan-countdown", "aria-live": "off" });
  let dueAt = null;

  const tick = () => {
    if (dueAt === null) return fill(countdown);
    const left = (dueAt - Date.now()) / 1000;
    fill(countdown, left > 0 ? ` · in ${span(left)}` : " · due now");
  };

  const render = () => {
    const p = ctx.facts.plan;
    const m = current();
    const title = h("h2", { id: "plan-title", text: "Plan" });
    if (p === null || !m) return fill(element, title, h("p", { class: "muted", text: "Loading…" }));
    if (p === undefined) return fill(element, title, h("p", { class: "muted", text: "The plan is unavailable right now." }));
    if (p === false) {
      dueAt = null;
      return fill(
        element,
        title,
        h("p", { class: "muted" }, "No plan: this migration moves only when someone moves it. Set one with ", h("code", { text: `switchyard plan set ${key} --stage …` }), "."),
      );
    }
    dueAt = p.status === "running" && p.next.at_ms ? p.next.at_ms : null;
    const stages = h(
      "ol",
      { class: "plan-stages" },
      p.stages.map((s) =>
        h(
          "li",
          { "data-stage": s.stage },
          h("span", { class: ["stage-pill", `stage-${s.stage}`], text: stageLabel(s.stage) }),
          h(
            "span",
            { class: "plan-steps" },
            s.steps.map((st) => {
              const state = stepState(ctx.vocabulary, m, s.stage, st.rollout_bp);
              return h("span", { class: ["plan-step", `step-${state}`], title: st.hold_seconds ? `held ${span(st.hold_seconds)}` : "no hold", text: `${state === "done" ? "✓ " : ""}${percent(st.rollout_bp)}` });
            }),
          ),
          h("span", { class: "muted", text: THEN[s.then] ?? ` then ${s.then}` }),
        ),
      ),
    );
    const g = p.guardrails;
    const canOperate = store.can.operate;
    const pause = p.status === "running" && canOperate && h("button", { type: "button", class: "btn btn-small", text: "Pause plan…", onclick: () => change(true) });
    const resume = (p.status === "paused" || p.status === "halted") && canOperate && h("button", { type: "button", class: "btn btn-small", text: "Resume plan…", onclick: () => change(false) });
    fill(
      element,
      h("div", { class: "section-head" }, title, h("span", { class: ["badge", `plan-${p.status}`], text: p.status })),
      h("p", { class: "hint", text: p.status_reason }),
      stages,
      h("p", { class: "plan-next", "data-kind": p.next.kind }, h("strong", { text: p.next.kind === "done" ? "Done: " : "Next: " }), p.next.description, countdown),
      p.waiting && p.waiting !== p.next.description && h("p", { class: "plan-waiting warn", text: `Waiting: ${p.waiting}` }),
      h("details", { class: "plan-guardrails" }, h("summary", { text: `Guardrails (on a breach: ${g.on_breach})` }), h("ul", {}, guardrailItems(g).map((t) => h("li", { text: t })))),
      h("p", { class: "hint", text: `Steps are made in the name of ${p.set_by}.` }),
      (pause || resume) && h("div", { class: "steps" }, pause, resume),
    );
    tick();
  };

  const change = (pausing) =>
    act({
      title: pausing ? "Pause the plan?" : "Resume the plan?",
      body: [h("p", { text: pausing ? "No step is taken until the plan is resumed." : "The plan carries on from wherever the front is now." })],
      confirmLabel: pausing ? "Pause plan" : "Resume plan",
      versioned: false,
      send: (_v, reason) => (pausing ? api.pausePlan(key, reason) : api.resumePlan(key, reason)),
      done: (p) => {
        ctx.facts.plan = p;
        render();
        return pausing ? "The plan is paused." : "The plan runs again.";
      },
    });

  return { element, render, tick };
}

/** The thresholds in effect, one sentence each. */
function guardrailItems(g) {
  const pct = (r) => `${+(r * 100).toFixed(3)}%`;
  return [
    `Shadow reads differing: at most ${pct(g.max_mismatch_ratio)} (judged from ${g.min_comparisons} comparisons).`,
    `New-shape errors: at most ${pct(g.max_new_error_ratio)}, and at most ${g.max_error_ratio_vs_old}× the old shape's (judged from ${g.min_operations} operations).`,
    `New-shape p99 latency: at most ${g.max_p99_ratio_vs_old}× the old shape's.`,
    `A live instance behind the last change: at most ${span(g.max_behind_seconds)}.`,
    `A running backfill with no batch, or holding itself back: at most ${span(g.max_backfill_stall_seconds)}.`,
    `The target database unobserved: at most ${span(g.max_unobserved_seconds)}; a caller outside the migration touching the old shape once it stops being written halts at once.`,
  ];
}

/** Where a planned step stands against the front: done, current (the front is there), or ahead. */
function stepState(vocabulary, m, stage, rolloutBp) {
  const here = vocabulary.stageIndex(m.stage);
  const there = vocabulary.stageIndex(stage);
  if (there < here) return "done";
  if (there > here) return "ahead";
  if (rolloutBp < m.rollout_bp) return "done";
  return rolloutBp === m.rollout_bp ? "current" : "ahead";
}
