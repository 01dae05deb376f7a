//! The facts recorded about a migration's schema or data, and their names.
//!
//! Every surface spells an event the way [`EventKind::as_str`] does (`expand_applied`); the CLI
//! also accepts the dashed form (`expand-applied`). The HTTP parser, the CLI's choices, the
//! OpenAPI enum and the dashboard (through the server) all derive from [`EventKind::ALL`].

use crate::migration::BackfillStatus;
use crate::types::check_count;
use crate::{Migration, Stage};
use std::fmt;
use std::str::FromStr;

/// A fact recorded about the migration's schema or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    ExpandApplied,
    BackfillStarted,
    BackfillProgress {
        rows_done: u64,
        rows_total_estimate: u64,
    },
    BackfillComplete,
    /// Runners stop between batches (a running statement is never killed).
    BackfillPaused,
    BackfillResumed,
    /// Stops the backfill and forgets its progress: it can be started again from the start.
    BackfillCancelled,
    OldShapeRepaired,
    /// The old shape was made unusable but recoverable (renamed): the drop waits a probation.
    Retired,
    /// The retired old shape was given back its names.
    Restored,
    Contracted,
}

/// An event without its data: what a name on the wire stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    ExpandApplied,
    BackfillStarted,
    BackfillProgress,
    BackfillComplete,
    BackfillPaused,
    BackfillResumed,
    BackfillCancelled,
    OldShapeRepaired,
    Retired,
    Restored,
    Contracted,
}

impl EventKind {
    /// Every event, in the order a migration usually meets them.
    pub const ALL: [EventKind; 11] = [
        EventKind::ExpandApplied,
        EventKind::BackfillStarted,
        EventKind::BackfillProgress,
        EventKind::BackfillComplete,
        EventKind::BackfillPaused,
        EventKind::BackfillResumed,
        EventKind::BackfillCancelled,
        EventKind::OldShapeRepaired,
        EventKind::Retired,
        EventKind::Restored,
        EventKind::Contracted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ExpandApplied => "expand_applied",
            EventKind::BackfillStarted => "backfill_started",
            EventKind::BackfillProgress => "backfill_progress",
            EventKind::BackfillComplete => "backfill_complete",
            EventKind::BackfillPaused => "backfill_paused",
            EventKind::BackfillResumed => "backfill_resumed",
            EventKind::BackfillCancelled => "backfill_cancelled",
            EventKind::OldShapeRepaired => "old_shape_repaired",
            EventKind::Retired => "retired",
            EventKind::Restored => "restored",
            EventKind::Contracted => "contracted",
        }
    }

    /// What recording the event says, for people (menus, help texts).
    pub fn label(self) -> &'static str {
        match self {
            EventKind::ExpandApplied => "Expand DDL applied",
            EventKind::BackfillStarted => "Backfill started",
            EventKind::BackfillProgress => "Backfill progress",
            EventKind::BackfillComplete => "Backfill complete",
            EventKind::BackfillPaused => "Backfill paused",
            EventKind::BackfillResumed => "Backfill resumed",
            EventKind::BackfillCancelled => "Backfill cancelled",
            EventKind::OldShapeRepaired => "Old shape repaired (reverse backfill)",
            EventKind::Retired => "Old shape retired (renamed, recoverable)",
            EventKind::Restored => "Old shape restored (retire undone)",
            EventKind::Contracted => "Contracted (old shape dropped)",
        }
    }

    /// A milestone is a fact someone records once it has happened in the world (DDL applied, a
    /// backfill started or finished, the old shape repaired or dropped); the others steer or
    /// report a running backfill (pause, resume, cancel, progress).
    pub fn is_milestone(self) -> bool {
        matches!(
            self,
            EventKind::ExpandApplied
                | EventKind::BackfillStarted
                | EventKind::BackfillComplete
                | EventKind::OldShapeRepaired
                | EventKind::Retired
                | EventKind::Restored
                | EventKind::Contracted
        )
    }

    /// Whether recording the event could change `m` now: the state it needs holds, and it has
    /// not happened already. Surfaces offer only these; the rules still have the last word
    /// (a backfill may not start before every client dual-writes, the gate decides
    /// `contracted`).
    pub fn applies_to(self, m: &Migration) -> bool {
        let backfill = &m.backfill;
        let running = backfill.status == BackfillStatus::Running;
        match self {
            EventKind::ExpandApplied => !m.expand_applied,
            EventKind::BackfillStarted => backfill.status == BackfillStatus::NotStarted,
            EventKind::BackfillProgress
            | EventKind::BackfillComplete
            | EventKind::BackfillCancelled => running,
            EventKind::BackfillPaused => running && !backfill.paused,
            EventKind::BackfillResumed => running && backfill.paused,
            EventKind::OldShapeRepaired => m.old_shape_stale,
            EventKind::Retired => {
                m.retire_probation_seconds.is_some()
                    && m.stage == Stage::Complete
                    && m.retired_at_ms.is_none()
            }
            EventKind::Restored => m.retired_at_ms.is_some() && m.stage != Stage::Contracted,
            EventKind::Contracted => m.stage == Stage::Complete,
        }
    }

    /// The event with its data; `rows` (done, total estimate) is needed by progress only, and each
    /// count must be storable ([`check_count`]).
    pub fn with_rows(self, rows: Option<(u64, u64)>) -> Result<Event, UnknownEvent> {
        Ok(match self {
            EventKind::ExpandApplied => Event::ExpandApplied,
            EventKind::BackfillStarted => Event::BackfillStarted,
            EventKind::BackfillProgress => {
                let (rows_done, rows_total_estimate) = rows.ok_or_else(|| {
                    UnknownEvent(
                        "backfill_progress needs rows_done (and rows_total_estimate)".into(),
                    )
                })?;
                // Both transports build the event here: checked once, before anything is written.
                let count = |what, n| check_count(what, n).map_err(|e| UnknownEvent(e.0));
                Event::BackfillProgress {
                    rows_done: count("rows_done", rows_done)?,
                    rows_total_estimate: count("rows_total_estimate", rows_total_estimate)?,
                }
            }
            EventKind::BackfillComplete => Event::BackfillComplete,
            EventKind::BackfillPaused => Event::BackfillPaused,
            EventKind::BackfillResumed => Event::BackfillResumed,
            EventKind::BackfillCancelled => Event::BackfillCancelled,
            EventKind::OldShapeRepaired => Event::OldShapeRepaired,
            EventKind::Retired => Event::Retired,
            EventKind::Restored => Event::Restored,
            EventKind::Contracted => Event::Contracted,
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event name that is not one of [`EventKind::ALL`], or an event missing its data or carrying
/// data out of range. The message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownEvent(pub String);

impl FromStr for EventKind {
    type Err = UnknownEvent;

    /// Takes `expand_applied` and `expand-applied` alike.
    fn from_str(name: &str) -> Result<Self, UnknownEvent> {
        let normalized = name.replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == normalized)
            .ok_or_else(|| {
                let allowed: Vec<&str> = Self::ALL.iter().map(|e| e.as_str()).collect();
                UnknownEvent(format!(
                    "unknown event {:?}: allowed {}",
                    name.chars().take(64).collect::<String>(),
                    allowed.join(", ")
                ))
            })
    }
}

impl Event {
    pub fn kind(self) -> EventKind {
        match self {
            Event::ExpandApplied => EventKind::ExpandApplied,
            Event::BackfillStarted => EventKind::BackfillStarted,
            Event::BackfillProgress { .. } => EventKind::BackfillProgress,
            Event::BackfillComplete => EventKind::BackfillComplete,
            Event::BackfillPaused => EventKind::BackfillPaused,
            Event::BackfillResumed => EventKind::BackfillResumed,
            Event::BackfillCancelled => EventKind::BackfillCancelled,
            Event::OldShapeRepaired => EventKind::OldShapeRepaired,
            Event::Retired => EventKind::Retired,
            Event::Restored => EventKind::Restored,
            Event::Contracted => EventKind::Contracted,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_both_spellings() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(
                kind.as_str().replace('_', "-").parse::<EventKind>(),
                Ok(kind)
            );
            assert_eq!(kind.to_string(), kind.as_str());
            let event = kind.with_rows(Some((1, 2))).unwrap();
            assert_eq!(event.kind(), kind);
        }
    }

    #[test]
    fn an_unknown_name_lists_every_allowed_one() {
        let err = "expand".parse::<EventKind>().unwrap_err();
        for kind in EventKind::ALL {
            assert!(err.0.contains(kind.as_str()), "{err}");
        }
    }

    #[test]
    fn progress_needs_its_rows() {
        assert!(EventKind::BackfillProgress.with_rows(None).is_err());
        assert_eq!(
            EventKind::BackfillProgress.with_rows(Some((5, 10))),
            Ok(Event::BackfillProgress {
                rows_done: 5,
                rows_total_estimate: 10
            })
        );
    }

    #[test]
    fn progress_rows_must_fit_the_store() {
        let max = crate::types::MAX_STORED_NUMBER;
        assert!(
            EventKind::BackfillProgress
                .with_rows(Some((max, max)))
                .is_ok()
        );
        for rows in [(max + 1, 0), (0, u64::MAX)] {
            let err = EventKind::BackfillProgress
                .with_rows(Some(rows))
                .unwrap_err();
            assert!(
                err.0
                    .contains("out of range: allowed 0 to 9223372036854775807"),
                "{err}"
            );
        }
    }
}
