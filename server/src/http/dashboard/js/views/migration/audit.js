// The audit log: who changed what and why, newest first, with older pages on demand.

import { api } from "../../api.js";
import { fill, h, timeAgo } from "../../dom.js";
import { percent, stageLabel } from "../../format.js";

export function auditCard(ctx) {
  const auditBody = h("tbody");
  const moreButton = h("button", { type: "button", class: "btn btn-small", text: "Load older entries" });
  moreButton.addEventListener("click", async () => {
    moreButton.disabled = true;
    try {
      const page = await api.audit(ctx.key, ctx.facts.audit.next_before_id);
      ctx.facts.audit = { entries: [...ctx.facts.audit.entries, ...page.entries], next_before_id: page.next_before_id };
      render();
    } catch {
      moreButton.disabled = false;
    }
  });
  const element = h(
    "section",
    { class: "card", "aria-labelledby": "audit-title" },
    h("h2", { id: "audit-title", text: "Audit log" }),
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "audit" }, h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Change", "Reason"].map((t) => h("th", { scope: "col", text: t })))), auditBody),
    ),
    moreButton,
  );
  const render = () => {
    const a = ctx.facts.audit;
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

  return { element, render };
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
