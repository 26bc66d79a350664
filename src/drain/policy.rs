use std::time::Duration;

use crate::connection::{between_looks, ConnectionHandle};

/// Client stream ids are odd and end at 2^31-1; drain at 75% of that, well
/// before h2 would refuse to open another stream.
pub const DEFAULT_MAX_STREAM_ID: u32 = ((1u64 << 31) * 3 / 4) as u32;
/// Up to 10% is taken off `max_age`, at random, per connection.
pub const DEFAULT_AGE_JITTER: f64 = 0.1;

/// The least idle time a connection gets before its first stream.
const FIRST_STREAM_GRACE: Duration = Duration::from_secs(1);

/// When a client retires a connection by itself. Every limit is optional;
/// by default only stream-id exhaustion drains.
#[derive(Debug, Clone)]
pub struct DrainPolicy {
    pub(crate) max_age: Option<Duration>,
    pub(crate) age_jitter: f64,
    pub(crate) max_requests: Option<u64>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_stream_id: u32,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        DrainPolicy {
            max_age: None,
            age_jitter: DEFAULT_AGE_JITTER,
            max_requests: None,
            idle_timeout: None,
            max_stream_id: DEFAULT_MAX_STREAM_ID,
        }
    }
}

impl DrainPolicy {
    /// Drain a connection this old (less up to [`age_jitter`](Self::age_jitter)),
    /// once it has had its first stream. Default: none.
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.max_age = age;
        self
    }

    /// The share of `max_age` taken off at random per connection, in 0.0..=1.0.
    /// Default [`DEFAULT_AGE_JITTER`].
    pub fn age_jitter(mut self, jitter: f64) -> Self {
        self.age_jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Drain a connection after this many streams. Default: none. Zero is
    /// taken as one: it would retire every connection before its first
    /// stream.
    pub fn max_requests(mut self, max: Option<u64>) -> Self {
        self.max_requests = max.map(|max| max.max(1));
        self
    }

    /// Drain a connection that has had no stream for this long (at least
    /// 1 s before its first stream). The layer's timer looks every eighth
    /// of it, so a connection drains up to that much later. Default: none
    /// (the pool sets its own,
    /// see [`Builder::idle_timeout`](crate::Builder::idle_timeout)).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Drain once a stream id reaches this. Default [`DEFAULT_MAX_STREAM_ID`].
    pub fn max_stream_id(mut self, id: u32) -> Self {
        self.max_stream_id = id.clamp(1, (1 << 31) - 1);
        self
    }

    /// This connection's age limit, jittered.
    pub(crate) fn age_limit(&self, handle: &ConnectionHandle) -> Option<Duration> {
        let max_age = self.max_age?;
        let unit = crate::jitter::random_unit(handle.id());
        // Through `try_from`: a huge age (Duration::MAX, say) must not panic
        // on the round trip through f64.
        let factor = 1.0 - self.age_jitter * unit;
        Some(Duration::try_from_secs_f64(max_age.as_secs_f64() * factor).unwrap_or(max_age))
    }

    /// Why `handle` should drain now, if it should.
    pub(crate) fn reason(
        &self,
        handle: &ConnectionHandle,
        age_limit: Option<Duration>,
    ) -> Option<String> {
        self.count_reason(handle)
            .or_else(|| self.time_reason(handle, age_limit))
    }

    /// Why `handle` should drain now by its count of streams, if it should.
    pub(crate) fn count_reason(&self, handle: &ConnectionHandle) -> Option<String> {
        if let Some(max) = self.max_requests {
            if handle.streams_started() >= max {
                return Some(format!("max requests per connection ({max}) reached"));
            }
        }
        if handle.highest_stream_id() >= self.max_stream_id {
            return Some(format!(
                "stream id {} near exhaustion",
                handle.highest_stream_id()
            ));
        }
        None
    }

    /// Why `handle` should drain now by its age or idle time, if it should.
    pub(crate) fn time_reason(
        &self,
        handle: &ConnectionHandle,
        age_limit: Option<Duration>,
    ) -> Option<String> {
        // Every connection takes at least one stream, whatever the limit: a
        // zero age (or one shorter than a handshake) would otherwise retire
        // each new connection before its first request, and none would go out.
        if let Some(limit) = age_limit.filter(|_| handle.streams_started() > 0) {
            if handle.age() >= limit {
                return Some(format!("max connection age {limit:?} reached"));
            }
        }
        if let (Some(timeout), Some(idle)) = (self.idle_limit(handle), handle.idle_for()) {
            if idle >= timeout {
                return Some(format!("idle for {idle:?}"));
            }
        }
        None
    }

    /// The idle time after which `handle` drains. A connection that has
    /// not had its first stream yet gets at least [`FIRST_STREAM_GRACE`]:
    /// it was opened for a request that is about to use it, and a zero or
    /// tiny timeout would close it first, every time.
    fn idle_limit(&self, handle: &ConnectionHandle) -> Option<Duration> {
        let timeout = self.idle_timeout?;
        Some(if handle.streams_started() == 0 {
            timeout.max(FIRST_STREAM_GRACE)
        } else {
            timeout
        })
    }

    /// How long until a time limit may be reached, if one is set.
    pub(crate) fn next_check(
        &self,
        handle: &ConnectionHandle,
        age_limit: Option<Duration>,
    ) -> Option<Duration> {
        let age = age_limit.map(|limit| limit.saturating_sub(handle.age()));
        // A look at the idle time dates the last stream's end to itself:
        // looking often enough drains an idle connection at most an eighth
        // of the timeout late.
        let idle = self.idle_limit(handle).map(|timeout| {
            let left = match handle.idle_for() {
                Some(idle) => timeout.saturating_sub(idle),
                None => timeout,
            };
            left.min(between_looks(timeout))
        });
        match (age, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
