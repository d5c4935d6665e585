//! Tickets: a number in [0, 1) per connection (or per cookie), stored as the
//! numerator of a fraction over 2^64. A ticket maps to a pool through the
//! cumulative split in pool order, so raising one pool's share only moves
//! tickets into it, never between other pools.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

impl Ticket {
    pub fn random() -> Ticket {
        Ticket(fastrand::u64(..))
    }

    /// A stable ticket for a client address: the same on every cutover
    /// instance and across restarts (no per-process hash keys).
    pub fn from_ip(ip: IpAddr) -> Ticket {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes: Vec<u8> = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.octets().to_vec(),
                None => v6.octets().to_vec(),
            },
        };
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Ticket(splitmix64(h))
    }

    /// The ticket as it travels in a cookie: 16 lower-case hex digits.
    pub fn to_cookie_value(self) -> String {
        format!("{:016x}", self.0)
    }

    /// Parses a cookie value; anything but exactly 16 hex digits is refused.
    pub fn from_cookie_value(s: &str) -> Option<Ticket> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Ticket)
    }

    /// The ticket as a fraction in [0, 1), for humans.
    pub fn as_fraction(self) -> f64 {
        self.0 as f64 / 18_446_744_073_709_551_616.0
    }
}

/// 2^64 / φ, rounded to odd: successive multiples of it, taken mod 2^64,
/// spread over [0, 2^64) more evenly than any other step (Weyl's sequence).
const GOLDEN_STEP: u64 = 0x9e37_79b9_7f4a_7c15;

/// Tickets handed out in turn, by a listener or for new cookies: a random
/// start, then steps of 2^64/φ. Any run of consecutive tickets is spread
/// evenly over [0, 1), so among N connections opened one after another a
/// pool with share w gets N·w of them within 3 (for N up to thousands; the
/// bound grows like log N), where random tickets are off by about
/// √(N·w·(1−w)): at 50/50 over 256 connections, 8 on average and often 16,
/// and at 90/10 over 20 connections, green gets none one time in eight.
#[derive(Debug)]
pub struct Tickets {
    next: AtomicU64,
}

impl Tickets {
    pub fn new() -> Tickets {
        Tickets::starting_at(Ticket::random())
    }

    pub fn starting_at(first: Ticket) -> Tickets {
        Tickets {
            next: AtomicU64::new(first.0),
        }
    }

    pub fn next(&self) -> Ticket {
        // Wraps at 2^64, which is the point: the ticket is a fraction.
        Ticket(self.next.fetch_add(GOLDEN_STEP, Ordering::Relaxed))
    }
}

impl Default for Tickets {
    fn default() -> Tickets {
        Tickets::new()
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A configured split: each pool's weight, and where tickets map under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    weights: Vec<u32>,
    bounds: Bounds,
}

impl Split {
    /// `weights` aligned with the pools; the caller guarantees a positive sum.
    pub fn new(weights: Vec<u32>) -> Split {
        let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
        let mut cum: u128 = 0;
        let bounds = weights
            .iter()
            .map(|w| {
                cum += u128::from(*w);
                (cum << 64).checked_div(total).unwrap_or(0)
            })
            .collect();
        Split {
            weights,
            bounds: Bounds(bounds),
        }
    }

    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Where tickets map under this split.
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// The pool a ticket maps to.
    pub fn pool_for(&self, t: Ticket) -> usize {
        self.bounds.pool_for(t)
    }
}

/// 2^64: the whole ticket range.
const ALL: u128 = 1 << 64;

/// Where tickets map: the cumulative upper bound (exclusive, over 2^64) of
/// each pool's ticket range, in pool order. A configured [`Split`] has
/// one; during a slow start the routing uses bounds part of the way from
/// the previous ones to the split's ([`Bounds::between`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds(Vec<u128>);

impl Bounds {
    /// The pool a ticket maps to. With a positive total the last bound is
    /// 2^64, above every ticket; the fallback only guards the impossible.
    pub fn pool_for(&self, t: Ticket) -> usize {
        let t = u128::from(t.0);
        self.0
            .iter()
            .position(|b| t < *b)
            .unwrap_or(self.0.len().saturating_sub(1))
    }

    /// How many tickets of 2^64 pool `i` gets.
    pub(crate) fn width(&self, i: usize) -> u128 {
        let lo = match i {
            0 => 0,
            _ => self.0.get(i - 1).copied().unwrap_or(ALL),
        };
        self.0.get(i).copied().unwrap_or(lo).saturating_sub(lo)
    }

    /// Pool `i`'s share of tickets, from 0 to 1.
    pub fn share(&self, i: usize) -> f64 {
        self.width(i) as f64 / ALL as f64
    }

    /// Whether pool `i` gets any ticket.
    pub fn has_share(&self, i: usize) -> bool {
        self.width(i) > 0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bounds `num / den` of the way from `from` to `to` (`num` at most
    /// `den`; more counts as `den`): each bound on a straight line between
    /// its two ends, rounded down. So each pool's share moves linearly,
    /// and as the fraction grows each bound moves one way only, so a
    /// ticket crosses it at most once: over a whole ramp a ticket's pool
    /// index only rises or only falls, it never comes back to a pool it
    /// left. With pools that do not line up (a different count), `to`.
    pub fn between(from: &Bounds, to: &Bounds, num: u128, den: u128) -> Bounds {
        if from.0.len() != to.0.len() || num >= den {
            return to.clone();
        }
        // A bound moves by less than 2^65; with `den` below 2^60 (a ramp
        // counts nanoseconds of at most an hour, below 2^42) the product
        // stays far below 2^127.
        let (mut num, mut den) = (num, den);
        while den >= 1 << 60 {
            (num, den) = (num >> 1, den >> 1);
        }
        let (num, den) = (num as i128, den as i128);
        let bounds = from
            .0
            .iter()
            .zip(&to.0)
            .map(|(a, b)| {
                let (a, b) = (*a as i128, *b as i128);
                let moved = ((b - a) * num).div_euclid(den);
                (a + moved).clamp(0, ALL as i128) as u128
            })
            .collect();
        Bounds(bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(f: f64) -> Ticket {
        Ticket((f * 18_446_744_073_709_551_616.0) as u64)
    }

    #[test]
    fn tickets_map_through_the_cumulative_split() {
        let s = Split::new(vec![90, 10]);
        assert_eq!(s.pool_for(t(0.0)), 0);
        assert_eq!(s.pool_for(t(0.899)), 0);
        assert_eq!(s.pool_for(t(0.901)), 1);
        assert_eq!(s.pool_for(Ticket(u64::MAX)), 1);
        let all_green = Split::new(vec![0, 100]);
        assert_eq!(all_green.pool_for(Ticket(0)), 1);
        let all_blue = Split::new(vec![100, 0]);
        assert_eq!(all_blue.pool_for(Ticket(u64::MAX)), 0);
    }

    #[test]
    fn raising_green_only_moves_tickets_from_blue_to_green() {
        let steps = [vec![100, 0], vec![90, 10], vec![50, 50], vec![0, 100]];
        for _ in 0..10_000 {
            let tk = Ticket::random();
            let pools: Vec<usize> = steps
                .iter()
                .map(|w| Split::new(w.clone()).pool_for(tk))
                .collect();
            assert!(pools.windows(2).all(|p| p[0] <= p[1]), "{pools:?}");
        }
    }

    #[test]
    fn tickets_in_turn_give_every_pool_its_share_within_three() {
        // Any start, any run length up to 2000, any split: among the first
        // n tickets a pool of share w gets n·w of them within 3 (the bound
        // grows like log n; random tickets are off by about √(n·w·(1−w)),
        // 8 at 50/50 over 256).
        let mut worst: f64 = 0.0;
        for start in [0, 1, u64::MAX, 0x8000_0000_0000_0000, 0x1234_5678_9abc_def0] {
            for weights in [
                vec![50, 50],
                vec![90, 10],
                vec![99, 1],
                vec![1, 1, 1],
                vec![70, 20, 10],
            ] {
                let split = Split::new(weights.clone());
                let total: u32 = weights.iter().sum();
                let seq = Tickets::starting_at(Ticket(start));
                let mut counts = vec![0u32; weights.len()];
                for n in 1..=2000u32 {
                    counts[split.pool_for(seq.next())] += 1;
                    for (c, w) in counts.iter().zip(&weights) {
                        let off =
                            (f64::from(*c) - f64::from(n) * f64::from(*w) / f64::from(total)).abs();
                        worst = worst.max(off);
                    }
                }
            }
        }
        assert!(worst <= 3.0, "a pool was {worst:.2} tickets off its share");
    }

    #[test]
    fn cookie_round_trip_and_refusals() {
        let tk = Ticket(0x0123_4567_89ab_cdef);
        assert_eq!(Ticket::from_cookie_value(&tk.to_cookie_value()), Some(tk));
        for bad in [
            "",
            "xyz",
            "0123456789abcdeg",
            "0123456789abcdef0",
            "+123456789abcdef",
        ] {
            assert_eq!(Ticket::from_cookie_value(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_ip_tickets_are_stable_and_spread() {
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(Ticket::from_ip(a), Ticket::from_ip(a));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(Ticket::from_ip(a), Ticket::from_ip(mapped));
        let s = Split::new(vec![50, 50]);
        let green = (0..1000u32)
            .filter(|i| {
                let ip = IpAddr::from([10, (i >> 8) as u8, *i as u8, 1]);
                s.pool_for(Ticket::from_ip(ip)) == 1
            })
            .count();
        assert!((400..600).contains(&green), "{green}");
    }

    /// The pool of `tk` under bounds `k / n` of the way from `a` to `b`.
    fn at(a: &Split, b: &Split, k: u128, n: u128, tk: Ticket) -> usize {
        Bounds::between(a.bounds(), b.bounds(), k, n).pool_for(tk)
    }

    fn random_split(pools: usize) -> Split {
        loop {
            let w: Vec<u32> = (0..pools)
                .map(|_| match fastrand::u8(..4) {
                    0 => 0,
                    _ => fastrand::u32(..=1000),
                })
                .collect();
            if w.iter().any(|x| *x > 0) {
                return Split::new(w);
            }
        }
    }

    #[test]
    fn between_moves_every_share_linearly_from_one_split_to_the_other() {
        let (a, b) = (Split::new(vec![100, 0]), Split::new(vec![1, 1]));
        assert_eq!(Bounds::between(a.bounds(), b.bounds(), 0, 10), *a.bounds());
        assert_eq!(Bounds::between(a.bounds(), b.bounds(), 10, 10), *b.bounds());
        assert_eq!(Bounds::between(a.bounds(), b.bounds(), 99, 10), *b.bounds());
        for k in 0..=10u32 {
            let m = Bounds::between(a.bounds(), b.bounds(), u128::from(k), 10);
            let green = 0.5 * f64::from(k) / 10.0;
            assert!((m.share(1) - green).abs() < 1e-12, "{k}: {m:?}");
            assert!((m.share(0) + m.share(1) - 1.0).abs() < 1e-12);
            assert_eq!(m.has_share(1), k > 0);
        }
        // Any splits, any fraction: shares stay shares (none negative, the
        // last bound covers every ticket).
        for _ in 0..2000 {
            let n = 2 + fastrand::usize(..3);
            let (a, b) = (random_split(n), random_split(n));
            let m = Bounds::between(a.bounds(), b.bounds(), fastrand::u128(..=1000), 1000);
            assert!(m.0.windows(2).all(|w| w[0] <= w[1]), "{m:?}");
            assert_eq!(m.0.last(), Some(&ALL));
            assert_eq!(
                m.pool_for(Ticket(u64::MAX)),
                m.0.iter().position(|b| *b == ALL).unwrap()
            );
        }
        // Pools that do not line up: the target at once.
        let c = Split::new(vec![1, 1, 1]);
        assert_eq!(Bounds::between(a.bounds(), c.bounds(), 1, 2), *c.bounds());
    }

    #[test]
    fn during_a_ramp_a_ticket_never_comes_back_to_a_pool_it_left() {
        // Any splits of two to four pools, many ramp steps: a ticket's pool
        // index only rises or only falls, so it changes pool at most once
        // between two pools and never returns to one it left.
        for _ in 0..300 {
            let n = 2 + fastrand::usize(..3);
            let (a, b) = (random_split(n), random_split(n));
            let steps = 1 + fastrand::u128(..60);
            for _ in 0..50 {
                let tk = Ticket::random();
                let pools: Vec<usize> = (0..=steps).map(|k| at(&a, &b, k, steps, tk)).collect();
                let up = pools.windows(2).all(|p| p[0] <= p[1]);
                let down = pools.windows(2).all(|p| p[0] >= p[1]);
                assert!(up || down, "{a:?} -> {b:?}: {pools:?}");
                assert_eq!(pools.first(), Some(&a.pool_for(tk)));
                assert_eq!(pools.last(), Some(&b.pool_for(tk)));
            }
        }
    }

    #[test]
    fn while_green_only_rises_a_ticket_moves_from_blue_to_green_at_most_once() {
        // A rollout of changes that only raise green, each arriving at a
        // random point of the ramp before it (the new ramp starts from the
        // bounds in force then), some applied at once: no ticket ever goes
        // from green back to blue.
        for _ in 0..300 {
            let tickets: Vec<Ticket> = (0..200).map(|_| Ticket::random()).collect();
            let mut seen: Vec<Vec<usize>> = vec![Vec::new(); tickets.len()];
            let mut green = 0u32;
            let mut effective = Split::new(vec![100, 0]).bounds().clone();
            for _ in 0..6 {
                green = (green + fastrand::u32(..=40)).min(100);
                let target = Split::new(vec![100 - green, green]);
                let from = effective.clone();
                let steps = 20u128;
                let (first, stop) = match fastrand::u8(..3) {
                    0 => (steps, steps),                // at once
                    1 => (0, steps),                    // a whole ramp
                    _ => (0, fastrand::u128(..=steps)), // cut short by the next change
                };
                for k in first..=stop {
                    effective = Bounds::between(&from, target.bounds(), k, steps);
                    for (s, tk) in seen.iter_mut().zip(&tickets) {
                        s.push(effective.pool_for(*tk));
                    }
                }
            }
            for (s, tk) in seen.iter().zip(&tickets) {
                assert!(s.windows(2).all(|p| p[0] <= p[1]), "{tk:?}: {s:?}");
            }
        }
    }
}
