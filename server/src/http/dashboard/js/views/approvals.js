// Four eyes: changes waiting for a second operator's approval. On a migration's page, its
// pending request with approve and reject (through the page's confirm-with-a-reason dialog);
// on the list, the inbox of every pending request, each linking to its migration.

import { api } from "../api.js";
import { fill, h, timeAgo } from "../dom.js";

/** The migration page's card: shown only while a request waits. */
export function approvalsCard(ctx, act) {
  const { store } = ctx;
  const element = h("section", { class: "card approvals", "aria-labelledby": "approvals-title", hidden: true });

  const render = () => {
    const list = ctx.facts.approvals?.approvals ?? [];
    element.hidden = list.length === 0;
    if (list.length === 0) return fill(element);
    fill(
      element,
      h("h2", { id: "approvals-title", text: "Waiting for approval" }),
      list.map((a) => {
        // The server tells requesters by token: a plan's requests are its setter's.
        const mine = store.me && a.requested_by.endsWith(`(token ${store.me.token_id})`);
        return h(
          "div",
          { class: "approval", "data-approval": String(a.id) },
          h("p", {}, h("strong", { text: `#${a.id} ${a.change}` }), ` at version ${a.expected_version}`),
          // timeAgo is an element (a <time> that keeps itself current), not text.
          h("p", { class: "hint" }, `${a.requested_by}, `, timeAgo(a.requested_at_ms), `: ${a.reason}`),
          store.can.operate &&
            h(
              "div",
              { class: "steps" },
              !mine && h("button", { type: "button", class: "btn btn-small btn-primary", text: "Approve…", onclick: () => decide(a, true) }),
              h("button", { type: "button", class: "btn btn-small", text: mine ? "Withdraw…" : "Reject…", onclick: () => decide(a, false) }),
            ),
          mine && h("p", { class: "hint", text: "You asked for this change: a second operator approves it." }),
        );
      }),
    );
  };

  const decide = (a, approving) =>
    act({
      title: approving ? `Approve #${a.id}?` : `Reject #${a.id}?`,
      body: [
        h("p", { text: approving ? `${a.change}, as ${a.requested_by}'s change, through the safety rules at version ${a.expected_version} (refused if the migration changed since).` : `${a.change} is not applied.` }),
      ],
      confirmLabel: approving ? "Approve and apply" : "Reject",
      versioned: false,
      send: (_v, reason) => (approving ? api.approve(a.id, reason) : api.reject(a.id, reason)),
      done: (decided) => {
        ctx.approvalsChanged?.();
        return approving ? `Approval #${a.id} applied: ${decided.change}.` : `Approval #${a.id} ${decided.status}.`;
      },
    });

  return { element, render };
}

/** The list's inbox: every pending request the token sees, newest first. */
export function approvalsInbox() {
  const element = h("section", { class: "card approvals-inbox", "aria-labelledby": "inbox-title", hidden: true });
  let shown = "";
  const render = (list) => {
    const text = JSON.stringify(list);
    if (text === shown) return;
    shown = text;
    element.hidden = list.length === 0;
    fill(
      element,
      h("h2", { id: "inbox-title", text: `Waiting for approval (${list.length})` }),
      h(
        "ul",
        { class: "inbox" },
        list.map((a) =>
          h(
            "li",
            { "data-approval": String(a.id) },
            h("a", { href: `#/m/${encodeURIComponent(a.key)}`, text: a.key }),
            ` · #${a.id} ${a.change} · ${a.requested_by}, `,
            timeAgo(a.requested_at_ms),
          ),
        ),
      ),
    );
  };
  const refresh = async () => {
    try {
      render((await api.approvals()).approvals);
    } catch {
      // The inbox is an extra: the list stands without it.
    }
  };
  return { element, refresh };
}
