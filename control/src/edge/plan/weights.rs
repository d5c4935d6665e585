//! Split to Route 53 weight, and where a split comes from (the config file
//! or the running proxy).

use cutover_config::edge::{EdgeConfig, RecordWeight, MAX_ROUTE53_WEIGHT};

/// Map a pool's share of a service split to a Route 53 weight.
///
/// Rule: `round(255 * weight / total)`, except that a pool with a positive
/// weight never maps to 0 (it would get no traffic at all through DNS while
/// the proxy still sends it some), and a total of 0 maps to 0. So a 90/10
/// split becomes 230/26, 100/0 becomes 255/0, and 1/999 becomes 1/255.
pub fn route53_weight(weight: u32, total: u32) -> u8 {
    if weight == 0 || total == 0 {
        return 0;
    }
    let max = u64::from(MAX_ROUTE53_WEIGHT);
    let w = (u64::from(weight) * max + u64::from(total) / 2) / u64::from(total);
    w.clamp(1, max) as u8
}

/// What a split source answers for `weight_from`: the pool's weight and the
/// service's total, or `None` when the service or pool is unknown.
pub type SplitLookup<'a> = &'a dyn Fn(&str, &str) -> Option<(u32, u32)>;

/// The split as written in the config file (what `cutover edge plan/apply`
/// use; `cutover run` uses the live split instead).
pub fn config_split(cfg: &EdgeConfig) -> impl Fn(&str, &str) -> Option<(u32, u32)> + '_ {
    move |service, pool| {
        cfg.records.iter().find_map(|r| match &r.weight {
            Some(RecordWeight::From {
                service: s,
                pool: p,
                config_weight,
                config_total,
            }) if s == service && p == pool => Some((*config_weight, *config_total)),
            _ => None,
        })
    }
}

/// A splits list as the reconciler gets it: `(service, pool, weight, total)`.
pub fn lookup_in(
    splits: &[(String, String, u32, u32)],
    service: &str,
    pool: &str,
) -> Option<(u32, u32)> {
    splits
        .iter()
        .find(|(s, p, _, _)| s == service && p == pool)
        .map(|(_, _, w, t)| (*w, *t))
}
