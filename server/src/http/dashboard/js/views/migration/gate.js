// The contract gate: the verdict, the soak countdown and the checklist with each check's
// evidence and remedy. Before complete the checklist is folded away.

import { fill, h, timeAgo } from "../../dom.js";
import { span } from "../../format.js";

// The server identifies checks and gives their evidence and remedy; the names are the dashboard's
// (the Database usage card names its check with them too).
export const CHECK_LABELS = {
  soak: "Soak period at complete 100%",
  clients_applied: "Every live client on this state",
  no_old_shape_traffic: "No old-shape reads or writes",
  database_usage: "Database saw no old-shape statement",
  no_shadow_mismatch: "No shadow mismatch in the last live window",
  new_shape_errors: "New-shape errors under the limit",
  backfill: "Backfill complete",
  retire_probation: "Retired old shape held its probation",
  contracted: "Contracted",
};

/** One check of the gate as a checklist item: its verdict, name, evidence and remedy. */
export function checkItem(c) {
  return h(
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
  );
}

export function gateCard(ctx) {
  const element = h("section", { class: "card", "aria-labelledby": "gate-title" });
  const soakText = h("span", { "aria-live": "off" });
  let open = false; // the folded checklist stays open across refreshes once opened

  const render = () => {
    const g = ctx.facts.gate;
    const title = h("h2", { id: "gate-title", text: "Contract gate" });
    if (!g) return fill(element, title, h("p", { class: "muted", text: g === null ? "Loading…" : "The gate is unavailable right now." }));
    // Before complete the gate cannot pass and its failures are expected, not alarming: say so
    // and keep the checklist one click away.
    const early = !g.passed && ctx.vocabulary.stageIndex(ctx.current().stage) < ctx.vocabulary.stageIndex("complete");
    const checklist = h(
      "ul",
      { class: "checklist" },
      g.checks.map(checkItem),
    );
    fill(
      element,
      title,
      early
        ? h("p", { class: "verdict verdict-early", text: "Not yet: the gate applies once the migration is at complete 100%" })
        : h("p", { class: ["verdict", g.passed ? "verdict-pass" : "verdict-fail"] }, g.passed ? "✓ Passes: the old shape may be dropped" : "✗ Fails: the old shape must not be dropped yet"),
      g.soak_ends_at_ms && h("p", { class: "soak" }, soakText),
      early
        ? h("details", { open, ontoggle: (e) => (open = e.target.open) }, h("summary", { text: `Show the ${g.checks.length} checks` }), checklist)
        : checklist,
      h("p", { class: "hint" }, "Evaluated ", timeAgo(g.evaluated_at_ms)),
    );
    tick();
  };

  /** Moves the soak countdown on; called every second. */
  const tick = () => {
    const ends = ctx.facts.gate?.soak_ends_at_ms;
    if (!ends) return;
    const left = (ends - Date.now()) / 1000;
    soakText.title = new Date(ends).toString();
    fill(soakText, left > 0 ? `Soak ends in ${span(left)}` : "Soak period complete");
  };

  /** An unchanged answer redraws nothing but when it was evaluated. */
  const reevaluated = () => element.querySelector("time[data-ms]")?.replaceWith(timeAgo(ctx.facts.gate.evaluated_at_ms));

  return { element, render, tick, reevaluated };
}
