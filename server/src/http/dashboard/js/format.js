// Formatting of numbers, percentages, times and stages, in one place so every view agrees.

/** A stage for people: the server sends only its name ("dual_write"), which reads "dual write". */
export function stageLabel(stage) {
  return String(stage).replaceAll("_", " ");
}

/** Basis points as a percentage with up to two decimals: 1250 → "12.5%", 1 → "0.01%". */
export function percent(bp) {
  return `${trim((bp / 100).toFixed(2))}%`;
}

/** A user's percentage ("12.5", "12,5 %") as basis points, or null when it is not 0–100 with at most two decimals. */
export function parsePercent(raw) {
  const text = String(raw).trim().replace(",", ".").replace(/%$/, "").trim();
  if (!/^\d{1,3}(\.\d{1,2})?$/.test(text)) return null;
  const bp = Math.round(Number(text) * 100);
  return bp >= 0 && bp <= 10000 ? bp : null;
}

function trim(fixed) {
  return fixed.replace(/\.?0+$/, "");
}

const integer = new Intl.NumberFormat("en-US");

/** "1 error", "3 errors", with the count formatted. */
export function plural(n, one, many = `${one}s`) {
  return `${integer.format(n)} ${n === 1 ? one : many}`;
}

export function count(n) {
  return integer.format(n ?? 0);
}

/** Ratio as a percentage with two significant decimals, for error and mismatch rates. */
export function ratio(part, whole) {
  if (!whole) return "–";
  const p = (100 * part) / whole;
  return `${p === 0 ? "0" : p < 0.01 ? "<0.01" : trim(p.toFixed(2))}%`;
}

export function absolute(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  const offset = -d.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  const tz = `${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${tz}`;
}

/** "just now", "5m ago", "in 3h 10m", "2d 4h ago". */
export function relative(ms, now = Date.now()) {
  const delta = ms - now;
  const abs = Math.abs(delta);
  if (abs < 10_000) return "just now";
  const text = span(abs / 1000);
  return delta < 0 ? `${text} ago` : `in ${text}`;
}

/**
 * A span the one way Switchyard prints spans everywhere (the CLI and the server's messages
 * too): its largest unit and the next one, zero parts left out: "7d", "3d 4h", "4h 5m",
 * "5m 12s", "42s".
 */
export function span(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const parts = [];
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]]) {
    parts.push([Math.floor(s / size), unit]);
    s %= size;
  }
  const first = parts.findIndex(([n]) => n > 0);
  if (first < 0) return "0s";
  return parts
    .slice(first, first + 2)
    .filter(([n]) => n > 0)
    .map(([n, unit]) => `${n}${unit}`)
    .join(" ");
}

/** A setting such as the soak period ("7d"): spans print one way. */
export const duration = span;

/** Microseconds for a latency chart's axis; the histogram's buckets are named by the server. */
export function micros(us) {
  if (us >= 1_000_000) return `${trim((us / 1_000_000).toFixed(1))} s`;
  if (us >= 1000) return `${trim((us / 1000).toFixed(1))} ms`;
  return `${us} µs`;
}
