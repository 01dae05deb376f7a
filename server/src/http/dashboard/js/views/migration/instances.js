// The client instances the rules count for this migration (every one: rules 3 and 5 wait on
// each live instance, whether or not it uses the migration yet), which of them applied its
// current version, and which name the migration in their heartbeats.

import { fill, h, timeAgo } from "../../dom.js";

export function instancesCard(ctx) {
  const element = h("section", { class: "card", "aria-labelledby": "instances-title" });

  const render = () => {
    const m = ctx.current();
    if (!m) return;
    const title = h("h2", { id: "instances-title", text: "Client instances" });
    const list = ctx.facts.instances?.instances;
    if (!list) return fill(element, title, h("p", { class: "muted", text: list === null ? "Loading…" : "Instances are unavailable right now." }));
    const live = list.filter((i) => i.live);
    const applied = live.filter((i) => i.applied_version >= m.version);
    fill(
      element,
      title,
      h("p", { class: live.length && applied.length === live.length ? "ok" : "muted" }, live.length === 0 ? "No live client instance." : `${applied.length} of ${live.length} live instances applied version ${m.version}.`),
      list.length > 0 &&
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "instances" },
            h("thead", {}, h("tr", {}, ["Service", "Instance", "Applied", "Uses it", "Last seen"].map((t) => h("th", { scope: "col", text: t })))),
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
                    h("td", { text: i.uses_migration ? "yes" : "no", title: "Whether its heartbeats name this migration (it evaluates it or runs its backfill)" }),
                    h("td", {}, timeAgo(i.last_seen_ms), !i.live && h("div", { class: "muted small", text: "not live" })),
                  ),
                ),
            ),
          ),
        ),
    );
  };

  return { element, render };
}
