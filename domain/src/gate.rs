//! The contract gate (rule 7): may the old shape be dropped now? Pure: the server passes the
//! migration, the live fleet, the migration's reported traffic per minute, the time, and its
//! policy; the answer lists every check with its evidence and what would make it pass.

use crate::migration::BackfillStatus;
use crate::time::{format_minute, format_span};
use crate::traffic::{TrafficCounts, minute_of};
use crate::{Fleet, Migration, Stage};
use serde::{Deserialize, Serialize};

/// Server-wide gate settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatePolicy {
    /// No migration soaks for less than this, whatever its own setting.
    pub min_soak_seconds: u64,
    /// The largest share of new-shape operations that may fail during the soak (0.001 = 0.1%).
    pub max_new_error_ratio: f64,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            min_soak_seconds: 0,
            max_new_error_ratio: 0.001,
        }
    }
}

/// Client reports arrive per minute, a few seconds after the operations they count; counting
/// from this long after a window opens keeps operations from just before it out.
pub const REPORT_GRACE_MS: i64 = 2 * 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Soak,
    ClientsApplied,
    NoOldShapeTraffic,
    NoShadowMismatch,
    NewShapeErrors,
    Backfill,
    /// The migration is already contracted (the only check then).
    Contracted,
}

impl CheckId {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Soak => "soak",
            CheckId::ClientsApplied => "clients_applied",
            CheckId::NoOldShapeTraffic => "no_old_shape_traffic",
            CheckId::NoShadowMismatch => "no_shadow_mismatch",
            CheckId::NewShapeErrors => "new_shape_errors",
            CheckId::Backfill => "backfill",
            CheckId::Contracted => "contracted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub id: CheckId,
    pub passed: bool,
    /// What was found, in plain words.
    pub evidence: String,
    /// What would make it pass (empty when it passes).
    pub remedy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateReport {
    pub key: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// When the soak period ends (or ended), if it has started.
    pub soak_ends_at_ms: Option<i64>,
    pub evaluated_at_ms: i64,
}

impl GateReport {
    /// The failing checks' remedies, for a refusal message.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.id.as_str(), c.remedy))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Evaluates every check. `traffic` is the migration's reported counts per minute (start of
/// minute, counts), any order.
pub fn evaluate(
    m: &Migration,
    fleet: &Fleet,
    traffic: &[(i64, TrafficCounts)],
    now_ms: i64,
    policy: &GatePolicy,
) -> GateReport {
    if m.stage == Stage::Contracted {
        return GateReport {
            key: m.key.to_string(),
            passed: true,
            checks: vec![Check {
                id: CheckId::Contracted,
                passed: true,
                evidence: "the migration is contracted: the old shape was dropped".to_owned(),
                remedy: String::new(),
            }],
            soak_ends_at_ms: None,
            evaluated_at_ms: now_ms,
        };
    }
    let soak_ms = (m.soak_seconds.max(policy.min_soak_seconds) as i64).saturating_mul(1000);
    let at_full = m.stage == Stage::Complete && m.rollout_bp.is_full();
    let soak_start = m.soak_started_at_ms.filter(|_| at_full);
    let soak_ends = soak_start.map(|s| s.saturating_add(soak_ms));
    let sum = |from_ms: i64, to_ms: i64| {
        let mut total = TrafficCounts::default();
        for (minute, counts) in traffic {
            if *minute >= minute_of(from_ms) && *minute <= to_ms {
                total.add(counts);
            }
        }
        total
    };
    let mut checks = Vec::with_capacity(6);

    // 1. complete at 100% for the whole soak period.
    checks.push(match (soak_start, soak_ends) {
        (Some(start), Some(ends)) if now_ms >= ends => Check {
            id: CheckId::Soak,
            passed: true,
            evidence: format!(
                "complete at 100% since {} ({}), soak {}",
                format_minute(start),
                format_span(now_ms - start),
                format_span(soak_ms)
            ),
            remedy: String::new(),
        },
        (Some(start), Some(ends)) => Check {
            id: CheckId::Soak,
            passed: false,
            evidence: format!(
                "complete at 100% since {} ({} of a {} soak)",
                format_minute(start),
                format_span(now_ms - start),
                format_span(soak_ms)
            ),
            remedy: format!(
                "soak ends {}, in {}",
                format_minute(ends),
                format_span(ends - now_ms)
            ),
        },
        _ => Check {
            id: CheckId::Soak,
            passed: false,
            evidence: format!(
                "the front is at {} {}, not complete at 100%",
                m.stage, m.rollout_bp
            ),
            remedy: format!(
                "ramp complete to 100%; the soak ({}) starts then, and any step back restarts it",
                format_span(soak_ms)
            ),
        },
    });

    // 2. every live instance applied that state; every expected service is live.
    checks.push(
        match m.full_since.get(&Stage::Complete).filter(|_| at_full) {
            None => Check {
                id: CheckId::ClientsApplied,
                passed: false,
                evidence: "complete is not at 100%, so there is no state to apply yet".to_owned(),
                remedy: "ramp complete to 100% and let clients acknowledge it".to_owned(),
            },
            Some(&since) => {
                let waiting = fleet.not_applied(since, &m.expected_services);
                if waiting.is_empty() {
                    Check {
                        id: CheckId::ClientsApplied,
                        passed: true,
                        evidence: format!(
                            "{} live instance(s) applied version {since} or later{}",
                            fleet.live.len(),
                            if m.expected_services.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    "; expected services live: {}",
                                    m.expected_services.join(", ")
                                )
                            }
                        ),
                        remedy: String::new(),
                    }
                } else {
                    Check {
                        id: CheckId::ClientsApplied,
                        passed: false,
                        evidence: waiting.join("; "),
                        remedy: format!(
                            "every live instance must apply version {since} (complete at 100%) and \
                         every expected service must have a live instance"
                        ),
                    }
                }
            }
        },
    );

    // 3. no old-shape reads or writes during the soak period (its last `soak` stretch).
    checks.push(match soak_start {
        None => Check {
            id: CheckId::NoOldShapeTraffic,
            passed: false,
            evidence: "the soak has not started".to_owned(),
            remedy: "ramp complete to 100%; old-shape traffic is checked over the soak period"
                .to_owned(),
        },
        Some(start) => {
            let from = (start + REPORT_GRACE_MS).max(now_ms - soak_ms);
            let old = sum(from, now_ms).old;
            let last_old = traffic
                .iter()
                .filter(|(minute, c)| {
                    *minute >= minute_of(from) && *minute <= now_ms && c.old.operations() > 0
                })
                .map(|(minute, _)| *minute)
                .max();
            match last_old {
                None => Check {
                    id: CheckId::NoOldShapeTraffic,
                    passed: true,
                    evidence: if from > now_ms {
                        format!(
                            "the soak is under two minutes old; old-shape traffic counts from {}",
                            format_minute(from)
                        )
                    } else {
                        format!(
                            "no old-shape read or write reported since {}",
                            format_minute(from)
                        )
                    },
                    remedy: String::new(),
                },
                Some(last) => Check {
                    id: CheckId::NoOldShapeTraffic,
                    passed: false,
                    evidence: format!(
                        "{} old-shape read(s) and {} write(s) reported since {}, the last in the \
                         minute of {}",
                        old.reads,
                        old.writes,
                        format_minute(from),
                        format_minute(last)
                    ),
                    remedy: format!(
                        "find what still uses the old shape (`switchyard traffic {}` and \
                         `switchyard instances --migration {}`); the check passes once none is \
                         reported for the soak period, at the earliest {}",
                        m.key,
                        m.key,
                        format_minute(last + 60_000 + soak_ms)
                    ),
                },
            }
        }
    });

    // 4. no shadow mismatch in the last live window.
    checks.push(match m.live_window {
        None => Check {
            id: CheckId::NoShadowMismatch,
            passed: false,
            evidence: "the migration has never been at live".to_owned(),
            remedy: "run live (shadow reads compared) before contracting".to_owned(),
        },
        Some(w) => {
            let end = w.ended_at_ms.unwrap_or(now_ms);
            // What was recorded at the window's close, or what is still retained (reports
            // arriving after the close), whichever saw more.
            let retained = sum(w.started_at_ms, end);
            let recorded = w.recorded.unwrap_or_default();
            let c = crate::migration::Compared {
                comparisons: retained.comparisons.max(recorded.comparisons),
                mismatches: retained.mismatches.max(recorded.mismatches),
            };
            let window = format!(
                "{} to {}",
                format_minute(w.started_at_ms),
                format_minute(end)
            );
            if c.mismatches == 0 {
                Check {
                    id: CheckId::NoShadowMismatch,
                    passed: true,
                    evidence: format!(
                        "{} shadow comparison(s), no mismatch, in the last live window ({window})",
                        c.comparisons
                    ),
                    remedy: String::new(),
                }
            } else {
                Check {
                    id: CheckId::NoShadowMismatch,
                    passed: false,
                    evidence: format!(
                        "{} of {} shadow comparison(s) mismatched in the last live window \
                         ({window})",
                        c.mismatches, c.comparisons
                    ),
                    remedy: "fix the new shape's data or code, step back to live and run it \
                             again without mismatches"
                        .to_owned(),
                }
            }
        }
    });

    // 5. new-shape errors under the threshold during the soak period.
    checks.push({
        let from = soak_start.map_or(now_ms - soak_ms, |s| {
            (s + REPORT_GRACE_MS).max(now_ms - soak_ms)
        });
        let new = sum(from, now_ms).new;
        let ops = new.operations();
        let ratio = if ops == 0 {
            0.0
        } else {
            new.errors as f64 / ops as f64
        };
        let limit = policy.max_new_error_ratio;
        let evidence = format!(
            "{} of {} new-shape operation(s) failed since {} ({:.3}%, limit {:.3}%)",
            new.errors,
            ops,
            format_minute(from),
            ratio * 100.0,
            limit * 100.0
        );
        if ratio <= limit {
            Check {
                id: CheckId::NewShapeErrors,
                passed: true,
                evidence,
                remedy: String::new(),
            }
        } else {
            Check {
                id: CheckId::NewShapeErrors,
                passed: false,
                evidence,
                remedy: "bring new-shape errors under the limit; they are measured over the soak \
                         period"
                    .to_owned(),
            }
        }
    });

    // 6. the backfill, if any, complete.
    checks.push(match m.backfill.status {
        BackfillStatus::None => Check {
            id: CheckId::Backfill,
            passed: true,
            evidence: "the migration has no backfill".to_owned(),
            remedy: String::new(),
        },
        BackfillStatus::Complete => Check {
            id: CheckId::Backfill,
            passed: true,
            evidence: "the backfill is recorded complete".to_owned(),
            remedy: String::new(),
        },
        _ => Check {
            id: CheckId::Backfill,
            passed: false,
            evidence: format!(
                "the backfill is {}",
                if m.backfill.status == BackfillStatus::Running {
                    "running"
                } else {
                    "not started"
                }
            ),
            remedy: "finish the backfill and record backfill-complete".to_owned(),
        },
    });

    GateReport {
        key: m.key.to_string(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        soak_ends_at_ms: soak_ends,
        evaluated_at_ms: now_ms,
    }
}

/// Records the shadow comparisons of a live window that the change from `before` to `after`
/// closed, from the migration's reported traffic, so the gate keeps its evidence after the
/// telemetry is pruned.
pub fn record_closed_live_window(
    before: &Migration,
    after: &mut Migration,
    traffic: &[(i64, TrafficCounts)],
) {
    let closed_now = before.live_window.is_some_and(|w| w.ended_at_ms.is_none());
    let Some(w) = after.live_window.as_mut() else {
        return;
    };
    let Some(end) = w.ended_at_ms.filter(|_| closed_now) else {
        return;
    };
    let mut total = crate::migration::Compared::default();
    for (minute, counts) in traffic {
        if *minute >= minute_of(w.started_at_ms) && *minute <= end {
            total.comparisons += counts.comparisons;
            total.mismatches += counts.mismatches;
        }
    }
    w.recorded = Some(total);
}
