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
mod tests;
