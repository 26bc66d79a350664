use std::sync::atomic::{AtomicU64, Ordering};

/// What the replay layer has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayStats {
    /// Requests that went through the layer.
    pub requests: u64,
    /// Replays of requests that never left the client.
    pub replayed_never_sent: u64,
    /// Replays of requests the server refused unprocessed (REFUSED_STREAM,
    /// or above a GOAWAY's last stream id).
    pub replayed_refused: u64,
    /// Retries of idempotent requests that may have been processed (only
    /// with [`retry_idempotent`](super::ReplayLayer::retry_idempotent)).
    pub retried_maybe_processed: u64,
    /// Requests that failed because they had used all their attempts.
    pub gave_up_attempts: u64,
    /// Requests that failed because the retry budget was spent.
    pub gave_up_budget: u64,
    /// Requests that failed because their body outgrew the replay buffer.
    pub gave_up_body_too_large: u64,
}

impl ReplayStats {
    /// Every extra attempt, whatever its reason.
    pub fn replays(&self) -> u64 {
        self.replayed_never_sent + self.replayed_refused + self.retried_maybe_processed
    }
}

/// The live counters behind [`ReplayStats`], shared by a layer's services.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) replayed_never_sent: AtomicU64,
    pub(crate) replayed_refused: AtomicU64,
    pub(crate) retried_maybe_processed: AtomicU64,
    pub(crate) gave_up_attempts: AtomicU64,
    pub(crate) gave_up_budget: AtomicU64,
    pub(crate) gave_up_body_too_large: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ReplayStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ReplayStats {
            requests: get(&self.requests),
            replayed_never_sent: get(&self.replayed_never_sent),
            replayed_refused: get(&self.replayed_refused),
            retried_maybe_processed: get(&self.retried_maybe_processed),
            gave_up_attempts: get(&self.gave_up_attempts),
            gave_up_budget: get(&self.gave_up_budget),
            gave_up_body_too_large: get(&self.gave_up_body_too_large),
        }
    }
}
