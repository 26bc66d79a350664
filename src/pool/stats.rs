use crate::error::ErrorKind;
use crate::replay::ReplayStats;

/// A snapshot of a [`Pool`](super::Pool): one entry per origin it holds, and
/// what its replay layer did.
///
/// The pool forgets an origin (and its counters) once it has no connection,
/// no waiting request and no [`OriginService`](super::OriginService), when
/// the next new origin comes, so a client that meets many origins over its
/// life stays bounded.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Per-origin figures, in no particular order.
    pub origins: Vec<OriginStats>,
    /// Replays of requests the servers did not process, over all origins.
    pub replay: ReplayStats,
}

impl PoolStats {
    /// The entry for `origin` (`scheme://authority`), if the pool has one.
    pub fn origin(&self, origin: &str) -> Option<&OriginStats> {
        self.origins.iter().find(|stats| stats.origin == origin)
    }

    /// The figures of all origins added together.
    pub fn total(&self) -> OriginStats {
        let mut total = OriginStats::default();
        for origin in &self.origins {
            total.connections_open += origin.connections_open;
            total.connections_draining += origin.connections_draining;
            total.connecting += origin.connecting;
            total.connections_opened += origin.connections_opened;
            total.connect_failures += origin.connect_failures;
            total.streams_in_flight += origin.streams_in_flight;
            total.requests_waiting += origin.requests_waiting;
            total.requests += origin.requests;
            for (kind, count) in &origin.errors {
                match total.errors.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, sum)) => *sum += count,
                    None => total.errors.push((*kind, *count)),
                }
            }
        }
        total.errors.sort();
        total
    }
}

/// Figures for one origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OriginStats {
    /// `scheme://authority`.
    pub origin: String,
    /// Connections taking new streams.
    pub connections_open: usize,
    /// Connections finishing their streams before they close (after GOAWAY, say).
    pub connections_draining: usize,
    /// Connects under way.
    pub connecting: usize,
    /// Connections opened since the pool started.
    pub connections_opened: u64,
    /// Connects that failed since the pool started.
    pub connect_failures: u64,
    /// Streams reserved or running now.
    pub streams_in_flight: usize,
    /// Requests waiting for a stream slot now.
    pub requests_waiting: usize,
    /// Attempts started since the pool started (a replay is one more).
    pub requests: u64,
    /// Attempts that failed, by kind (kinds with no failure are left out).
    /// A failed attempt that was then replayed counts here too.
    pub errors: Vec<(ErrorKind, u64)>,
}

impl OriginStats {
    /// Failed requests of `kind`.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, count)| *count)
    }

    /// Failed requests of every kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|(_, count)| count).sum()
    }
}
