use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::connection::{between_looks, CloseReason, ConnectionHandle, Phase};
use crate::error::ErrorKind;

/// PING after 30 s of silence from the server.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Retire a connection whose PING is unanswered after 20 s.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

// Pinging faster than this gets clients banned by grpc-go servers (whose
// floor is 5 minutes without streams, 10 s with); doubling stops here.
const MAX_PING_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);

/// When to check that a connection is alive.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    interval_ms: Arc<AtomicU64>,
    timeout: Duration,
    while_idle: bool,
}

impl KeepAlive {
    /// PING after `interval` without a frame from the server; retire the
    /// connection when no PONG comes within `timeout`. Idle connections (no
    /// stream in flight) are not pinged unless [`while_idle`](Self::while_idle);
    /// a stream that starts on one already silent for `interval` gets its
    /// PING at once, as with grpc-go. Both durations are at least 1 ms.
    ///
    /// The keep-alive reads the clock when it looks at the connection, at
    /// least every eighth of the interval, not on every read of the
    /// server's bytes: a silence is seen up to an eighth of the interval
    /// late.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        KeepAlive {
            interval_ms: Arc::new(AtomicU64::new(millis(interval).max(1))),
            // A zero timeout would retire every healthy connection at its
            // first PING.
            timeout: timeout.max(Duration::from_millis(1)),
            while_idle: false,
        }
    }

    /// Also ping connections without streams in flight. Off by default: many
    /// servers (grpc-go among them) treat that as abuse.
    pub fn while_idle(mut self, enabled: bool) -> Self {
        self.while_idle = enabled;
        self
    }

    /// The interval now (it doubles when a server says "too_many_pings").
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// How long a PING may go unanswered.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn slow_down(&self) {
        // Never shorter than now, even for an interval set above the cap.
        let doubled = self
            .interval()
            .saturating_mul(2)
            .min(MAX_PING_INTERVAL)
            .max(self.interval());
        self.interval_ms.store(millis(doubled), Ordering::Relaxed);
        tracing::warn!(interval = ?doubled, "server said too_many_pings; pinging less often");
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive::new(DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn spawn(handle: ConnectionHandle, keep_alive: KeepAlive) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(run(handle, keep_alive));
        }
        Err(_) => tracing::warn!("no tokio runtime: keep-alive PINGs are off for this connection"),
    }
}

async fn run(handle: ConnectionHandle, keep_alive: KeepAlive) {
    // Taken at the first PING: until then h2 need not look for one.
    let mut ping_pong = None;
    loop {
        let phase_changed = handle.phase_changed_notify().notified();
        tokio::pin!(phase_changed);
        phase_changed.as_mut().enable();
        if handle.phase() == Phase::Closed {
            break;
        }
        if handle.streams_running() == 0 && !keep_alive.while_idle {
            // Nothing to watch until a stream starts. Then a connection that
            // has been silent for the interval already is pinged at once, as
            // grpc-go does, rather than an interval later: it may have died
            // while idle, and the new stream would wait on it. A look now
            // dates what was read before the sleep, for the silence then.
            handle.silent_for();
            tokio::select! {
                _ = phase_changed => {}
                _ = handle.until_busy() => {}
            }
            continue;
        }
        let interval = keep_alive.interval();
        let silent = handle.silent_for();
        if silent < interval {
            // A look dates the last read to itself, so the looks come often
            // enough that a silence is seen at most an eighth late.
            let wait = (interval - silent).min(between_looks(interval));
            tokio::select! {
                _ = phase_changed => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let ping_pong = match &mut ping_pong {
            Some(ping_pong) => ping_pong,
            None => match handle.take_ping_pong().await {
                Some(taken) => ping_pong.insert(taken),
                None if handle.phase() == Phase::Closed => break,
                // Another layer's prober has it: one is enough.
                None => return,
            },
        };
        match tokio::time::timeout(keep_alive.timeout, ping_pong.ping(h2::Ping::opaque())).await {
            // The PONG's read noted that the server was heard from.
            Ok(Ok(_pong)) => {}
            // The connection is gone; its driver says why.
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::debug!(connection = handle.id(), timeout = ?keep_alive.timeout, "PING unanswered, retiring connection");
                handle.abort(
                    ErrorKind::KeepAliveTimeout,
                    format!("no PONG within {:?}", keep_alive.timeout),
                );
                return;
            }
        }
    }
    let too_many_pings = recorded_close_reason(&handle).await.is_some_and(|reason| {
        reason.h2_reason == Some(h2::Reason::ENHANCE_YOUR_CALM)
            && reason.detail.contains("too_many_pings")
    });
    if too_many_pings {
        keep_alive.slow_down();
    }
}

/// Why the connection closed, once its driver has said so. h2 fails our
/// PING as it lets go of the connection, a moment before the driver task
/// records the GOAWAY that ended it; reading the reason at once could miss
/// a "too_many_pings".
async fn recorded_close_reason(handle: &ConnectionHandle) -> Option<CloseReason> {
    let recorded = async {
        loop {
            let phase_changed = handle.phase_changed_notify().notified();
            tokio::pin!(phase_changed);
            phase_changed.as_mut().enable();
            if handle.phase() == Phase::Closed {
                // The reason is stored before the phase change is announced.
                if let Some(reason) = handle.close_reason() {
                    return reason;
                }
            }
            phase_changed.await;
        }
    };
    // The driver records it within microseconds; the bound only guards
    // against a connection closed by some path that records nothing.
    match tokio::time::timeout(Duration::from_secs(1), recorded).await {
        Ok(reason) => Some(reason),
        Err(_) => handle.close_reason(),
    }
}
