//! Shared fixtures for the criterion micro-benchmarks: a validated config
//! with one service and two pools of N backends each.

use cutover_config::Config;

/// A config with service `web`, pools `blue` and `green` of `n` backends each
/// (distinct loopback ports, never connected to) and a 50/50 split.
pub fn two_pools(n: usize) -> Config {
    let backends = |base: usize| {
        (0..n)
            .map(|i| format!("\"127.0.0.1:{}\"", base + i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "[services.web]\n\
         split = {{ blue = 50, green = 50 }}\n\
         [[services.web.listeners]]\n\
         listen = \"127.0.0.1:18080\"\n\
         [services.web.pools.blue]\n\
         backends = [{}]\n\
         [services.web.pools.green]\n\
         backends = [{}]\n",
        backends(20_000),
        backends(30_000)
    );
    match cutover_config::parse("bench", &text) {
        Ok(c) => c,
        Err(e) => panic!("bench config does not validate: {e}"),
    }
}
