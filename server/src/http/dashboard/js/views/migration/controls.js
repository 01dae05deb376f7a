// The controls: ramp the rollout (with presets), advance or step back a stage, and record the
// milestone events the server says apply now. The form elements are built once and refilled,
// so a live update never takes keyboard focus or a half-typed percentage away.

import { api } from "../../api.js";
import { fill, h } from "../../dom.js";
import { parsePercent, percent, stageLabel } from "../../format.js";

const PRESETS = [1, 5, 25, 50, 100];

/** @param {HTMLElement} result where the outcome of a change is shown (from actions.js) */
export function controlsCard(ctx, act, result) {
  const { key, store, vocabulary, current } = ctx;
  const element = h("section", { class: "card controls", "aria-labelledby": "controls-title" });

  const rampInput = h("input", { id: "ramp-pct", name: "percent", type: "number", min: 0, max: 100, step: 0.01, inputmode: "decimal", required: true, "aria-describedby": "ramp-help" });
  let rampDirty = false;
  rampInput.addEventListener("input", () => {
    rampDirty = true;
    rampInput.setCustomValidity("");
  });
  const rampLabel = h("label", { for: "ramp-pct" });
  const rampHelp = h("p", { id: "ramp-help", class: "hint" });
  const rampButton = h("button", { type: "submit", class: "btn btn-primary", text: "Ramp…" });
  const rampForm = h(
    "form",
    { class: "ramp", "aria-label": "Ramp the rollout" },
    rampLabel,
    h(
      "div",
      { class: "ramp-row" },
      h("span", { class: "pct-field" }, rampInput, h("span", { class: "pct-sign", "aria-hidden": "true", text: "%" })),
      rampButton,
    ),
    h(
      "div",
      { class: "presets", role: "group", "aria-label": "Preset percentages" },
      PRESETS.map((p) =>
        h("button", {
          type: "button",
          class: "btn btn-small",
          text: `${p}%`,
          onclick: () => {
            rampInput.value = String(p);
            rampDirty = true;
            rampInput.setCustomValidity("");
            rampButton.focus();
          },
        }),
      ),
    ),
    rampHelp,
  );
  rampForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const m = current();
    const bp = parsePercent(rampInput.value);
    if (bp === null) {
      rampInput.setCustomValidity("Enter a percentage from 0 to 100, with at most two decimals.");
      rampInput.reportValidity();
      return;
    }
    act({
      title: `Ramp ${stageLabel(m.stage)} to ${percent(bp)}?`,
      body: [changeLine(`${stageLabel(m.stage)} ${percent(m.rollout_bp)}`, `${stageLabel(m.stage)} ${percent(bp)}`), rampConsequence(m, vocabulary.prevStage(m.stage), bp)],
      confirmLabel: `Ramp to ${percent(bp)}`,
      danger: bp < m.rollout_bp,
      send: (v, reason, extra) => api.rollout(key, bp, v, reason, extra),
      done: (n) => `Rollout of ${stageLabel(n.stage)} is now ${percent(n.rollout_bp)} (version ${n.version}).`,
      after: () => {
        rampDirty = false;
      },
    });
  });

  const advanceButton = h("button", { type: "button", class: "btn", "aria-describedby": "advance-help" });
  const advanceHelp = h("span", { id: "advance-help", class: "hint" });
  const retreatButton = h("button", { type: "button", class: "btn btn-danger-outline", "aria-describedby": "retreat-help" });
  const retreatHelp = h("span", { id: "retreat-help", class: "hint" });
  advanceButton.addEventListener("click", () => {
    const m = current();
    const next = vocabulary.nextStage(m.stage);
    act({
      title: `Advance to ${stageLabel(next)}?`,
      body: [changeLine(`${stageLabel(m.stage)} ${percent(m.rollout_bp)}`, `${stageLabel(next)} 0%`), h("p", { text: `The front moves to ${stageLabel(next)} at 0%: no entity changes yet; ramp it from there.` })],
      confirmLabel: `Advance to ${stageLabel(next)}`,
      send: (v, reason, extra) => api.advance(key, v, reason, extra),
      done: (n) => `Advanced to ${stageLabel(n.stage)} at ${percent(n.rollout_bp)} (version ${n.version}).`,
    });
  });
  retreatButton.addEventListener("click", () => {
    const m = current();
    const prev = vocabulary.prevStage(m.stage);
    act({
      title: `Step back to ${stageLabel(prev)}?`,
      body: [changeLine(`${stageLabel(m.stage)} ${percent(m.rollout_bp)}`, `${stageLabel(prev)} 100%`), h("p", { text: "Every entity is already at the previous stage; this makes it the current one so you can ramp it down." })],
      confirmLabel: `Step back to ${stageLabel(prev)}`,
      danger: true,
      send: (v, reason, extra) => api.retreat(key, v, reason, extra),
      done: (n) => `Stepped back to ${stageLabel(n.stage)} at ${percent(n.rollout_bp)} (version ${n.version}).`,
    });
  });

  const eventSelect = h("select", { id: "event", name: "event" });
  const recordForm = h(
    "form",
    { class: "record", "aria-label": "Record an event" },
    h("label", { for: "event", text: "Record an event" }),
    h("div", { class: "ramp-row" }, eventSelect, h("button", { type: "submit", class: "btn", text: "Record…" })),
  );
  recordForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const event = eventSelect.value;
    const { label } = vocabulary.events.find((v) => v.name === event);
    act({
      title: `Record “${label}”?`,
      body: [h("p", {}, "Records ", h("strong", { text: label.toLowerCase() }), ` for ${key}. Events are facts the safety rules rely on: record only what has happened.`)],
      confirmLabel: "Record",
      danger: event === "contracted",
      send: (v, reason, extra) => api.record(key, event, v, reason, extra),
      done: (n) => `Recorded ${label.toLowerCase()} (version ${n.version}).`,
    });
  });

  const render = () => {
    const m = current();
    if (!store.can.recordSchema) {
      element.hidden = true;
      return;
    }
    const final = m.stage === "contracted";
    const next = vocabulary.nextStage(m.stage);
    const prev = vocabulary.prevStage(m.stage);
    // The server's verdict under every rule (fleet included), when it is for this version;
    // until it arrives, what rule 1 alone says. The change is judged again when made.
    const verdicts = ctx.facts.actions?.version === m.version ? ctx.facts.actions.actions : null;
    const refusal = (name) => verdicts?.find((a) => a.action === name && !a.allowed);
    fill(rampLabel, `Rollout of ${stageLabel(m.stage)}, in percent of ${m.entity_kind || "entities"}`);
    // Which way the rules let the front move now (a ramp to where it is changes nothing and is
    // no refusal).
    const rampRefusals = ["ramp_full", "ramp_zero"]
      .map((name) => refusal(name))
      .filter((r) => r && r.rule !== null)
      .map((r) => `${r.action === "ramp_full" ? "Up" : "Down"} is refused now (rule ${r.rule}): ${r.message.replace(/^rule \d+: /, "")}`);
    fill(rampHelp, `Now ${percent(m.rollout_bp)}. Entities below the front are at ${stageLabel(m.stage)}${prev ? `, the rest at ${stageLabel(prev)}` : ""}.`, rampRefusals.map((t) => h("span", { class: "refused-now", text: ` ${t}` })));
    if (!rampDirty && document.activeElement !== rampInput) rampInput.value = String(m.rollout_bp / 100);
    const step = (button, help, target, name, label, ready, needs) => {
      fill(button, target ? `${label} ${stageLabel(target)}…` : label.replace(/ to$/, ""));
      const refused = target && refusal(name);
      button.disabled = !target || final || Boolean(refused);
      button.dataset.rule = refused?.rule ?? "";
      fill(help, !target ? "" : refused ? `Refused now${refused.rule ? ` (rule ${refused.rule})` : ""}: ${refused.message.replace(/^rule \d+: /, "")}` : ready ? "Ready: the rules allow it now." : needs);
    };
    step(advanceButton, advanceHelp, next, "advance", "Advance to", verdicts ? true : m.rollout_bp === 10000, `Needs ${stageLabel(m.stage)} at 100% (rule 1).`);
    step(retreatButton, retreatHelp, prev, "retreat", "Step back to", verdicts ? true : m.rollout_bp === 0, `Needs ${stageLabel(m.stage)} at 0% (rule 1).`);
    // Pause and resume have their own button on the backfill card.
    const events = vocabulary.offered(m, store.can).filter((e) => e.milestone);
    const selected = eventSelect.value;
    fill(eventSelect, events.map(({ name, label }) => h("option", { value: name, text: label, selected: name === selected })));
    recordForm.hidden = events.length === 0;
    // A gate token can only record; with nothing to record there is nothing to control.
    element.hidden = !store.can.operate && events.length === 0;
    if (final) {
      element.dataset.layout = "final";
      fill(element, h("h2", { id: "controls-title", text: "Controls" }), h("p", { class: "muted", text: "Contracted is final: nothing can change this migration." }), result);
      return;
    }
    // The form set depends on whether there is anything to ramp; rebuilt only when that flips,
    // so ordinary updates keep focus where it is.
    const layout = m.stage === "off" ? "off" : "ramp";
    if (element.dataset.layout !== layout) {
      element.dataset.layout = layout;
      fill(
        element,
        h("h2", { id: "controls-title", text: "Controls" }),
        store.can.operate && m.stage !== "off" && rampForm,
        store.can.operate && m.stage === "off" && h("p", { class: "hint", text: "Off has nothing behind it to ramp: record the expand DDL, then advance to dual write and ramp from there." }),
        store.can.operate && h("div", { class: "steps" }, h("div", {}, advanceButton, advanceHelp), h("div", {}, retreatButton, retreatHelp)),
        recordForm,
        result,
      );
    }
  };

  return { element, render };
}

function changeLine(before, after) {
  return h("p", { class: "change-line" }, h("span", { class: "before", text: before }), h("span", { "aria-hidden": "true", text: " → " }), h("span", { class: "visually-hidden", text: " to " }), h("span", { class: "after", text: after }));
}

function rampConsequence(m, prev, bp) {
  const delta = bp - m.rollout_bp;
  if (delta === 0) return h("p", { text: "The rollout does not change." });
  const moved = percent(Math.abs(delta));
  const who = m.entity_kind ? `${m.entity_kind} entities` : "entities";
  return h(
    "p",
    {
      text:
        delta > 0
          ? `${moved} of ${who} move forward from ${stageLabel(prev ?? m.stage)} to ${stageLabel(m.stage)}.`
          : `${moved} of ${who} move back from ${stageLabel(m.stage)} to ${stageLabel(prev ?? m.stage)}.`,
    },
  );
}
