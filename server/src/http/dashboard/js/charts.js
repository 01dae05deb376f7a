// Hand-written SVG line charts for the per-minute traffic clients report. Drawn at the
// container's pixel width (and redrawn when it changes) rather than scaled from a fixed
// viewBox, so labels keep their size on a phone.

import { h, s } from "./dom.js";

const HEIGHT = 170;
const PAD = { top: 12, right: 12, bottom: 24, left: 48 };

/**
 * @param {object} o
 * @param {string} o.title
 * @param {number} o.from  first minute (ms)
 * @param {number} o.to    last minute (ms)
 * @param {{name: string, cls: string, values: (number|null)[]}[]} o.series one value per minute
 * @param {(v: number) => string} o.format  y-axis labels
 * @param {boolean} [o.integer]  counts: the y-axis gridlines fall on whole numbers
 * @param {string} o.summary  text alternative for screen readers
 * @param {{at: number, kind: string, label: string, reason: string, actor: string}[]} [o.markers]
 *   changes to mark: a dashed vertical line at the time (ramp, advance, back, pause), its
 *   label and reason on hover, and listed in the text alternative
 */
export function lineChart(o) {
  const holder = h("div", { class: "chart-plot" });
  const legend = h(
    "ul",
    { class: "legend" },
    o.series.map((ser) => h("li", {}, h("span", { class: ["swatch", ser.cls], "aria-hidden": "true" }), ser.name)),
  );
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, h("span", { class: "chart-title", text: o.title }), legend), holder);
  let drawnWidth = 0;
  const draw = () => {
    const width = Math.max(240, Math.round(holder.clientWidth || 560));
    if (width === drawnWidth) return;
    drawnWidth = width;
    holder.replaceChildren(svg(o, width));
  };
  // The figure is not in the document yet: draw once it has a width, and on every resize.
  new ResizeObserver(draw).observe(holder);
  return figure;
}

function svg(o, width) {
  const innerW = width - PAD.left - PAD.right;
  const innerH = HEIGHT - PAD.top - PAD.bottom;
  const n = Math.max(1, o.series[0]?.values.length ?? 1);
  const top = Math.max(0, ...o.series.flatMap((ser) => ser.values.filter((v) => v !== null)));
  const max = o.integer ? integerMax(top) : niceMax(top);
  const x = (i) => PAD.left + (n === 1 ? innerW / 2 : (i / (n - 1)) * innerW);
  const y = (v) => PAD.top + innerH - (v / max) * innerH;

  const grid = [];
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4;
    grid.push(
      s("line", { x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v), class: t === 0 ? "axis" : "grid" }),
      s("text", { x: PAD.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, o.format(v)),
    );
  }
  const ticks = [];
  // About one time label per 90 px, so they never overlap on a phone.
  const timeTicks = Math.max(2, Math.min(6, n, Math.floor(innerW / 90)));
  for (let t = 0; t < timeTicks; t++) {
    const i = timeTicks === 1 ? 0 : Math.round((t * (n - 1)) / (timeTicks - 1));
    const at = new Date(o.from + i * 60_000);
    const label = `${String(at.getHours()).padStart(2, "0")}:${String(at.getMinutes()).padStart(2, "0")}`;
    const anchor = t === 0 ? "start" : t === timeTicks - 1 ? "end" : "middle";
    ticks.push(s("text", { x: x(i), y: HEIGHT - 6, class: "tick", "text-anchor": anchor }, label));
  }
  const lines = o.series.map((ser) => {
    // Minutes without data (null) break the line instead of drawing a misleading zero.
    let d = "";
    let pen = false;
    ser.values.forEach((v, i) => {
      if (v === null) {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    const dots = n <= 90
      ? ser.values.map((v, i) => (v === null || v === 0 ? null : s("circle", { cx: x(i), cy: y(v), r: 2, class: ["dot", ser.cls] })))
      : [];
    return s("g", {}, s("path", { d, class: ["line", ser.cls] }), dots);
  });
  // Minutes are points: a change at 10:42:30 sits halfway between the 10:42 and 10:43 points.
  const xAt = (ms) => x((ms - o.from) / 60_000);
  const marks = (o.markers ?? [])
    .filter((m) => m.at >= o.from && m.at <= o.to + 60_000)
    .map((m) => {
      const at = Math.min(width - PAD.right, Math.max(PAD.left, xAt(m.at)));
      return s(
        "g",
        { class: ["marker", `marker-${m.kind}`], "data-kind": m.kind },
        s("title", {}, `${m.label} (${m.actor}): ${m.reason}`),
        s("line", { x1: at, x2: at, y1: PAD.top, y2: HEIGHT - PAD.bottom }),
        s("path", { d: `M${at - 4},${PAD.top - 2}L${at + 4},${PAD.top - 2}L${at},${PAD.top + 5}Z` }),
      );
    });
  const marked = marks.length > 0 ? ` Changes marked: ${(o.markers ?? []).filter((m) => m.at >= o.from && m.at <= o.to + 60_000).map((m) => m.label).join("; ")}.` : "";
  return s(
    "svg",
    { width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": `${o.title}. ${o.summary}${marked}` },
    grid,
    ticks,
    marks,
    lines,
  );
}

/** A round upper bound for the y axis (1, 2, 5 × 10^k). */
function niceMax(v) {
  if (v <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (v <= m * exp) return m * exp;
  }
  return 10 * exp;
}

/** For counts: a top of 4 × (1, 2, 5 × 10^k), so each of the four gridlines is a whole number. */
function integerMax(v) {
  for (let k = 1; ; k *= 10) {
    for (const m of [1, 2, 5]) {
      if (v <= 4 * m * k) return 4 * m * k;
    }
  }
}
