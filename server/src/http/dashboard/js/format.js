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

/** "just now", "5 min ago", "in 3 h", "2 d ago". */
export function relative(ms, now = Date.now()) {
  const delta = ms - now;
  const abs = Math.abs(delta);
  if (abs < 10_000) return "just now";
  const span = shortSpan(abs / 1000);
  return delta < 0 ? `${span} ago` : `in ${span}`;
}

function shortSpan(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400 * 2) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

/** A span as "6d 21h 03m 12s" (for countdowns) or shorter when small. */
export function span(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d ${hh}h ${pad(mm)}m ${pad(ss)}s`;
  if (hh > 0) return `${hh}h ${pad(mm)}m ${pad(ss)}s`;
  if (mm > 0) return `${mm}m ${pad(ss)}s`;
  return `${ss}s`;
}

/** A rough duration for settings such as the soak period: "7 days", "1 hour". */
export function duration(seconds) {
  const units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
  for (const [size, name] of units) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  return span(seconds);
}

/** Microseconds for a latency chart's axis; the histogram's buckets are named by the server. */
export function micros(us) {
  if (us >= 1_000_000) return `${trim((us / 1_000_000).toFixed(1))} s`;
  if (us >= 1000) return `${trim((us / 1000).toFixed(1))} ms`;
  return `${us} µs`;
}
