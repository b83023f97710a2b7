//! How long a model's answers take, as the gateway sees them: the p99 of its recent answers,
//! from which each request's answer timeout follows (a few seconds above it, so a frozen
//! server costs its clients seconds, not the longest timeout).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Answers kept for the p99.
const WINDOW: usize = 512;
/// Answers between two computations of the p99.
const EVERY: u64 = 32;

/// A model's recent answer times: a ring of the last [`WINDOW`] answers, written without a
/// lock (every answer through the gateway records one, on many threads at once).
#[derive(Debug)]
pub struct Latency {
    /// Answer times in ms, `u32::MAX` where none is recorded yet.
    recent: Box<[AtomicU32]>,
    recorded: AtomicU64,
    /// The p99 in ms once [`EVERY`] answers are known; 0 before.
    p99_ms: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            recent: (0..WINDOW).map(|_| AtomicU32::new(u32::MAX)).collect(),
            recorded: AtomicU64::new(0),
            p99_ms: AtomicU64::new(0),
        }
    }
}

/// How the answer timeout follows from the p99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerTimeout {
    /// Added to the p99.
    pub slack: Duration,
    /// The longest answer timeout (and the one used until the p99 is known).
    pub ceiling: Duration,
}

impl Default for AnswerTimeout {
    fn default() -> Self {
        Self {
            slack: Duration::from_secs(5),
            ceiling: Duration::from_secs(30),
        }
    }
}

impl Latency {
    /// Records one answer's time. Every [`EVERY`]th answer recomputes the p99 from the ring as
    /// it stands (a slot another thread writes meanwhile is read old or new: either is a recent
    /// answer).
    pub fn record(&self, took: Duration) {
        let ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX - 1);
        let seq = self.recorded.fetch_add(1, Ordering::Relaxed);
        // The index is below WINDOW, so the cast is exact.
        self.recent[(seq % WINDOW as u64) as usize].store(ms, Ordering::Relaxed);
        if (seq + 1).is_multiple_of(EVERY) {
            let mut sorted: Vec<u32> = self
                .recent
                .iter()
                .map(|slot| slot.load(Ordering::Relaxed))
                .filter(|&ms| ms != u32::MAX)
                .collect();
            sorted.sort_unstable();
            let at = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
            if let Some(&p99) = sorted.get(at) {
                self.p99_ms.store(u64::from(p99).max(1), Ordering::Relaxed);
            }
        }
    }

    /// The p99 of the recent answers, once enough are known.
    pub fn p99(&self) -> Option<Duration> {
        match self.p99_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The answer timeout by `rule`: the p99 plus the slack, at most the ceiling (the ceiling
    /// until the p99 is known).
    pub fn timeout(&self, rule: AnswerTimeout) -> Duration {
        match self.p99() {
            Some(p99) => (p99 + rule.slack).min(rule.ceiling),
            None => rule.ceiling,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_follows_the_p99_once_known_and_stays_under_the_ceiling() {
        let latency = Latency::default();
        let rule = AnswerTimeout::default();
        assert_eq!(latency.timeout(rule), rule.ceiling, "nothing known yet");
        for i in 0..200u64 {
            // 1% of answers take 2 s, the rest 10-40 ms.
            let ms = if i % 100 == 99 { 2000 } else { 10 + i % 31 };
            latency.record(Duration::from_millis(ms));
        }
        let p99 = latency.p99().unwrap();
        assert!(
            p99 >= Duration::from_millis(40) && p99 <= Duration::from_secs(2),
            "{p99:?}"
        );
        assert_eq!(latency.timeout(rule), p99 + rule.slack);
        for _ in 0..WINDOW {
            latency.record(Duration::from_secs(60));
        }
        assert_eq!(latency.timeout(rule), rule.ceiling);
    }

    #[test]
    fn answers_recorded_on_many_threads_at_once_all_count() {
        let latency = std::sync::Arc::new(Latency::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let latency = latency.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        latency.record(Duration::from_millis(7 + t));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(latency.recorded.load(Ordering::Relaxed), 4000);
        let p99 = latency.p99().unwrap();
        assert!(
            p99 >= Duration::from_millis(7) && p99 <= Duration::from_millis(10),
            "{p99:?}"
        );
    }
}
