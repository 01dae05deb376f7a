// What the dashboard derives from the API beyond the migration record: who applied the current
// state, what clients report, and the alerts a release manager must not miss. Shared by the
// list and the migration page so both raise the same alerts for the same facts.

import { api } from "./api.js";
import { plural, ratio, relative } from "./format.js";

/** A running backfill with no checkpoint for this long is flagged as stalled. */
const STALL_MS = 3 * 60_000;

/** Fetches what the alerts need for one migration; parts that fail are left out, not fatal. */
export async function gather(m) {
  const wanted = {
    instances: api.instances(m.key),
    traffic: api.traffic(m.key, 60),
    backfill: m.backfill?.status === "running" ? api.backfill(m.key) : null,
    gate: m.stage === "complete" ? api.gate(m.key) : null,
  };
  const out = {};
  await Promise.all(
    Object.entries(wanted).map(async ([name, promise]) => {
      try {
        out[name] = await promise;
      } catch (e) {
        if (e.status === 401) throw e;
        out[name] = undefined;
      }
    }),
  );
  return out;
}

/** Live instances and how many have applied the migration's current version. */
export function fleet(m, instances) {
  const live = (instances ?? []).filter((i) => i.live);
  const applied = live.filter((i) => i.applied_version >= m.version);
  const services = new Set(live.map((i) => i.service));
  const missing = (m.expected_services ?? []).filter((s) => !services.has(s));
  return { live, applied, missing };
}

export function isStalled(m, backfill, now = Date.now()) {
  if (!backfill || m.backfill?.status !== "running" || m.backfill?.paused) return false;
  const last = backfill.updated_at_ms ?? m.updated_at_ms;
  return now - last > STALL_MS;
}

/**
 * Alerts, most severe first: {level: "error"|"warn", text}.
 * @param {object} m the migration
 * @param {{instances?: object, traffic?: object, backfill?: object}} facts
 */
export function alerts(m, facts, now = Date.now()) {
  const list = [];
  const total = facts.traffic?.total;
  if (total) {
    if (total.mismatches > 0) {
      list.push({ level: "error", text: `${plural(total.mismatches, "shadow mismatch", "shadow mismatches")} in the last hour (${ratio(total.mismatches, total.comparisons)} of comparisons)` });
    }
    const newOps = total.new.reads + total.new.writes;
    if (total.new.errors > 0) {
      list.push({ level: "error", text: `${plural(total.new.errors, "new-shape error")} in the last hour (${ratio(total.new.errors, newOps)})` });
    }
    const oldOps = total.old.reads + total.old.writes;
    if (total.old.errors > 0) {
      list.push({ level: "warn", text: `${plural(total.old.errors, "old-shape error")} in the last hour (${ratio(total.old.errors, oldOps)})` });
    }
  }
  if (isStalled(m, facts.backfill, now)) {
    const last = facts.backfill.updated_at_ms;
    list.push({
      level: "error",
      text: last ? `Backfill stalled: no checkpoint since ${relative(last, now)}` : "Backfill stalled: running, but no runner has checkpointed",
    });
  }
  if (facts.instances) {
    const f = fleet(m, facts.instances.instances);
    // Once contracted, services are expected to stop naming the migration: not an alert.
    for (const service of m.stage === "contracted" ? [] : f.missing) {
      list.push({ level: "warn", text: `Expected service ${service} has no live instance` });
    }
    const behind = f.live.length - f.applied.length;
    if (behind > 0) {
      list.push({ level: "warn", text: `${behind} of ${plural(f.live.length, "live instance")} ${behind === 1 ? "has" : "have"} not applied version ${m.version}` });
    }
  }
  return list.sort((a, b) => (a.level === b.level ? 0 : a.level === "error" ? -1 : 1));
}
