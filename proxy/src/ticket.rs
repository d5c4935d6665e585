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

/// Cumulative upper bounds (exclusive, over 2^64) of each pool's ticket range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    weights: Vec<u32>,
    bounds: Vec<u128>,
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
        Split { weights, bounds }
    }

    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// The pool a ticket maps to. With a positive total the last bound is
    /// 2^64, above every ticket; the fallback only guards the impossible.
    pub fn pool_for(&self, t: Ticket) -> usize {
        let t = u128::from(t.0);
        self.bounds
            .iter()
            .position(|b| t < *b)
            .unwrap_or(self.bounds.len().saturating_sub(1))
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
}
