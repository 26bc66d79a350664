//! How many streams an origin's connections live for, read off the
//! graceful GOAWAYs that ended the last few.
//!
//! Servers retire connections on a schedule: nginx after
//! `keepalive_requests`, Envoy and grpc-go after a maximum age or request
//! count, proxies during rolling restarts. Each retirement costs the next
//! request a connect and a handshake unless the replacement is already up.
//! Knowing the lifetime lets the pool do two things:
//! - when the last [`CONNECTIONS_TO_LEARN_FROM`] lifetimes are all the same
//!   number, that number is the server's limit: our connections retire at
//!   it themselves, so no stream goes past it and gets refused;
//! - whatever the spread, a connection that has used three quarters of the
//!   shortest recent lifetime ([`Lifetimes::expected`]; half, when it is
//!   busy) is near its end, and the pool opens its replacement ahead of
//!   the GOAWAY (see `OriginPool::replace_ahead`).

/// Connections in a row that must end after the same number of streams
/// before the pool takes it for the server's limit. Two could agree by
/// chance when a server sends GOAWAY for its own reasons (the chaos soak
/// saw it learn 25 and churn through a connection every 25 requests); a
/// server that counts shows the number on every connection.
pub(crate) const CONNECTIONS_TO_LEARN_FROM: usize = 3;

/// The streams each of the last few connections took before a graceful
/// GOAWAY ended it, newest last.
#[derive(Debug, Default)]
pub(crate) struct Lifetimes {
    recent: [u64; CONNECTIONS_TO_LEARN_FROM],
    len: usize,
}

impl Lifetimes {
    /// Records a connection that a graceful GOAWAY ended after `streams`.
    pub(crate) fn record(&mut self, streams: u64) {
        if self.len == self.recent.len() {
            self.recent.rotate_left(1);
            self.len -= 1;
        }
        self.recent[self.len] = streams;
        self.len += 1;
    }

    /// Forgets every lifetime seen: they no longer predict anything.
    pub(crate) fn forget(&mut self) {
        self.len = 0;
    }

    fn full(&self) -> Option<&[u64]> {
        (self.len == self.recent.len()).then_some(&self.recent[..])
    }

    /// The server's per-connection request limit: the one number the last
    /// [`CONNECTIONS_TO_LEARN_FROM`] connections all ended at. A GOAWAY at
    /// another count shows the server ends connections for other reasons
    /// too (a restart, load shedding), and unlearns it.
    pub(crate) fn server_limit(&self) -> Option<u64> {
        let recent = self.full()?;
        let first = recent[0];
        (first > 0 && recent.iter().all(|&streams| streams == first)).then_some(first)
    }

    /// The shortest recent lifetime, once there are enough to go by.
    pub(crate) fn shortest(&self) -> Option<u64> {
        self.full()?.iter().copied().min()
    }

    /// The life to expect of a connection, in streams: the shortest
    /// recent one, once there are enough to go by.
    pub(crate) fn expected(&self) -> Option<u64> {
        self.shortest().filter(|&shortest| shortest > 0)
    }

    /// Whether a connection that has taken `streams` proves the recent
    /// lifetimes wrong: it has outlived twice the shortest, so the server's
    /// GOAWAYs follow no schedule, and replacing connections ahead of them
    /// would only add connections.
    pub(crate) fn outlived_by(&self, streams: u64) -> bool {
        self.shortest()
            .is_some_and(|shortest| streams > shortest.saturating_mul(2))
    }
}

/// Three quarters of a lifetime of `streams`: the point at which a
/// connection's replacement starts connecting, which leaves a connect and a
/// handshake's worth of requests (a quarter of its life) to make it in.
pub(crate) fn near_end(streams: u64) -> u64 {
    streams - streams / 4
}

/// Half a lifetime of `streams`: the earliest a replacement starts, for a
/// connection so busy that a quarter of its life goes by faster than a
/// connect. Any earlier and two replacements could overlap one life.
pub(crate) fn half_life(streams: u64) -> u64 {
    streams - streams / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetimes(streams: &[u64]) -> Lifetimes {
        let mut lifetimes = Lifetimes::default();
        for &count in streams {
            lifetimes.record(count);
        }
        lifetimes
    }

    #[test]
    fn nothing_is_predicted_before_three_connections_ended() {
        let two = lifetimes(&[50, 50]);
        assert_eq!(two.server_limit(), None);
        assert_eq!(two.expected(), None);
        assert!(!two.outlived_by(1_000));
    }

    #[test]
    fn three_equal_lifetimes_are_the_servers_limit() {
        let equal = lifetimes(&[7, 50, 50, 50]);
        assert_eq!(equal.server_limit(), Some(50));
        assert_eq!(equal.expected(), Some(50));
        assert_eq!(near_end(50), 38);
        assert_eq!(half_life(50), 25);
    }

    #[test]
    fn a_spread_predicts_from_the_shortest_but_teaches_no_limit() {
        let spread = lifetimes(&[120, 100, 164]);
        assert_eq!(spread.server_limit(), None);
        assert_eq!(spread.expected(), Some(100));
        assert!(!spread.outlived_by(200));
        assert!(spread.outlived_by(201));
    }

    #[test]
    fn another_count_unlearns_the_limit() {
        let mut learned = lifetimes(&[50, 50, 50]);
        learned.record(20);
        assert_eq!(learned.server_limit(), None);
        learned.forget();
        assert_eq!(learned.expected(), None);
    }

    #[test]
    fn zero_predicts_nothing() {
        let zero = lifetimes(&[0, 0, 0]);
        assert_eq!(zero.server_limit(), None);
        assert_eq!(zero.expected(), None);
    }
}
