//! The cutover binary's library: wiring the config, proxy and control crates
//! into a running app, the built-in demo, and the CLI's admin client.

pub mod app;
pub mod backend;
pub mod cli;
pub mod ctl;
pub mod demo;
pub mod fds;
pub mod listeners;
pub mod logging;
pub mod reload;
pub mod tls_watch;

pub use app::{App, StartError};
