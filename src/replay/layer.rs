use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;
use tower_layer::Layer;

use super::budget::RecentRequestsBudget;
use super::classify::SourceChainClassifier;
use super::service::Replay;
use super::stats::{Counters, ReplayStats};
use crate::error::Delivery;

/// At most 5 attempts per request, as gRPC caps them.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Up to 64 KiB of a request body is kept for replays.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;
/// The wait before the second replay of a refused request, as Envoy's
/// retries start; it doubles for each replay after.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// The longest wait between replays, as Envoy caps its retries'.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Sends again requests that the server provably did not process.
///
/// See the [module documentation](super) for what is replayed and why.
///
/// ```
/// use std::time::Duration;
/// use h2pool::replay::{RecentRequestsBudget, ReplayLayer};
///
/// let layer = ReplayLayer::new()
///     .max_attempts(3)
///     .buffer_limit(16 * 1024)
///     .retry_budget(RecentRequestsBudget::new(Duration::from_secs(10), 5, 0.1));
/// # drop(layer);
/// ```
#[derive(Clone)]
pub struct ReplayLayer<C = SourceChainClassifier> {
    policy: Arc<Policy<C>>,
}

/// Everything the layer's services share.
#[derive(Clone)]
pub(crate) struct Policy<C> {
    pub(crate) max_attempts: u32,
    pub(crate) buffer_limit: usize,
    pub(crate) retry_idempotent: bool,
    pub(crate) replay_connect_failures: bool,
    pub(crate) backoff: Backoff,
    pub(crate) classifier: C,
    pub(crate) budget: Arc<dyn Budget + Send + Sync>,
    pub(crate) counters: Arc<Counters>,
}

impl ReplayLayer {
    /// Replays what was never sent or was refused: up to
    /// [`DEFAULT_MAX_ATTEMPTS`] attempts, bodies kept up to
    /// [`DEFAULT_BUFFER_LIMIT`], within a budget of 20% of recent requests
    /// plus 10 replays a second, over 10 s (a [`RecentRequestsBudget`]).
    pub fn new() -> Self {
        ReplayLayer {
            policy: Arc::new(Policy {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                buffer_limit: DEFAULT_BUFFER_LIMIT,
                retry_idempotent: false,
                replay_connect_failures: false,
                backoff: Backoff {
                    base: DEFAULT_BACKOFF_BASE,
                    max: DEFAULT_BACKOFF_MAX,
                },
                classifier: SourceChainClassifier,
                budget: Arc::new(RecentRequestsBudget::default()),
                counters: Arc::default(),
            }),
        }
    }
}

impl Default for ReplayLayer {
    fn default() -> Self {
        ReplayLayer::new()
    }
}

impl<C: Clone> ReplayLayer<C> {
    /// Attempts per request, the first included (zero is taken as one,
    /// which turns replays off). Default 5.
    pub fn max_attempts(self, max: u32) -> Self {
        self.with(|policy| policy.max_attempts = max.max(1))
    }

    /// How many bytes of a request body are kept for replays (a chunk counts
    /// at least 64). A request that sent more is committed: if it then needs
    /// a replay, it fails with
    /// [`ErrorKind::BodyTooLargeToReplay`](crate::ErrorKind::BodyTooLargeToReplay).
    /// What was kept goes once the response head arrives. Default 64 KiB.
    pub fn buffer_limit(self, bytes: usize) -> Self {
        self.with(|policy| policy.buffer_limit = bytes)
    }

    /// Limits replays to what `budget` allows, so a failing server cannot
    /// cause a storm of them. Every request deposits; every replay withdraws.
    /// Any tower [`Budget`] serves, tower's own
    /// [`TpsBudget`](super::TpsBudget) among them (which takes a lock on
    /// every deposit).
    pub fn retry_budget(self, budget: impl Budget + Send + Sync + 'static) -> Self {
        self.with(|policy| policy.budget = Arc::new(budget))
    }

    /// Also retries idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT,
    /// DELETE; RFC 9110 section 9.2.2) that failed before their response
    /// began but *may* have been processed: a reset other than
    /// REFUSED_STREAM, a connection lost under the stream, a keep-alive
    /// timeout. Off by default: an idempotent method is a promise of the
    /// server's, and not every server keeps it.
    pub fn retry_idempotent(self, enabled: bool) -> Self {
        self.with(|policy| policy.retry_idempotent = enabled)
    }

    /// Also replays requests whose connect failed (refused, timed out, or a
    /// failed HTTP/2 handshake), each after the pool's connect backoff, so
    /// a server restarting on the same address costs a delay rather than
    /// errors. Off by default, as in hyper and gRPC: a dead server then
    /// fails requests at once, and a balancer above can pick another.
    pub fn replay_connect_failures(self, enabled: bool) -> Self {
        self.with(|policy| policy.replay_connect_failures = enabled)
    }

    /// How long to wait before a replay. A request the server turned away
    /// once (refused it, or, with [`retry_idempotent`](Self::retry_idempotent),
    /// failed it after it may have been processed) goes again at once, as
    /// gRPC's transparent retry and Go's Transport send it: a refusal is
    /// usually one connection's news (a GOAWAY, a stream limit just
    /// lowered). One turned away again meets a server turning work away, so
    /// each later such replay waits `base`, doubling up to `max`, half of it
    /// random, as Envoy's retries wait (25 ms and 250 ms by default). A
    /// request that never left the client goes again at once: the server
    /// has not seen it. `Duration::ZERO` sends every replay at once. The
    /// wait is a tokio timer; the replay is counted, and the budget spent,
    /// before it.
    pub fn backoff(self, base: Duration, max: Duration) -> Self {
        self.with(|policy| {
            policy.backoff = Backoff {
                base,
                max: max.max(base),
            }
        })
    }

    /// Judges errors with `classifier` instead of [`SourceChainClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> ReplayLayer<C2> {
        let policy = (*self.policy).clone();
        ReplayLayer {
            policy: Arc::new(Policy {
                max_attempts: policy.max_attempts,
                buffer_limit: policy.buffer_limit,
                retry_idempotent: policy.retry_idempotent,
                replay_connect_failures: policy.replay_connect_failures,
                backoff: policy.backoff,
                classifier,
                budget: policy.budget,
                counters: policy.counters,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Policy<C>)) -> Self {
        change(Arc::make_mut(&mut self.policy));
        self
    }
}

impl<C> ReplayLayer<C> {
    /// What the services made by this layer have replayed so far.
    pub fn stats(&self) -> ReplayStats {
        self.policy.counters.snapshot()
    }
}

impl<S, C> Layer<S> for ReplayLayer<C> {
    type Service = Replay<S, C>;

    fn layer(&self, inner: S) -> Replay<S, C> {
        Replay::new(inner, self.policy.clone())
    }
}

impl<C> fmt::Debug for ReplayLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayLayer")
            .field("max_attempts", &self.policy.max_attempts)
            .field("buffer_limit", &self.policy.buffer_limit)
            .field("retry_idempotent", &self.policy.retry_idempotent)
            .field(
                "replay_connect_failures",
                &self.policy.replay_connect_failures,
            )
            .field("backoff", &self.policy.backoff)
            .finish_non_exhaustive()
    }
}

/// The waits between replays of a request the server refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// The wait before a replay whose request the server has turned away
    /// `turned_away` times, the last attempt having ended as `delivery`.
    pub(crate) fn before(&self, turned_away: u32, delivery: Delivery) -> Option<Duration> {
        if turned_away <= 1 || delivery == Delivery::NeverSent || self.base.is_zero() {
            return None;
        }
        Some(crate::jitter::backoff(self.base, self.max, turned_away - 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_replay_settings_and_the_backoff() {
        let layer = ReplayLayer::new()
            .replay_connect_failures(true)
            .backoff(Duration::from_millis(7), Duration::from_millis(70));
        let shown = format!("{layer:?}");
        for expected in [
            "max_attempts",
            "buffer_limit",
            "retry_idempotent",
            "replay_connect_failures: true",
            "base: 7ms",
            "max: 70ms",
        ] {
            assert!(shown.contains(expected), "{expected} missing from {shown}");
        }
    }

    #[test]
    fn only_a_request_refused_again_waits_before_its_replay() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(300),
        };
        assert_eq!(
            backoff.before(1, Delivery::Refused),
            None,
            "turned away once"
        );
        assert_eq!(backoff.before(4, Delivery::NeverSent), None, "never sent");
        for (turned_away, full) in [(2, 100), (3, 200), (4, 300), (9, 300)] {
            let full = Duration::from_millis(full);
            for delivery in [Delivery::Refused, Delivery::MaybeProcessed] {
                let wait = backoff.before(turned_away, delivery).expect("a wait");
                assert!(
                    full / 2 <= wait && wait <= full,
                    "turned away {turned_away}: {wait:?}"
                );
            }
        }
        let off = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(
            off.before(5, Delivery::Refused),
            None,
            "a zero base turns it off"
        );
    }
}
