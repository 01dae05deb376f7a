// Tiny DOM builders. Every server string reaches the page through text nodes or attributes set
// here (never innerHTML), so a migration description cannot inject markup.

import { absolute, relative } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (name === "text") el.textContent = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("a", { href: "#/", class: "x" }, "text", otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Polite announcement for screen readers (results of actions, live changes). */
export function announce(message) {
  const el = document.getElementById("announcer");
  // Clearing first makes a repeated identical message be announced again.
  el.textContent = "";
  setTimeout(() => { el.textContent = message; }, 50);
}

/**
 * A <time> showing a relative time ("5 min ago") with the absolute one on hover; main.js
 * refreshes every such element periodically, so "just now" does not stay forever.
 */
export function timeAgo(ms) {
  if (!ms) return h("span", { class: "muted", text: "never" });
  return h("time", {
    datetime: new Date(ms).toISOString(),
    title: absolute(ms),
    "data-ms": ms,
    text: relative(ms),
  });
}

export function refreshTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time[data-ms]")) {
    el.textContent = relative(Number(el.dataset.ms), now);
  }
}
