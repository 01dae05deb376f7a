//! `GET /v1/vocabulary`: the names the API speaks, from their one definition in the domain, so
//! that clients (the dashboard among them) keep no copy.

use serde::{Deserialize, Serialize};
use switchyard_domain::traffic::{LATENCY_BOUNDS_US, LATENCY_BUCKETS, latency_bucket_label};
use switchyard_domain::{EventKind, Stage};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocabulary {
    /// In order, `off` first.
    pub stages: Vec<String>,
    pub events: Vec<EventName>,
    /// One per latency histogram bucket, in order.
    pub latency_buckets: Vec<LatencyBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventName {
    pub name: String,
    pub label: String,
    /// The permission recording it needs.
    pub permission: String,
    /// A fact recorded once it has happened; the others steer or report a running backfill.
    pub milestone: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyBucket {
    /// `None` for the last bucket, which holds everything slower than the largest bound.
    pub upper_bound_us: Option<u64>,
    pub label: String,
}

impl Vocabulary {
    /// The server's vocabulary, as this build's domain defines it.
    pub fn of_domain() -> Self {
        Self {
            stages: Stage::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
            events: EventKind::ALL
                .into_iter()
                .map(|e| EventName {
                    name: e.as_str().to_owned(),
                    label: e.label().to_owned(),
                    permission: e.permission().as_str().to_owned(),
                    milestone: e.is_milestone(),
                })
                .collect(),
            latency_buckets: (0..LATENCY_BUCKETS)
                .map(|i| LatencyBucket {
                    upper_bound_us: LATENCY_BOUNDS_US.get(i).copied(),
                    label: latency_bucket_label(i),
                })
                .collect(),
        }
    }
}
