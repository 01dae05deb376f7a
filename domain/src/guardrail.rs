//! Guardrails: what halts a plan. Checked while it runs and before each step, on what clients
//! reported since the migration's last change (the step now being held) and on the fleet: the
//! shadow mismatch ratio, the new shape's error ratio (absolute, and against the old shape's),
//! the new shape's p99 latency against the old's, instances that have not applied the last
//! change for too long, and a running backfill that has stalled (no batch) or held itself back
//! for too long. A ratio judges only with a minimum sample. From the database's own evidence
//! (the usage observer): a caller outside the migration that still touches the old shape once
//! it stops being written, and a target database that cannot be observed for too long.

use crate::time::format_span;
use crate::traffic::{Histogram, LATENCY_BOUNDS_US, TrafficCounts};
use crate::usage::{self, Observation};

/// Thresholds; the defaults suit a cautious rollout and a plan may override each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guardrails {
    /// Shadow reads that differed, as a share of those compared (0: any mismatch halts).
    pub max_mismatch_ratio: f64,
    /// New-shape operations that failed, as a share of new-shape operations.
    pub max_new_error_ratio: f64,
    /// The new shape's error ratio against the old shape's (2: twice as many failures).
    pub max_error_ratio_vs_old: f64,
    /// The new shape's p99 latency against the old shape's (by their histogram buckets).
    pub max_p99_ratio_vs_old: f64,
    /// How long a live instance may go without applying the last change.
    pub max_behind_ms: u64,
    /// How long a running backfill may go without a batch, or hold itself back (replica lag,
    /// WAL rate, autovacuum), before the plan halts.
    pub max_backfill_stall_ms: u64,
    /// How long the migration's target database may go unobserved (unreachable, unreadable,
    /// not configured) before the plan halts: it ramps on the database's evidence.
    pub max_unobserved_ms: u64,
    /// Operations on a side, and comparisons, needed before a ratio judges.
    pub min_operations: u64,
    pub min_comparisons: u64,
    /// What a breach does beyond halting the plan.
    pub on_breach: OnBreach,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            max_mismatch_ratio: 0.0,
            max_new_error_ratio: 0.01,
            max_error_ratio_vs_old: 2.0,
            max_p99_ratio_vs_old: 2.0,
            max_behind_ms: 10 * 60_000,
            max_backfill_stall_ms: 15 * 60_000,
            max_unobserved_ms: 10 * 60_000,
            min_operations: 100,
            min_comparisons: 100,
            on_breach: OnBreach::Halt,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBreach {
    /// Stop taking steps; the front stays.
    Halt,
    /// Stop, and move the front back to the plan's previous step in this stage (0% before the
    /// first), through the safety rules (rule 6 may refuse it: then it only halts).
    Rollback,
}

impl OnBreach {
    pub const ALL: [OnBreach; 2] = [OnBreach::Halt, OnBreach::Rollback];

    pub fn as_str(self) -> &'static str {
        match self {
            OnBreach::Halt => "halt",
            OnBreach::Rollback => "rollback",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, crate::InvalidInput> {
        OnBreach::ALL
            .into_iter()
            .find(|o| o.as_str() == raw)
            .ok_or_else(|| {
                crate::InvalidInput(format!(
                    "unknown on_breach {raw:?}: allowed {}",
                    OnBreach::ALL.map(OnBreach::as_str).join(", ")
                ))
            })
    }
}

/// A guardrail crossed: which, and the figures that crossed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub guardrail: &'static str,
    pub figures: String,
}

/// A running (not paused) backfill, as its runner last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillWatch {
    /// The last batch's checkpoint (or the start, before the first).
    pub last_batch_ms: i64,
    /// Since when the runner holds itself back, and why; `None` while it does not.
    pub held: Option<(i64, String)>,
}

/// What the usage observer says of the migration's target database.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseWatch<'a> {
    pub observation: &'a Observation,
    /// Whether the old shape has stopped being written (`rampdown`, `complete`): from then on
    /// a caller outside the migration that touches it reads stale data or breaks at the drop.
    pub old_shape_retiring: bool,
    /// The application names of the migration's own clients (its fleet and expected services).
    pub known_services: &'a [String],
}

/// A live instance that has not applied the migration's last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub service: String,
    pub instance_id: String,
}

impl Guardrails {
    /// Thresholds that are numbers in range (ratios not negative, not NaN).
    pub fn check(&self) -> Result<(), crate::InvalidInput> {
        for (name, v) in [
            ("max_mismatch_ratio", self.max_mismatch_ratio),
            ("max_new_error_ratio", self.max_new_error_ratio),
            ("max_error_ratio_vs_old", self.max_error_ratio_vs_old),
            ("max_p99_ratio_vs_old", self.max_p99_ratio_vs_old),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(crate::InvalidInput(format!(
                    "guardrail {name} must be a number of 0 or more, not {v}"
                )));
            }
        }
        Ok(())
    }

    /// The first guardrail `traffic` (reported since `since_ms`) and the fleet cross, if any.
    /// `behind` are the live instances that have not applied the change made at `since_ms`.
    /// `backfill`: the migration's running backfill, if one runs.
    pub fn breach(
        &self,
        traffic: &TrafficCounts,
        behind: &[Behind],
        backfill: Option<&BackfillWatch>,
        since_ms: i64,
        now_ms: i64,
    ) -> Option<Breach> {
        let window = format!(
            "in the {} since the last change",
            format_span(now_ms - since_ms)
        );
        if traffic.comparisons >= self.min_comparisons.max(1) {
            let ratio = traffic.mismatches as f64 / traffic.comparisons as f64;
            if ratio > self.max_mismatch_ratio {
                return Some(Breach {
                    guardrail: "shadow_mismatches",
                    figures: format!(
                        "{} of {} shadow reads differed ({}, limit {}) {window}",
                        traffic.mismatches,
                        traffic.comparisons,
                        pct(ratio),
                        pct(self.max_mismatch_ratio)
                    ),
                });
            }
        }
        let (new_ops, old_ops) = (traffic.new.operations(), traffic.old.operations());
        if new_ops >= self.min_operations.max(1) {
            let new_ratio = traffic.new.errors as f64 / new_ops as f64;
            if new_ratio > self.max_new_error_ratio {
                return Some(Breach {
                    guardrail: "new_shape_errors",
                    figures: format!(
                        "{} of {} new-shape operations failed ({}, limit {}) {window}",
                        traffic.new.errors,
                        new_ops,
                        pct(new_ratio),
                        pct(self.max_new_error_ratio)
                    ),
                });
            }
            if old_ops >= self.min_operations.max(1) {
                let old_ratio = traffic.old.errors as f64 / old_ops as f64;
                // Against a clean old shape, any new failure counts as "more": compared with
                // a floor of one failure in the old sample.
                let floor = old_ratio.max(1.0 / old_ops as f64);
                if traffic.new.errors > 0 && new_ratio > floor * self.max_error_ratio_vs_old {
                    return Some(Breach {
                        guardrail: "new_shape_errors_vs_old",
                        figures: format!(
                            "new-shape error ratio {} against the old shape's {} (limit {}×) {window}",
                            pct(new_ratio),
                            pct(old_ratio),
                            self.max_error_ratio_vs_old
                        ),
                    });
                }
                if let (Some(new_p99), Some(old_p99)) =
                    (p99_us(&traffic.new.latency), p99_us(&traffic.old.latency))
                {
                    if new_p99 as f64 > old_p99 as f64 * self.max_p99_ratio_vs_old {
                        return Some(Breach {
                            guardrail: "new_shape_latency",
                            figures: format!(
                                "new-shape p99 within {} against the old shape's within {} \
                                 (limit {}×) {window}",
                                micros(new_p99),
                                micros(old_p99),
                                self.max_p99_ratio_vs_old
                            ),
                        });
                    }
                }
            }
        }
        if !behind.is_empty() && now_ms - since_ms > self.max_behind_ms as i64 {
            let named: Vec<String> = behind
                .iter()
                .take(3)
                .map(|b| format!("{} of {}", b.instance_id, b.service))
                .collect();
            return Some(Breach {
                guardrail: "instances_behind",
                figures: format!(
                    "{} live instance(s) have not applied the last change for {} (limit {}): {}{}",
                    behind.len(),
                    format_span(now_ms - since_ms),
                    format_span(self.max_behind_ms as i64),
                    named.join(", "),
                    if behind.len() > 3 { ", …" } else { "" }
                ),
            });
        }
        if let Some(b) = backfill {
            let limit = format_span(self.max_backfill_stall_ms as i64);
            if let Some((since, why)) = &b.held {
                if now_ms - since > self.max_backfill_stall_ms as i64 {
                    return Some(Breach {
                        guardrail: "backfill_held",
                        figures: format!(
                            "the backfill has held itself back for {} (limit {limit}): {why}",
                            format_span(now_ms - since)
                        ),
                    });
                }
            } else if now_ms - b.last_batch_ms > self.max_backfill_stall_ms as i64 {
                return Some(Breach {
                    guardrail: "backfill_stalled",
                    figures: format!(
                        "the backfill has reported no batch for {} (limit {limit}): is its \
                         runner alive?",
                        format_span(now_ms - b.last_batch_ms)
                    ),
                });
            }
        }
        None
    }

    /// The first guardrail the database's evidence crosses: a caller the observer saw that is
    /// not one of the migration's clients, touching the old shape since `since_ms` while it is
    /// retiring; or the target unobserved for longer than allowed. A statement whose caller the
    /// observer did not catch is left to the gate, which blocks on any use during the soak.
    pub fn database_breach(
        &self,
        db: DatabaseWatch<'_>,
        since_ms: i64,
        now_ms: i64,
    ) -> Option<Breach> {
        let Observation::Declared {
            target,
            nothing_declared: false,
            failing,
            last_pass_ms,
            uses,
            ..
        } = db.observation
        else {
            return None;
        };
        if let Err((evidence, _)) = usage::readable(db.observation, now_ms) {
            // Since when the evidence is missing: the failure's start, the last good pass, or
            // (never read) the last change.
            let missing_since = failing
                .as_ref()
                .map(|(_, since)| *since)
                .or(*last_pass_ms)
                .unwrap_or(since_ms);
            if now_ms - missing_since > self.max_unobserved_ms as i64 {
                return Some(Breach {
                    guardrail: "database_unobserved",
                    figures: format!(
                        "{evidence} (for {}, limit {})",
                        format_span(now_ms - missing_since),
                        format_span(self.max_unobserved_ms as i64)
                    ),
                });
            }
            return None;
        }
        if !db.old_shape_retiring {
            return None;
        }
        let outsiders: Vec<usage::StatementSummary> =
            usage::summarize(uses, Some(since_ms), db.known_services)
                .into_iter()
                .filter(|s| {
                    s.calls_in_window > 0
                        && s.sessions
                            .iter()
                            .any(|x| !db.known_services.contains(&x.application_name))
                })
                .collect();
        let first = outsiders.first()?;
        let callers: Vec<String> = first
            .sessions
            .iter()
            .filter(|x| !db.known_services.contains(&x.application_name))
            .take(3)
            .map(ToString::to_string)
            .collect();
        Some(Breach {
            guardrail: "database_old_shape_use",
            figures: format!(
                "database {target} ran `{}` {} time(s) in the {} since the last change, by {}, \
                 not a client of this migration{}",
                usage::shorten(&first.statement, 200),
                first.calls_in_window,
                format_span(now_ms - since_ms),
                callers.join(", "),
                match outsiders.len() - 1 {
                    0 => String::new(),
                    n => format!(", and {n} more statement(s)"),
                }
            ),
        })
    }
}

/// The upper bound (µs) of the bucket holding the 99th percentile; the open-ended last bucket
/// counts as its lower bound. None without samples.
fn p99_us(histogram: &Histogram) -> Option<u64> {
    let total: u64 = histogram.0.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total * 99).div_ceil(100);
    let mut seen = 0;
    for (i, n) in histogram.0.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                LATENCY_BOUNDS_US
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1]),
            );
        }
    }
    None
}

fn pct(ratio: f64) -> String {
    format!("{:.3}%", ratio * 100.0)
}

fn micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{} s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::SideCounts;

    fn side(ops: u64, errors: u64, bucket: usize) -> SideCounts {
        let mut latency = Histogram::default();
        latency.0[bucket] = ops;
        SideCounts {
            reads: ops,
            writes: 0,
            errors,
            latency,
        }
    }

    fn traffic(
        old: SideCounts,
        new: SideCounts,
        comparisons: u64,
        mismatches: u64,
    ) -> TrafficCounts {
        TrafficCounts {
            old,
            new,
            comparisons,
            mismatches,
            ..TrafficCounts::default()
        }
    }

    #[test]
    fn each_guardrail_halts_with_its_figures_and_small_samples_do_not_judge() {
        let g = Guardrails::default();
        let healthy = traffic(side(1000, 1, 4), side(1000, 1, 4), 500, 0);
        assert_eq!(g.breach(&healthy, &[], None, 0, 60_000), None);

        let b = g
            .breach(
                &traffic(side(1000, 1, 4), side(1000, 1, 4), 500, 2),
                &[],
                None,
                0,
                60_000,
            )
            .unwrap();
        assert_eq!(b.guardrail, "shadow_mismatches");
        assert_eq!(
            b.figures,
            "2 of 500 shadow reads differed (0.400%, limit 0.000%) in the 1m since the last change"
        );
        // Too few comparisons to judge.
        assert_eq!(
            g.breach(
                &traffic(side(1000, 1, 4), side(1000, 1, 4), 50, 2),
                &[],
                None,
                0,
                60_000
            ),
            None
        );

        let b = g
            .breach(
                &traffic(side(1000, 1, 4), side(1000, 30, 4), 0, 0),
                &[],
                None,
                0,
                60_000,
            )
            .unwrap();
        assert_eq!(b.guardrail, "new_shape_errors");
        let b = g
            .breach(
                &traffic(side(1000, 1, 4), side(1000, 5, 4), 0, 0),
                &[],
                None,
                0,
                60_000,
            )
            .unwrap();
        assert_eq!(b.guardrail, "new_shape_errors_vs_old", "{b:?}");
        let b = g
            .breach(
                &traffic(side(1000, 0, 4), side(1000, 0, 7), 0, 0),
                &[],
                None,
                0,
                60_000,
            )
            .unwrap();
        assert_eq!(b.guardrail, "new_shape_latency");
        assert!(
            b.figures
                .starts_with("new-shape p99 within 10 ms against the old shape's within 1 ms"),
            "{}",
            b.figures
        );
        // Too few new-shape operations to judge errors.
        assert_eq!(
            g.breach(
                &traffic(side(1000, 0, 4), side(50, 10, 4), 0, 0),
                &[],
                None,
                0,
                60_000
            ),
            None
        );

        let behind = [Behind {
            service: "api".into(),
            instance_id: "api-1".into(),
        }];
        assert_eq!(g.breach(&healthy, &behind, None, 0, 9 * 60_000), None);
        let b = g.breach(&healthy, &behind, None, 0, 11 * 60_000).unwrap();
        assert_eq!(b.guardrail, "instances_behind");
        assert!(b.figures.ends_with(": api-1 of api"), "{}", b.figures);
    }

    #[test]
    fn a_stalled_or_held_backfill_halts() {
        let g = Guardrails::default();
        let quiet = TrafficCounts::default();
        let minute = 60_000;
        let running = BackfillWatch {
            last_batch_ms: 0,
            held: None,
        };
        assert_eq!(g.breach(&quiet, &[], Some(&running), 0, 14 * minute), None);
        let b = g
            .breach(&quiet, &[], Some(&running), 0, 16 * minute)
            .unwrap();
        assert_eq!(b.guardrail, "backfill_stalled");
        assert_eq!(
            b.figures,
            "the backfill has reported no batch for 16m (limit 15m): is its runner alive?"
        );
        // Held on purpose: judged by how long it has held, not by its last batch.
        let held = BackfillWatch {
            last_batch_ms: 0,
            held: Some((10 * minute, "replica lag 3s over 2s".to_owned())),
        };
        assert_eq!(g.breach(&quiet, &[], Some(&held), 0, 20 * minute), None);
        let b = g.breach(&quiet, &[], Some(&held), 0, 26 * minute).unwrap();
        assert_eq!(b.guardrail, "backfill_held");
        assert_eq!(
            b.figures,
            "the backfill has held itself back for 16m (limit 15m): replica lag 3s over 2s"
        );
    }

    fn observed(
        last_pass_ms: i64,
        failing: Option<(String, i64)>,
        uses: Vec<usage::StatementUse>,
    ) -> Observation {
        Observation::Declared {
            target: "main".into(),
            configured: true,
            nothing_declared: false,
            covered_since: Some((0, "first observed".into())),
            last_pass_ms: Some(last_pass_ms),
            failing,
            stale_after_ms: 3 * 60_000,
            uses,
            retire: None,
            log_failing: None,
        }
    }

    fn read_by(at: i64, entry: &str, application_name: &str) -> usage::StatementUse {
        usage::StatementUse {
            minute_ms: at - at.rem_euclid(60_000),
            last_seen_ms: at,
            entry: entry.into(),
            statement: format!("SELECT username FROM users -- {entry}"),
            role: "app".into(),
            objects: vec![usage::ObjectRef {
                object: "column:users.username".into(),
                possible: None,
            }],
            calls: 7,
            rows: 7,
            sessions: if application_name.is_empty() {
                Vec::new()
            } else {
                vec![usage::Session {
                    role: "app".into(),
                    application_name: application_name.into(),
                    client_addr: "10.0.0.5".into(),
                }]
            },
        }
    }

    #[test]
    fn an_outside_caller_of_the_retiring_old_shape_halts() {
        let g = Guardrails::default();
        let minute = 60_000;
        let known = ["orders-svc".to_owned()];
        let obs = observed(
            20 * minute,
            None,
            vec![
                // Before the last change: judged by the gate, not by this step.
                read_by(5 * minute, "q0", "report-cron"),
                // The migration's own client, and a statement whose caller was not caught.
                read_by(15 * minute, "q1", "orders-svc"),
                read_by(16 * minute, "q2", ""),
            ],
        );
        let watch = |observation, old_shape_retiring| DatabaseWatch {
            observation,
            old_shape_retiring,
            known_services: &known,
        };
        assert_eq!(
            g.database_breach(watch(&obs, true), 10 * minute, 20 * minute),
            None
        );

        let Observation::Declared { uses, .. } = &obs else {
            unreachable!()
        };
        let mut uses = uses.clone();
        uses.push(read_by(18 * minute, "q3", "report-cron"));
        let obs = observed(20 * minute, None, uses);
        // Before rampdown the old shape is still written: reading it is fine.
        assert_eq!(
            g.database_breach(watch(&obs, false), 10 * minute, 20 * minute),
            None
        );
        let b = g
            .database_breach(watch(&obs, true), 10 * minute, 20 * minute)
            .unwrap();
        assert_eq!(b.guardrail, "database_old_shape_use");
        assert_eq!(
            b.figures,
            "database main ran `SELECT username FROM users -- q3` 7 time(s) in the 10m since the \
             last change, by report-cron (role app, from 10.0.0.5), not a client of this migration"
        );
    }

    #[test]
    fn a_target_unobserved_for_too_long_halts() {
        let g = Guardrails::default();
        let minute = 60_000;
        let failing = observed(
            0,
            Some(("password authentication failed".into(), 2 * minute)),
            vec![],
        );
        let watch = DatabaseWatch {
            observation: &failing,
            old_shape_retiring: false,
            known_services: &[],
        };
        assert_eq!(g.database_breach(watch, 0, 11 * minute), None);
        let b = g.database_breach(watch, 0, 13 * minute).unwrap();
        assert_eq!(b.guardrail, "database_unobserved");
        assert!(
            b.figures.contains("password authentication failed"),
            "{}",
            b.figures
        );
        assert!(b.figures.ends_with("(for 11m, limit 10m)"), "{}", b.figures);
        // A stale observer counts from its last pass.
        let stale = observed(minute, None, vec![]);
        let watch = DatabaseWatch {
            observation: &stale,
            ..watch
        };
        assert_eq!(g.database_breach(watch, 0, 10 * minute), None);
        assert_eq!(
            g.database_breach(watch, 0, 12 * minute).unwrap().guardrail,
            "database_unobserved"
        );
        // No target declared: nothing to judge.
        let watch = DatabaseWatch {
            observation: &Observation::NotDeclared,
            ..watch
        };
        assert_eq!(g.database_breach(watch, 0, 60 * minute), None);
    }
}
