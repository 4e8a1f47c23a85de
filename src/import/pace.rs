//! Request pacing: at most N requests in any one second, evenly spaced.
//!
//! Clerk limits the Backend API per instance, and the app that owns the
//! instance shares that budget, so `import` must never burst: a burst of
//! even a few dozen requests can push the app's own calls into `429`s.
//! Each request therefore gets its own send time, at least one interval
//! after the previous one's, whether the previous one was sent a moment
//! ago or long before (an idle spell earns no credit).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The span that N requests are spread over. A little longer than a
/// second: Clerk counts requests when they arrive, and the way there varies,
/// so sends exactly 1/N s apart could land N + 1 in one of Clerk's seconds.
const SPREAD: Duration = Duration::from_millis(1050);

/// Hands out send times at most `per_second` a second. Shared by every
/// request of one client, concurrent ones included.
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    /// The earliest time the next request may go.
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `None` or `Some(0)`: no limit.
    pub fn new(per_second: Option<u32>) -> Self {
        Pacer {
            interval: per_second.filter(|&n| n > 0).map(|n| SPREAD / n),
            next: Mutex::new(None),
        }
    }

    /// The least time between two sends, if there is a limit.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Waits until this request's turn. The turn is taken when called, so
    /// concurrent callers queue in call order; a caller that gives up
    /// waiting leaves a gap, never a burst.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            // A poisoned lock only means another request panicked while
            // holding a plain time value.
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The most sends within any one second (both ends included).
    fn most_in_a_second(times: &[Instant]) -> usize {
        let mut sorted = times.to_vec();
        sorted.sort();
        (0..sorted.len())
            .map(|i| {
                sorted[i..]
                    .iter()
                    .take_while(|t| **t - sorted[i] <= Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_second_and_no_burst() {
        let pacer = Pacer::new(Some(20));
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..45 {
            pacer.wait().await;
            times.push(Instant::now());
        }
        assert_eq!(most_in_a_second(&times), 20);
        // The first second holds its share only, not 20 at once.
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(50), "{pair:?}");
        }
        // And nothing is wasted: 45 sends take 44 intervals.
        assert_eq!(times[44] - start, SPREAD / 20 * 44);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_spell_earns_no_burst() {
        let pacer = Pacer::new(Some(10));
        pacer.wait().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut times = Vec::new();
        for _ in 0..3 {
            pacer.wait().await;
            times.push(Instant::now());
        }
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{pair:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_does_not_delay_the_next_further() {
        let pacer = Pacer::new(Some(10));
        pacer.wait().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = Instant::now();
        pacer.wait().await;
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_pace() {
        let pacer = Arc::new(Pacer::new(Some(20)));
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let pacer = Arc::clone(&pacer);
                tokio::spawn(async move {
                    pacer.wait().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        assert_eq!(most_in_a_second(&times), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_means_no_wait() {
        for pacer in [Pacer::new(None), Pacer::new(Some(0))] {
            assert_eq!(pacer.interval(), None);
            let before = Instant::now();
            for _ in 0..1000 {
                pacer.wait().await;
            }
            assert_eq!(Instant::now(), before);
        }
    }
}
