//! Slow start, as data the routing snapshot carries. The control plane
//! runs the ramps: on a ramped change, and when a backend comes back up, it
//! swaps in a new snapshot every [`step_interval`] with the shares moved
//! on, until the target is reached. The data plane only reads the result
//! (the service's effective bounds, the pool's effective weights): no
//! clock and nothing computed per request.
//!
//! - A **split ramp** moves where tickets map in a straight line from the
//!   bounds in force when the change came (mid-ramp: part of the way) to
//!   the new split's ([`Bounds::between`]), so a ticket never comes back to
//!   a pool it left. Its clock stops while a pool it raises has no backend
//!   up: a forced change to a dead pool sends it traffic only as it comes
//!   back.
//! - A **warm-up** ramps one backend's weight within its pool from almost
//!   nothing to its weight, from when it came back up.

use std::time::Duration;

use tokio::time::Instant;

use crate::ticket::{Bounds, Split};

/// Backend weights in the pool's draw are in thousandths, so a warming
/// backend's weight can be a fraction of its configured one.
pub const WEIGHT_SCALE: u64 = 1000;

/// A ramp takes about this many steps...
const STEPS: u32 = 50;
/// ...at least this far apart.
const MIN_STEP: Duration = Duration::from_millis(50);

/// How often the control plane moves a ramp over `window` on.
pub fn step_interval(window: Duration) -> Duration {
    (window / STEPS).max(MIN_STEP)
}

/// `elapsed / window` as a fraction for [`Bounds::between`] (at least 1
/// once the window has passed; a zero window is done at once).
fn fraction(elapsed: Duration, window: Duration) -> (u128, u128) {
    match window.as_nanos() {
        0 => (1, 1),
        den => (elapsed.as_nanos().min(den), den),
    }
}

/// A split ramp in progress: where tickets mapped when it began, and how
/// far it has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRamp {
    /// The bounds in force when the change came.
    pub from: Bounds,
    /// How long the ramp has run (not counting pauses).
    pub elapsed: Duration,
    /// When `elapsed` was last brought up to date.
    pub at: Instant,
    /// A pool the ramp raises had no backend up at the last step: the
    /// ramp's clock stood still.
    pub paused: bool,
}

impl SplitRamp {
    pub fn start(from: Bounds, now: Instant) -> SplitRamp {
        SplitRamp {
            from,
            elapsed: Duration::ZERO,
            at: now,
            paused: false,
        }
    }

    /// The ramp at `now`; while `paused` its clock does not run.
    pub fn advanced(&self, now: Instant, paused: bool) -> SplitRamp {
        let ran = if paused {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.at)
        };
        SplitRamp {
            from: self.from.clone(),
            elapsed: self.elapsed + ran,
            at: now,
            paused,
        }
    }

    /// Whether the ramp has run its whole `window`.
    pub fn done(&self, window: Duration) -> bool {
        self.elapsed >= window
    }

    /// From 0 to 1: how far along its `window` the ramp is.
    pub fn progress(&self, window: Duration) -> f64 {
        let (num, den) = fraction(self.elapsed, window);
        num as f64 / den as f64
    }

    /// Where tickets map now, on the way to `to`.
    pub fn bounds(&self, to: &Bounds, window: Duration) -> Bounds {
        let (num, den) = fraction(self.elapsed, window);
        Bounds::between(&self.from, to, num, den)
    }
}

/// Whether a change from the split in force (`current`, with tickets
/// mapping through `effective`) to `new` ramps: when it gives more
/// tickets to a pool that gets none now (cold) or is still ramping up (it
/// gets fewer tickets than its weight gives it). Anything else, a change
/// that takes traffic away from the pools that are warming up included,
/// applies at once: moving traffic back to pools that have it is the safe
/// direction.
pub fn ramps(current: &Split, effective: &Bounds, new: &Split) -> bool {
    let (cur, new) = (current.bounds(), new.bounds());
    if cur.len() != new.len() || effective.len() != new.len() {
        return false;
    }
    (0..new.len()).any(|i| {
        let now = effective.width(i);
        new.width(i) > now && (now == 0 || now < cur.width(i))
    })
}

/// A backend warming up after it came back: its weight in the pool's
/// draw ramps from almost nothing to its configured weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warmup {
    /// When it came back up.
    pub since: Instant,
    /// How far along the window, in thousandths.
    pub permille: u32,
}

impl Warmup {
    pub fn start(now: Instant) -> Warmup {
        Warmup {
            since: now,
            permille: 0,
        }
    }

    /// The warm-up at `now`; `None` once `window` has passed.
    pub fn at(&self, now: Instant, window: Duration) -> Option<Warmup> {
        let (num, den) = fraction(now.saturating_duration_since(self.since), window);
        let permille = (num * 1000 / den) as u32;
        (permille < 1000).then_some(Warmup {
            since: self.since,
            permille,
        })
    }

    /// The backend's weight in the draw (in [`WEIGHT_SCALE`] units): its
    /// `weight` scaled by how far the warm-up is, never below 1 for a
    /// backend with a weight (a pool whose only backend up is warming must
    /// still pick it).
    pub fn weight(&self, weight: u32) -> u64 {
        if weight == 0 {
            return 0;
        }
        (u64::from(weight) * u64::from(self.permille)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_a_fiftieth_of_the_window_and_at_least_50ms() {
        assert_eq!(step_interval(Duration::from_secs(30)), Duration::from_millis(600));
        assert_eq!(step_interval(Duration::from_secs(1)), Duration::from_millis(50));
        assert_eq!(step_interval(Duration::from_millis(10)), Duration::from_millis(50));
    }

    #[test]
    fn a_split_ramp_runs_linearly_and_stands_still_while_paused() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let from = Split::new(vec![100, 0]);
        let to = Split::new(vec![50, 50]);
        let r = SplitRamp::start(from.bounds().clone(), t0);
        assert_eq!(r.bounds(to.bounds(), w), *from.bounds());
        let r = r.advanced(t0 + Duration::from_secs(2), false);
        assert!((r.bounds(to.bounds(), w).share(1) - 0.1).abs() < 1e-9);
        assert!((r.progress(w) - 0.2).abs() < 1e-9);
        // Paused for 5 s: no progress.
        let r = r.advanced(t0 + Duration::from_secs(7), true);
        assert!((r.progress(w) - 0.2).abs() < 1e-9);
        assert!(r.paused);
        let r = r.advanced(t0 + Duration::from_secs(11), false);
        assert!((r.progress(w) - 0.6).abs() < 1e-9);
        assert!(!r.done(w));
        let r = r.advanced(t0 + Duration::from_secs(20), false);
        assert!(r.done(w));
        assert_eq!(r.bounds(to.bounds(), w), *to.bounds());
        assert_eq!(r.progress(w), 1.0);
    }

    #[test]
    fn only_more_traffic_for_a_cold_or_warming_pool_ramps() {
        let s = |w: &[u32]| Split::new(w.to_vec());
        let (b100, b90, b50, b0) = (s(&[100, 0]), s(&[90, 10]), s(&[50, 50]), s(&[0, 100]));
        // From weight 0: a canary, a switch, and back to a blue at 0.
        assert!(ramps(&b100, b100.bounds(), &b90));
        assert!(ramps(&b100, b100.bounds(), &b0));
        assert!(ramps(&b0, b0.bounds(), &b50));
        // A warm pool raised, and traffic taken away: at once.
        assert!(!ramps(&b90, b90.bounds(), &b50));
        assert!(!ramps(&b50, b50.bounds(), &b100));
        assert!(!ramps(&b50, b50.bounds(), &b0));
        // Mid-ramp from 100/0 to 50/50 (green at 20%): raising green, even
        // to less than 50 but more than it gets now, ramps on; less than it
        // gets now goes at once.
        let mid = Bounds::between(b100.bounds(), b50.bounds(), 2, 5);
        assert!((mid.share(1) - 0.2).abs() < 1e-9);
        assert!(ramps(&b50, &mid, &b0));
        assert!(ramps(&b50, &mid, &s(&[70, 30])));
        assert!(!ramps(&b50, &mid, &b90));
        assert!(!ramps(&b50, &mid, &b100));
        // Mid-ramp from 100/0 to 0/100 (blue at 60%, weight 0): more for
        // blue, which still has traffic, is at once.
        let mid = Bounds::between(b100.bounds(), b0.bounds(), 2, 5);
        assert!(!ramps(&b0, &mid, &b100));
        assert!(!ramps(&b0, &mid, &s(&[70, 30])));
        assert!(ramps(&b0, &mid, &s(&[10, 90])), "green still warming");
        // Three pools: c from 0 ramps, whatever a and b do.
        assert!(ramps(&s(&[1, 1, 0]), s(&[1, 1, 0]).bounds(), &s(&[0, 1, 1])));
        assert!(!ramps(&s(&[1, 1, 1]), s(&[1, 1, 1]).bounds(), &s(&[0, 1, 1])));
    }

    #[test]
    fn a_warming_backend_weighs_a_growing_part_of_its_weight() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let up = Warmup::start(t0);
        assert_eq!(up.weight(3), 1, "never 0: it can still be picked");
        let mid = up.at(t0 + Duration::from_secs(4), w).unwrap();
        assert_eq!(mid.permille, 400);
        assert_eq!(mid.weight(3), 1200);
        assert_eq!(mid.weight(0), 0);
        assert!(up.at(t0 + w, w).is_none(), "done: its full weight");
        assert!(up.at(t0, Duration::ZERO).is_none());
    }
}
