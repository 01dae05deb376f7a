// The confirmation dialog every change goes through: it states what will change, asks for the
// reason the audit log records (rule 9), and names the version the change expects (rule 8).
// A native <dialog> gives focus trapping, Escape to cancel and focus return for free.

import { h, fill } from "./dom.js";

let open = null;

/**
 * Asks for a reason and a confirmation.
 * @param {{title: string, body: (Node|string)[], confirmLabel: string, danger?: boolean}} options
 * @returns {Promise<string|null>} the reason, or null when cancelled
 */
export function confirmChange({ title, body, confirmLabel, danger = false, reasonLabel = "Reason (recorded in the audit log)" }) {
  open?.dialog.close("cancel");
  const reason = h("textarea", {
    id: "reason",
    name: "reason",
    rows: 3,
    required: true,
    maxlength: 1000,
    "aria-describedby": "reason-help",
    placeholder: "e.g. JIRA-42: error rate flat after 30 min at 5%",
  });
  const notice = h("p", { class: "callout callout-warn", role: "alert", hidden: true });
  const confirm = h("button", { type: "submit", value: "confirm", class: ["btn", danger ? "btn-danger" : "btn-primary"], text: confirmLabel });
  const dialog = h(
    "dialog",
    { class: "confirm", "aria-labelledby": "confirm-title" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "confirm-title", text: title }),
      h("div", { class: "confirm-body" }, body),
      notice,
      h("label", { for: "reason", text: reasonLabel }),
      reason,
      h("p", { id: "reason-help", class: "hint", text: "Required. Say why, so the next release manager understands." }),
      h(
        "div",
        { class: "dialog-actions" },
        h("button", { type: "submit", value: "cancel", class: "btn", formnovalidate: true, text: "Cancel" }),
        confirm,
      ),
    ),
  );
  document.body.append(dialog);
  return new Promise((resolve) => {
    open = { dialog, notice };
    dialog.addEventListener("close", () => {
      const confirmed = dialog.returnValue === "confirm";
      const text = reason.value.trim();
      dialog.remove();
      open = null;
      resolve(confirmed && text ? text : null);
    });
    reason.addEventListener("input", () => reason.setCustomValidity(""));
    confirm.addEventListener("click", (e) => {
      if (!reason.value.trim()) {
        e.preventDefault();
        reason.setCustomValidity("Give a reason: every change is audited with one.");
        reason.reportValidity();
      }
    });
    dialog.showModal();
    reason.focus();
  });
}

/** Shown in the open dialog when the migration changes under it: confirming would be refused as stale. */
export function warnOpenDialog(message) {
  if (!open) return;
  fill(open.notice, message);
  open.notice.hidden = false;
}
