//! What clients report about the traffic they ran through a migration, and how counts add up.
//! Shared by the client (which counts) and the server (which rolls counts up per minute).

/// Upper bounds (microseconds) of the latency buckets; a 16th bucket holds everything slower.
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Index of the bucket a latency falls in.
#[inline]
pub fn latency_bucket(micros: u64) -> usize {
    LATENCY_BOUNDS_US
        .iter()
        .position(|bound| micros <= *bound)
        .unwrap_or(LATENCY_BOUNDS_US.len())
}

/// How bucket `i` reads for people: "≤ 50 µs", "≤ 2.5 ms", … and, for the last, open-ended
/// bucket, "> 2.5 s" (it holds everything slower than the largest bound).
pub fn latency_bucket_label(i: usize) -> String {
    match LATENCY_BOUNDS_US.get(i) {
        Some(&bound) => format!("≤ {}", format_micros(bound)),
        None => format!(
            "> {}",
            format_micros(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1])
        ),
    }
}

/// Microseconds in the largest unit that keeps one decimal: 50 µs, 2.5 ms, 1 s.
fn format_micros(us: u64) -> String {
    let (value, unit) = match us {
        1_000_000.. => (us as f64 / 1_000_000.0, "s"),
        1_000.. => (us as f64 / 1_000.0, "ms"),
        _ => return format!("{us} µs"),
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

/// A fixed-bucket latency histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram(pub [u64; LATENCY_BUCKETS]);

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.0[latency_bucket(micros)] += 1;
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }

    /// The index of the bucket holding quantile `q` (0..=1); `None` when empty.
    pub fn quantile_bucket(&self, q: f64) -> Option<usize> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.0.iter().position(|n| {
            seen += n;
            seen >= rank
        })
    }

    /// The upper bound (µs) of the bucket holding quantile `q` (0..=1); `None` when empty or
    /// when it falls in the open-ended last bucket.
    pub fn quantile_upper_bound_us(&self, q: f64) -> Option<u64> {
        self.quantile_bucket(q)
            .and_then(|i| LATENCY_BOUNDS_US.get(i).copied())
    }
}

/// What one side of a migration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideCounts {
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    pub latency: Histogram,
}

impl SideCounts {
    pub fn add(&mut self, other: &SideCounts) {
        self.reads = self.reads.saturating_add(other.reads);
        self.writes = self.writes.saturating_add(other.writes);
        self.errors = self.errors.saturating_add(other.errors);
        self.latency.add(&other.latency);
    }

    pub fn operations(&self) -> u64 {
        self.reads.saturating_add(self.writes)
    }
}

/// Counts for one migration over some interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    pub old: SideCounts,
    pub new: SideCounts,
    pub comparisons: u64,
    pub mismatches: u64,
    pub evaluations_without_entity: u64,
    pub fallback_evaluations: u64,
}

impl TrafficCounts {
    pub fn add(&mut self, other: &TrafficCounts) {
        self.old.add(&other.old);
        self.new.add(&other.new);
        self.comparisons = self.comparisons.saturating_add(other.comparisons);
        self.mismatches = self.mismatches.saturating_add(other.mismatches);
        self.evaluations_without_entity = self
            .evaluations_without_entity
            .saturating_add(other.evaluations_without_entity);
        self.fallback_evaluations = self
            .fallback_evaluations
            .saturating_add(other.fallback_evaluations);
    }

    pub fn is_empty(&self) -> bool {
        *self == TrafficCounts::default()
    }
}

/// Start of the minute holding `ms`.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000) * 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(50), 0);
        assert_eq!(latency_bucket(51), 1);
        assert_eq!(latency_bucket(2_500_000), 14);
        assert_eq!(latency_bucket(2_500_001), 15);
        assert_eq!(latency_bucket(u64::MAX), 15);
    }

    #[test]
    fn quantiles_report_bucket_upper_bounds() {
        let mut h = Histogram::default();
        for us in [10, 20, 30, 40, 60, 70, 80, 90, 900, 20_000] {
            h.record(us);
        }
        assert_eq!(h.count(), 10);
        assert_eq!(h.quantile_upper_bound_us(0.5), Some(100));
        assert_eq!(h.quantile_upper_bound_us(0.9), Some(1_000));
        assert_eq!(h.quantile_upper_bound_us(0.99), Some(25_000));
        assert_eq!(Histogram::default().quantile_upper_bound_us(0.5), None);
    }

    #[test]
    fn counts_add_up() {
        let mut a = TrafficCounts::default();
        a.old.reads = 2;
        a.new.latency.record(10);
        a.mismatches = 1;
        let mut total = TrafficCounts::default();
        total.add(&a);
        total.add(&a);
        assert_eq!(total.old.reads, 4);
        assert_eq!(total.new.latency.count(), 2);
        assert_eq!(total.mismatches, 2);
        assert_eq!(minute_of(119_999), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }

    #[test]
    fn bucket_labels_name_their_bounds_and_the_overflow() {
        let labels: Vec<String> = (0..LATENCY_BUCKETS).map(latency_bucket_label).collect();
        assert_eq!(labels[0], "≤ 50 µs");
        assert_eq!(labels[4], "≤ 1 ms");
        assert_eq!(labels[5], "≤ 2.5 ms");
        assert_eq!(labels[13], "≤ 1 s");
        assert_eq!(labels[14], "≤ 2.5 s");
        assert_eq!(labels[15], "> 2.5 s");
    }
}

/// A shadow read whose old and new values differed, as a client reported it: the entity, so an
/// operator can find and repair it, and what the application's comparison said differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MismatchSample {
    pub entity_key: String,
    /// Empty when the comparison gave no description.
    pub description: String,
    /// When (the client's clock, Unix ms).
    pub observed_at_ms: i64,
}
