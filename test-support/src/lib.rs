//! Shared helpers of cutover's tests (the root crate's `tests/` and
//! `control/tests/`). Everything runs on loopback; every wait is bounded.
//!
//! - [`backend`]: loopback backends (HTTP/1.1 and h2c that say which pool
//!   they are, TCP echo, WebSocket echo, scripted raw socket, slow,
//!   one-shot, health endpoint). Each starts on a listener the test holds
//!   bound (`start_on`) or binds port 0 itself: no test picks a free port
//!   and binds it later.
//! - [`client`]: [`Conn`] (HTTP/1.1 or h2c keep-alive connection) with a
//!   timeout on every call, one-shot GETs, admin API calls; [`raw`]: raw
//!   sockets; [`ws`]: a WebSocket client over HTTP/1.1 or HTTP/2.
//! - [`poll`]: [`eventually`] (and its dual [`holds_for`]), the only way a
//!   test waits.
//! - [`metrics`]: the one metrics reader, for `/metrics` and for a
//!   `prometheus::Registry`.
//! - [`relay`]: [`relay::Relay`], a TCP relay in front of a backend that
//!   can freeze its connections (silent both ways, still open).
//! - [`tls`]: test certificates made on the fly (rcgen; no key is
//!   checked in) and a TLS client that reports the certificate it got.
//! - [`process`]: the real binary started on port 0, its addresses read
//!   from its log.
//!
//! Cargo features keep each test suite's build to what it uses:
//!
//! - `harness`: [`harness::Harness`], the real cutover app in process. It
//!   depends on the root crate `cutover`, so only the root crate's tests
//!   turn it on; control's tests do not build the root crate.
//! - `moto`: [`moto::moto()`], one moto server per test binary (or the one
//!   at `CUTOVER_MOTO_ENDPOINT`), and [`moto::front::Front`], a loopback
//!   front that injects the answers moto never gives. No new dependency
//!   (the process is std, the front is hyper): the AWS SDK config
//!   stays in control's tests (behind control's `edge` feature), so this
//!   crate never pulls the SDK and `--no-default-features` builds stay
//!   SDK-free.

pub mod backend;
pub mod client;
#[cfg(feature = "harness")]
pub mod harness;
pub mod metrics;
#[cfg(feature = "moto")]
pub mod moto;
pub mod poll;
pub mod process;
pub mod raw;
pub mod relay;
pub mod tls;
pub mod ws;

pub use backend::TestBackend;
pub use client::{
    admin, admin_with_token, connect_stream, generation, get_once, probe, set_split, switch,
    Answer, Conn,
};
#[cfg(feature = "harness")]
pub use harness::{Harness, Running};
pub use metrics::{documented, metric, Metrics};
pub use poll::{eventually, holds_for};
