//! Randomness for spreading clients out in time.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A number in [0, 1), different on every call: `RandomState` is seeded
/// afresh each time, and `seed` only mixes in more.
pub(crate) fn random_unit(seed: u64) -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(seed);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential backoff with "equal jitter": `base` doubled `doublings`
/// times, up to `max`, half of it fixed and half random, so a crowd of
/// clients spreads out without any one waiting near zero.
pub(crate) fn backoff(base: Duration, max: Duration, doublings: u32) -> Duration {
    let full = base.saturating_mul(1 << doublings.min(20)).min(max);
    full / 2 + (full / 2).mul_f64(random_unit(u64::from(doublings)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_half_of_it_random() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for (doublings, full) in [(0, 100), (1, 200), (3, 800), (4, 1000), (u32::MAX, 1000)] {
            let full = Duration::from_millis(full);
            for _ in 0..100 {
                let wait = backoff(base, max, doublings);
                assert!(full / 2 <= wait && wait <= full, "{doublings}: {wait:?}");
            }
        }
        let waits: std::collections::HashSet<_> = (0..100).map(|_| backoff(base, max, 3)).collect();
        assert!(waits.len() > 50, "the random half varies: {waits:?}");
    }
}
