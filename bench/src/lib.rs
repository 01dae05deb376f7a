//! What the load tools share: percentiles of measured durations, the descriptor limit, and
//! splitting connections among threads.

use std::time::Duration;

/// The `p` quantile (0 to 1) of durations sorted ascending, by nearest rank; zero if none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Raises the soft limit on open descriptors to the hard limit, and returns it: a tool holding
/// a connection per simulated client needs one descriptor each.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// `items` in `min(parts, items.len())` non-empty runs, in order, whose lengths differ by at
/// most one: one per thread, so every thread has work and the count is known up front.
pub fn split<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let parts = parts.clamp(1, items.len().max(1));
    let (base, extra) = (items.len() / parts, items.len() % parts);
    let mut items = items.into_iter();
    (0..parts)
        .map(|i| items.by_ref().take(base + usize::from(i < extra)).collect())
        .filter(|run: &Vec<T>| !run.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_each_thread_a_near_equal_run_in_order() {
        assert_eq!(
            split((0..10).collect(), 4),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9]]
        );
        // Six threads for ten connections: six runs (sized by chunks of two it would be five).
        assert_eq!(split((0..10).collect::<Vec<_>>(), 6).len(), 6);
        assert_eq!(split(vec![1, 2], 5), vec![vec![1], vec![2]]);
        assert!(split(Vec::<u8>::new(), 3).is_empty());
    }

    #[test]
    fn percentile_is_the_nearest_rank() {
        let ms: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&ms[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
