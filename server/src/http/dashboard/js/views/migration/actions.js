// How the migration page changes a migration: confirm with a reason, send the change with the
// version the page shows, and report the outcome in one result box (placed in the controls
// card, whichever card started the change).

import { ApiError, NetworkError } from "../../api.js";
import { announce, fill, h } from "../../dom.js";
import { confirmChange } from "../../dialog.js";

/**
 * @param {object} ctx the page's context (key, current, isDestroyed)
 * @param {(m: object, own: boolean) => void} publish puts a newer record on the page; `own`
 *   when it is this page's change, which needs no "it changed meanwhile" warning
 */
export function actions(ctx, publish) {
  // Not a live region itself: successes go through the page's announcer, refusals are role=alert.
  const result = h("div", { class: "result" });
  const newer = (m) => m && m.version > (ctx.current()?.version ?? 0);

  const show = (level, title, detail) => {
    fill(
      result,
      h(
        "div",
        { class: ["callout", level === "error" ? "callout-error" : level === "ok" ? "callout-ok" : ""], role: level === "error" ? "alert" : undefined, "data-testid": "result" },
        h("strong", { text: title }),
        detail && h("p", { class: "detail", text: detail }),
      ),
    );
  };

  /** One change: confirm with a reason, send it with the version the page shows, report the outcome. */
  // `versioned: false` for a change that is not a migration version (a backfill's settings).
  async function act({ title, body, confirmLabel, danger, send, done, after, versioned = true, reasonLabel }) {
    const expected = ctx.current().version;
    const reason = await confirmChange({
      title,
      body: versioned ? [...body, h("p", { class: "hint", text: `Expects version ${expected}: if someone changes the migration first, this change is refused (rule 8).` })] : body,
      confirmLabel,
      danger,
      reasonLabel,
    });
    if (reason === null || ctx.isDestroyed()) return;
    show("busy", "Sending…");
    try {
      const m = await send(expected, reason);
      after?.();
      // The response is the committed state: show it now rather than wait for the feed.
      if (newer(m)) publish(m, true);
      const text = done(m);
      show("ok", text);
      announce(text);
    } catch (e) {
      // A refusal names the newer state it was judged against: show it now rather than wait for
      // the feed.
      if (e instanceof ApiError && newer(e.current)) publish(e.current, false);
      const text = explain(e);
      show("error", text.title, text.detail);
      // Four eyes: the same change, at the same version and with the same reason, can be filed
      // for a second operator's approval.
      if (e instanceof ApiError && e.code === "approval_required") {
        const ask = h("button", { type: "button", class: "btn btn-small", text: "Request approval" });
        ask.addEventListener("click", async () => {
          ask.disabled = true;
          try {
            const filed = await send(expected, reason, { request_approval: true });
            const text = `Approval ${filed.id} requested (${filed.change}): another operator approves it on this page or with switchyard approvals approve ${filed.id}.`;
            show("ok", text);
            announce(text);
            ctx.approvalsChanged?.();
          } catch (again) {
            const text = explain(again);
            show("error", text.title, text.detail);
          }
        });
        result.querySelector("[data-testid=result]")?.append(ask);
      }
    }
  }

  return { act, result, clear: () => fill(result) };
}

/** Why a change failed, in the server's words (a refused rule's message names the rule). */
function explain(e) {
  if (e instanceof NetworkError) {
    return { title: "Could not reach the server", detail: "The change may or may not have been made: check the audit log once the connection is back." };
  }
  if (!(e instanceof ApiError)) return { title: "Something went wrong", detail: String(e.message || e) };
  switch (e.code) {
    case "rule_refused":
      return { title: `Refused by rule ${e.rule}`, detail: e.message };
    case "stale_version":
      return { title: "Someone changed this migration first (rule 8)", detail: `${e.message}. The page now shows the current state.` };
    case "permission_denied":
      return { title: "Your token may not do this", detail: e.message };
    case "not_applicable":
      return { title: "Not applicable now", detail: e.message };
    case "approval_required":
      return { title: "Needs a second operator's approval", detail: e.message };
    default:
      return { title: `Refused (${e.code})`, detail: e.message };
  }
}
