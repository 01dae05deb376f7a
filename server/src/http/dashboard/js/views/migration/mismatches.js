// Entities whose shadow reads differed (GET /v1/migrations/KEY/mismatches): clients sample the
// first few mismatches of each report with the entity key and what the application's comparison
// said differed, so an operator can find the pattern and repair those entities (re-run the
// backfill's statement for them; `switchyard mismatches KEY --keys-only` lists the keys).

import { fill, h, timeAgo } from "../../dom.js";
import { count } from "../../format.js";

export function mismatchesCard(ctx) {
  const element = h("section", { class: "card", "aria-labelledby": "mismatches-title" });

  const render = () => {
    const m = ctx.facts.mismatches;
    const title = h("h2", { id: "mismatches-title", text: "Mismatched entities" });
    if (!m) return fill(element, title, h("p", { class: "muted", text: m === null ? "Loading…" : "Mismatch samples are unavailable right now." }));
    if (m.samples.length === 0) return fill(element, title, h("p", { class: "muted", text: "No mismatch sampled: shadow reads agreed (or none were compared)." }));
    fill(
      element,
      title,
      h("p", {}, `${count(m.entities)} entities sampled; the ${m.samples.length} seen most recently:`),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "mismatches" },
          h("thead", {}, h("tr", {}, ["Entity", "Difference", "Seen", "Last seen", "By"].map((t) => h("th", { scope: "col", text: t })))),
          h(
            "tbody",
            {},
            m.samples.map((s) =>
              h(
                "tr",
                {},
                h("td", { "data-label": "Entity", class: "mono", text: s.entity_key }),
                h("td", { "data-label": "Difference" }, s.description ? h("code", { text: s.description }) : h("span", { class: "muted", text: "no description" })),
                h("td", { "data-label": "Seen", text: count(s.seen) }),
                h("td", { "data-label": "Last seen" }, timeAgo(s.last_seen_ms)),
                h("td", { "data-label": "By", class: "mono", text: `${s.service}/${s.instance_id}` }),
              ),
            ),
          ),
        ),
      ),
    );
  };

  return { element, render };
}
