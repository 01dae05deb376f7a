// What the target database itself saw (GET /v1/migrations/KEY/usage): the server's observer
// reads pg_stat_statements there and keeps each statement that touches the old shape. The card
// says whether the database is observed and since when (or why it cannot be), the gate's
// database_usage check with its evidence and remedy, and the statements with who ran them and
// the verdict on each. A migration that names no target database gets one line: not observed.

import { fill, h, timeAgo } from "../../dom.js";
import { count } from "../../format.js";
import { checkItem } from "./gate.js";

// The server's verdict on a statement: used inside the gate's window (it blocks), or before it
// by a Switchyard client (expected) or by another caller (unexpected: it would block).
const VERDICTS = {
  blocks: "Used inside the gate's window: the old shape must not be dropped",
  unexpected: "Used before the gate's window by a caller that is not a Switchyard client: it would block",
  expected: "Used before the gate's window by a Switchyard client",
};

function session(s) {
  const who = s.application_name || "no application_name";
  return `${who} (${s.role}${s.client_addr ? `, from ${s.client_addr}` : ""})`;
}

function statementRow(st) {
  return h(
    "tr",
    { class: `usage-row-${st.verdict}` },
    h("td", { "data-label": "Verdict" }, h("span", { class: ["badge", `usage-${st.verdict}`], title: VERDICTS[st.verdict] ?? "", text: st.verdict })),
    h("td", { "data-label": "Statement" }, h("code", { class: "usage-statement", text: st.statement })),
    h("td", { "data-label": "Role", class: "mono", text: st.role }),
    h(
      "td",
      { "data-label": "Calls / in window", class: "usage-calls" },
      h("span", { text: `${count(st.calls)} / ${count(st.calls_in_window)}` }),
      h("div", { class: "muted small", text: `${count(st.rows)} rows` }),
    ),
    h("td", { "data-label": "Last seen", class: "usage-seen" }, timeAgo(st.last_seen_ms), h("div", { class: "muted small" }, "first ", timeAgo(st.first_seen_ms))),
    h(
      "td",
      { "data-label": "Sessions" },
      st.sessions.length ? h("ul", { class: "usage-list" }, st.sessions.map((s) => h("li", { text: session(s) }))) : h("span", { class: "muted", text: "none seen running it" }),
    ),
    h(
      "td",
      { "data-label": "Objects" },
      h(
        "ul",
        { class: "usage-list" },
        st.objects.map((o) => h("li", {}, o.possible && "possibly ", h("code", { text: o.object }), o.possible && ` (${o.possible})`)),
      ),
    ),
  );
}

export function usageCard(ctx) {
  const element = h("section", { class: "card", "aria-labelledby": "usage-title" });

  const render = () => {
    const u = ctx.facts.usage;
    const title = h("h2", { id: "usage-title", text: "Database usage" });
    if (!u) return fill(element, title, h("p", { class: "muted", text: u === null ? "Loading…" : "Database usage is unavailable right now." }));
    if (u.target_database === null) {
      return fill(element, title, h("p", { class: "muted" }, h("span", { class: "badge", text: "not observed" }), " ", u.check.evidence));
    }
    const c = u.check;
    const pass = u.last_pass_ms
      ? [
          timeAgo(u.last_pass_ms),
          u.last_pass_duration_ms != null && ` (${count(u.last_pass_duration_ms)} ms over ${count(u.statements_on_target ?? 0)} statements)`,
        ]
      : "none yet";
    fill(
      element,
      title,
      h(
        "dl",
        { class: "meta" },
        [
          ["Database", h("span", { class: "mono", text: u.target_database })],
          ["Old shape", u.old_shape.length ? h("span", { class: "mono", text: u.old_shape.join(", ") }) : "none declared"],
          ["Last pass", pass],
          ["Gate's window from", u.window_from_ms ? timeAgo(u.window_from_ms) : "not started"],
        ].map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", {}, v))),
      ),
      u.failing
        ? h("p", { class: "callout callout-error usage-failing" }, h("strong", { text: `Cannot observe ${u.target_database}` }), " since ", timeAgo(u.failing.since_ms), ": ", u.failing.reason)
        : u.covered_since_ms
          ? h("p", { class: "ok" }, "Observed without a gap since ", timeAgo(u.covered_since_ms), u.coverage_reason && ` (${u.coverage_reason})`)
          : h("p", { class: "muted", text: "Not observed yet." }),
      h("ul", { class: "checklist" }, checkItem(c)),
      u.statements.length === 0
        ? // Only evidence is worth a "none": an unread target says nothing either way.
          u.failing || !u.covered_since_ms
          ? h("p", { class: "muted", text: "No evidence: the target has not been read." })
          : h("p", { class: "muted" }, "No statement touched the old shape since ", timeAgo(Math.max(u.since_ms, u.covered_since_ms)), ".")
        : h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "usage" },
              h("thead", {}, h("tr", {}, ["Verdict", "Statement", "Role", "Calls / in window", "Last seen", "Sessions", "Objects"].map((t) => h("th", { scope: "col", text: t })))),
              h("tbody", {}, u.statements.map(statementRow)),
            ),
          ),
    );
  };

  return { element, render };
}
