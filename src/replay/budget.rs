use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tower::retry::budget::Budget;

/// Time slots a budget's window is cut into, as in tower's `TpsBudget`.
const SLOTS: usize = 10;

/// One replay, in the budget's units (thousandths of a replay, so that a
/// fractional percentage loses nothing to rounding).
const REPLAY: i64 = 1000;

/// At most this many deposits between two looks at the clock (and more
/// than half as many). Reading it costs more than the rest of a deposit;
/// the deposits in between land in the slot of the last look, which is at
/// worst a little older than they are.
const DEPOSITS_PER_CLOCK_READ: i64 = 64;

/// A retry budget: replays may add up to a share of the recent requests,
/// plus a floor per second for clients that send few.
///
/// It counts as tower's [`TpsBudget`](super::TpsBudget) (Finagle's
/// `RetryBudget`) does, over a window cut into ten slots, and differs in
/// cost: every request deposits, and here a deposit is one relaxed atomic
/// add on the current slot, where `TpsBudget` takes a mutex and reads the
/// clock on every deposit to see whether its window has moved on. Under
/// load from many threads that mutex is one more lock every request queues
/// on. Here deposits read the clock at least once in 64, and the lock is
/// taken only to start a new slot, once per slot length.
///
/// So a deposit may count in the slot before its own. That matters only
/// when the window passes it: after a silence as long as the window, up to
/// 63 deposits made since the last look at the clock may be forgotten,
/// which errs towards fewer replays. A withdrawal always reads the clock.
/// It reads the whole window; two made at the same instant may both pass
/// when only one was left (as with `TpsBudget`).
///
/// ```
/// use std::time::Duration;
/// use h2pool::replay::{Budget, RecentRequestsBudget};
///
/// // No floor, and 50% of the requests of the last 10 s.
/// let budget = RecentRequestsBudget::new(Duration::from_secs(10), 0, 0.5);
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
/// ```
pub struct RecentRequestsBudget {
    started: Instant,
    slot_millis: u64,
    /// The slot (counted in slot lengths since `started`) that `slots`
    /// were last brought up to.
    current: AtomicU64,
    /// Deposits minus withdrawals per slot, in thousandths of a replay.
    slots: [AtomicI64; SLOTS],
    /// Held while a slot starts, so that one thread clears stale slots.
    starting_slot: Mutex<()>,
    /// The floor over the whole window, in thousandths of a replay.
    reserve: i64,
    /// What one request adds, in thousandths of a replay.
    deposit: i64,
    /// The period between looks at the clock, less one: the period is a
    /// power of two, of 33 to 64 deposits, so that a slot's value masked
    /// with this is its value modulo the period (a division would cost
    /// each deposit tens of cycles).
    clock_read_mask: i64,
}

impl RecentRequestsBudget {
    /// Allows replays up to `retry_percent` of the requests of the last
    /// `ttl` (0.2 is 20%), plus `min_per_sec` replays a second over it.
    ///
    /// A `ttl` below 10 ms is taken as 10 ms; a negative or NaN
    /// `retry_percent` as 0, and one above 1000 (a thousand replays a
    /// request, tower's cap) as 1000.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        let ttl = ttl.max(Duration::from_millis(SLOTS as u64));
        let slot_millis = u64::try_from(ttl.as_millis() / SLOTS as u128).unwrap_or(u64::MAX);
        let reserve = f64::from(min_per_sec) * ttl.as_secs_f64() * REPLAY as f64;
        // `as` takes NaN to 0.
        let deposit = (f64::from(retry_percent.clamp(0.0, 1000.0)) * REPLAY as f64).round() as i64;
        // The largest power of two no more than 64 deposits.
        let clock_read_period = 1_i64 << (deposit.max(1) * DEPOSITS_PER_CLOCK_READ).ilog2();
        RecentRequestsBudget {
            started: Instant::now(),
            slot_millis,
            current: AtomicU64::new(0),
            slots: Default::default(),
            starting_slot: Mutex::new(()),
            reserve: reserve as i64,
            deposit,
            clock_read_mask: clock_read_period - 1,
        }
    }

    fn slot_now(&self) -> u64 {
        let elapsed = self.started.elapsed();
        let millis = elapsed
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(elapsed.subsec_millis()));
        millis / self.slot_millis
    }

    /// Brings the slots up to `slot`, clearing those that fell out of the
    /// window. Without a lock while `slot` is the current one.
    fn start_slot(&self, slot: u64) {
        if self.current.load(Ordering::Acquire) >= slot {
            return;
        }
        let _starting = self
            .starting_slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load(Ordering::Acquire);
        if current >= slot {
            return;
        }
        for stale in (current + 1..=slot).rev().take(SLOTS) {
            self.slots[index(stale)].store(0, Ordering::Relaxed);
        }
        // Release: whoever sees the new slot sees it cleared.
        self.current.store(slot, Ordering::Release);
    }

    #[cfg(test)]
    fn deposit_at(&self, slot: u64) {
        self.start_slot(slot);
        self.slots[index(slot)].fetch_add(self.deposit, Ordering::Relaxed);
    }

    /// A deposit in the slot of the last look at the clock, and a new look
    /// at least every [`DEPOSITS_PER_CLOCK_READ`] deposits.
    fn deposit_now(&self) {
        if self.deposit == 0 {
            return;
        }
        let slot = self.current.load(Ordering::Acquire);
        let before = self.slots[index(slot)].fetch_add(self.deposit, Ordering::Relaxed);
        // Between withdrawals a slot grows by exactly `deposit`, so this
        // holds each time it passes a multiple of the period. (The mask is
        // a modulo for negative values too, in two's complement.)
        if (before & self.clock_read_mask) < self.deposit {
            self.start_slot(self.slot_now());
        }
    }

    fn withdraw_at(&self, slot: u64) -> bool {
        self.start_slot(slot);
        if self.balance() < REPLAY {
            return false;
        }
        self.slots[index(slot)].fetch_sub(REPLAY, Ordering::Relaxed);
        true
    }

    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .fold(self.reserve, i64::saturating_add)
    }
}

fn index(slot: u64) -> usize {
    (slot % SLOTS as u64) as usize
}

impl Budget for RecentRequestsBudget {
    fn deposit(&self) {
        self.deposit_now();
    }

    fn withdraw(&self) -> bool {
        self.withdraw_at(self.slot_now())
    }
}

impl Default for RecentRequestsBudget {
    /// 20% of the requests of the last 10 s, plus 10 replays a second.
    fn default() -> Self {
        RecentRequestsBudget::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl fmt::Debug for RecentRequestsBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecentRequestsBudget")
            .field("replays_left", &(self.balance() / REPLAY))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_SECONDS: Duration = Duration::from_secs(10);

    fn withdrawals(budget: &RecentRequestsBudget, slot: u64) -> usize {
        std::iter::from_fn(|| budget.withdraw_at(slot).then_some(()))
            .take(10_000)
            .count()
    }

    #[test]
    fn the_floor_allows_min_per_sec_over_the_window() {
        let budget = RecentRequestsBudget::new(TEN_SECONDS, 3, 0.0);
        budget.deposit_at(0);
        assert_eq!(withdrawals(&budget, 0), 30);
    }

    #[test]
    fn deposits_allow_their_percentage_even_a_fraction() {
        let budget = RecentRequestsBudget::new(TEN_SECONDS, 0, 0.6);
        for _ in 0..5 {
            budget.deposit_at(0);
        }
        // tower's TpsBudget truncates 1 / 0.6 and would allow 5 (tower#857).
        assert_eq!(withdrawals(&budget, 0), 3);
    }

    #[test]
    fn deposits_expire_once_the_window_passes_them() {
        let budget = RecentRequestsBudget::new(TEN_SECONDS, 0, 1.0);
        budget.deposit_at(0);
        budget.deposit_at(5);
        assert!(budget.withdraw_at(9), "both deposits are in the window");
        assert!(budget.withdraw_at(9));
        assert!(!budget.withdraw_at(9));

        let budget = RecentRequestsBudget::new(TEN_SECONDS, 0, 1.0);
        budget.deposit_at(0);
        budget.deposit_at(5);
        assert_eq!(withdrawals(&budget, 10), 1, "slot 0 has left the window");
        budget.deposit_at(40);
        assert_eq!(withdrawals(&budget, 40), 1, "a long silence clears it all");
    }

    #[test]
    fn settings_out_of_range_neither_panic_nor_overflow() {
        for percent in [f32::NAN, f32::INFINITY, -1.0, 1e30] {
            let budget = RecentRequestsBudget::new(Duration::ZERO, u32::MAX, percent);
            for _ in 0..1000 {
                budget.deposit();
            }
            assert!(budget.withdraw(), "a floor of u32::MAX a second allows one");
        }
        let budget = RecentRequestsBudget::new(Duration::ZERO, 0, f32::NAN);
        budget.deposit();
        assert!(!budget.withdraw(), "NaN is taken as 0%");
    }

    #[test]
    fn deposits_look_at_the_clock_at_least_once_in_64() {
        for percent in [0.001, 0.2, 0.6, 1.0, 7.5, 1000.0] {
            // Slots of 1 ms.
            let budget = RecentRequestsBudget::new(Duration::from_millis(10), 0, percent);
            budget.deposit();
            std::thread::sleep(Duration::from_millis(3));
            for _ in 0..DEPOSITS_PER_CLOCK_READ {
                budget.deposit();
            }
            let current = budget.current.load(Ordering::Acquire);
            assert!(current >= 3, "{percent}: still in slot {current}");
        }
    }

    #[test]
    fn deposits_from_many_threads_all_count() {
        let budget = RecentRequestsBudget::new(TEN_SECONDS, 0, 0.001);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        budget.deposit();
                    }
                });
            }
        });
        assert_eq!(withdrawals(&budget, budget.slot_now()), 40);
    }
}
