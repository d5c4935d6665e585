//! Socket options set on every downstream socket cutover accepts and
//! every upstream socket it dials: TCP keepalive, so that a peer that
//! vanished without a FIN (a host gone, a NAT entry dropped) is noticed on
//! a long tunnel or an idle keep-alive connection. Once per connection,
//! never per request.

use cutover_config::TcpKeepalive;
use tokio::net::TcpStream;

/// Turns TCP keepalive on with `keepalive`'s times (nothing for `None`).
/// A failure only costs the early notice: logged, not fatal.
pub(crate) fn set_keepalive(stream: &TcpStream, keepalive: Option<&TcpKeepalive>) {
    let Some(k) = keepalive else {
        return;
    };
    let conf = socket2::TcpKeepalive::new()
        .with_time(k.idle)
        .with_interval(k.interval)
        .with_retries(k.probes);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&conf) {
        tracing::debug!("cannot turn TCP keepalive on: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn keepalive_is_set_with_its_times_on_an_accepted_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let k = TcpKeepalive {
            idle: Duration::from_secs(42),
            interval: Duration::from_secs(7),
            probes: 4,
        };
        let s = socket2::SockRef::from(&accepted);
        assert!(!s.keepalive().expect("SO_KEEPALIVE"), "off by default");
        set_keepalive(&accepted, Some(&k));
        assert!(s.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(s.tcp_keepalive_time().expect("idle"), k.idle);
        assert_eq!(s.tcp_keepalive_interval().expect("interval"), k.interval);
        assert_eq!(s.tcp_keepalive_retries().expect("probes"), 4);
    }
}
