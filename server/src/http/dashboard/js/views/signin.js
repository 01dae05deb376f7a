// Sign-in: the user pastes a token; it is checked with GET /v1/whoami (and the vocabulary
// loaded with it) before it is kept.

import { api, setToken } from "../api.js";
import { h, fill } from "../dom.js";

export function signIn({ message, onSignedIn }) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
  });
  const status = h("p", { id: "signin-status", class: message ? "callout" : "", role: "alert" }, message || "");
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: "Sign in" });
  const form = h(
    "form",
    { class: "signin card", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", tabindex: "-1", text: "Sign in to Switchyard" }),
    status,
    h("label", { for: "token", text: "API token" }),
    input,
    h(
      "p",
      { id: "token-help", class: "hint" },
      "Paste a token made with ",
      h("code", { text: "switchyard token create NAME --role operator" }),
      ". A reader token shows a read-only view. The token stays in this browser tab only.",
    ),
    submit,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    submit.disabled = true;
    fill(status, "Checking…");
    status.className = "";
    try {
      const session = await api.session(token);
      setToken(token);
      onSignedIn(session);
    } catch (error) {
      status.className = "callout callout-error";
      fill(status, error.status === 401 ? "That token was refused: it is unknown or revoked." : `Could not sign in: ${error.message}`);
      submit.disabled = false;
      input.select();
    }
  });
  return form;
}
