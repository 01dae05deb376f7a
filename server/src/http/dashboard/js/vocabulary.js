// The names the server speaks (GET /v1/vocabulary), loaded once per sign-in: the stage order,
// the events with their labels and permissions, and the latency histogram's buckets. The
// dashboard keeps no copy of them, so it cannot drift from the server's definitions.

export class Vocabulary {
  constructor({ stages, events, latency_buckets }) {
    this.stages = stages;
    this.events = events;
    this.latencyBuckets = latency_buckets;
  }

  stageIndex(stage) {
    return this.stages.indexOf(stage);
  }

  prevStage(stage) {
    const i = this.stageIndex(stage);
    return i > 0 ? this.stages[i - 1] : null;
  }

  nextStage(stage) {
    const i = this.stageIndex(stage);
    return i >= 0 && i < this.stages.length - 1 ? this.stages[i + 1] : null;
  }

  /**
   * The events worth offering for migration `m`: those the server says could change it now,
   * that the signed-in token may record. The server still has the last word.
   */
  offered(m, can) {
    return this.events.filter((e) => m.applicable_events.includes(e.name) && can.may(e.permission));
  }

  /** How histogram bucket `i` reads for people: "≤ 2.5 ms", or "> 2.5 s" for the last. */
  latencyLabel(i) {
    return this.latencyBuckets[i].label;
  }

  /**
   * Where bucket `i` sits on a chart's axis: its upper bound, or for the open-ended last bucket
   * the largest bound, since "slower than all of them" has no height of its own.
   */
  latencyLower(i) {
    return i === 0 ? 0 : this.latencyBuckets[i - 1].upper_bound_us ?? 0;
  }

  latencyHeight(i) {
    return this.latencyBuckets[i].upper_bound_us ?? Math.max(...this.latencyBuckets.map((b) => b.upper_bound_us ?? 0));
  }
}
