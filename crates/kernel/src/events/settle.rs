//! How far a PostgreSQL outbox may be read: glimpses (see [`glimpse`](super::outbox::glimpse))
//! turned into a bound that never passes a `seq` whose transaction may still commit.

use super::outbox::Glimpse;
use std::collections::HashSet;

/// Glimpses past their lock holders are kept at most this many; older ones are merged (the
/// newer maximum, waiting for both sets of holders), which only delays them.
const MAX_PENDING: usize = 16;

/// The bound one dispatcher has established so far, and the glimpses whose writers were still
/// open when taken.
#[derive(Debug, Default)]
pub(crate) struct Settling {
    settled: i64,
    pending: Vec<Glimpse>,
}

impl Settling {
    /// Takes a new glimpse into account; returns the highest `seq` that is safe to read up to.
    ///
    /// A glimpse's maximum is safe once none of its holders holds the lock any more: they are
    /// looked for among the new glimpse's holders, read later (a virtual transaction id names
    /// one transaction; a writer holds the lock without a break until it ends).
    pub(crate) fn observe(&mut self, now: Glimpse) -> i64 {
        let open: HashSet<&str> = now.open.iter().map(String::as_str).collect();
        for glimpse in &self.pending {
            if glimpse.open.iter().all(|holder| !open.contains(holder.as_str())) {
                self.settled = self.settled.max(glimpse.max);
            }
        }
        if now.open.is_empty() {
            self.settled = self.settled.max(now.max);
        }
        let settled = self.settled;
        self.pending.retain(|glimpse| glimpse.max > settled);
        if now.max > settled && !now.open.is_empty() {
            self.pending.push(now);
        }
        if self.pending.len() > MAX_PENDING {
            let oldest = self.pending.remove(0);
            self.pending[0].open.extend(oldest.open);
        }
        self.settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glimpse(max: i64, open: &[&str]) -> Glimpse {
        Glimpse { max, open: open.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn with_no_writer_open_the_maximum_is_safe_at_once() {
        let mut settling = Settling::default();
        assert_eq!(settling.observe(glimpse(7, &[])), 7);
        assert!(settling.pending.is_empty());
    }

    #[test]
    fn a_maximum_waits_for_the_writers_open_when_it_was_read() {
        let mut settling = Settling::default();
        assert_eq!(settling.observe(glimpse(5, &[])), 5);
        // 6 committed, but "3/1" may hold a lower number still.
        assert_eq!(settling.observe(glimpse(6, &["3/1"])), 5);
        assert_eq!(settling.pending.len(), 1);
        // "3/1" still open, "4/9" new: neither 6 nor 8 is safe yet.
        assert_eq!(settling.observe(glimpse(8, &["3/1", "4/9"])), 5);
        // "3/1" ended: 6 is safe, 8 still waits for "4/9" (which a later writer keeps company).
        assert_eq!(settling.observe(glimpse(9, &["4/9", "5/2"])), 6);
        // All ended: the latest maximum is safe, nothing waits.
        assert_eq!(settling.observe(glimpse(9, &[])), 9);
        assert!(settling.pending.is_empty());
    }

    #[test]
    fn the_bound_never_goes_back() {
        let mut settling = Settling::default();
        assert_eq!(settling.observe(glimpse(10, &[])), 10);
        // A stale read (a reader on a lagging snapshot) cannot lower it.
        assert_eq!(settling.observe(glimpse(8, &[])), 10);
    }

    #[test]
    fn pending_glimpses_are_bounded_and_merged_conservatively() {
        let mut settling = Settling::default();
        for max in 1..=40 {
            settling.observe(glimpse(max, &["9/9", &format!("1/{max}")]));
        }
        assert!(settling.pending.len() <= MAX_PENDING);
        // Every writer but the long one ended: nothing is safe while it holds the lock.
        assert_eq!(settling.observe(glimpse(41, &["9/9"])), 0);
        assert_eq!(settling.observe(glimpse(41, &[])), 41);
    }
}
