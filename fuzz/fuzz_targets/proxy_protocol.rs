//! The PROXY protocol parser (proxy/src/proxy_protocol): `parse` on any
//! bytes, and `read_header` over a stream that hands them over a few at a
//! time. Both must agree, a header is never longer than its input, and
//! `read_header` consumes exactly the header (application data stays in the
//! stream).
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use cutover_proxy::proxy_protocol::{
    encode_v2, parse, read_header, ProxyProtocolError, V1_MAX_LEN, V2_MAX_PAYLOAD,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// A stream that hands over at most `step` bytes per read.
struct Dribble<'a> {
    data: &'a [u8],
    at: usize,
    step: usize,
}

impl AsyncRead for Dribble<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let rest = &self.data[self.at..];
        let n = rest.len().min(self.step).min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else {
        return;
    };
    let parsed = parse(data);
    if let Ok(Some((header, len))) = &parsed {
        assert!(
            *len <= data.len(),
            "header of {len} bytes from {}",
            data.len()
        );
        assert!(*len <= 16 + V2_MAX_PAYLOAD);
        if data.first() == Some(&b'P') {
            assert!(*len <= V1_MAX_LEN);
        }
        // The header alone parses the same.
        match parse(&data[..*len]) {
            Ok(Some((again, n))) => assert!(again == *header && n == *len),
            other => panic!("the header alone parsed as {other:?}"),
        }
        // Addresses it carries go through the v2 encoder and back.
        if let (Some(src), Some(dst)) = (header.source, header.destination) {
            if src.is_ipv4() == dst.is_ipv4() {
                let encoded = encode_v2(src, dst);
                match parse(&encoded) {
                    Ok(Some((back, n))) => {
                        assert_eq!(n, encoded.len());
                        assert_eq!(back, *header);
                    }
                    other => panic!("encode_v2 output parsed as {other:?}"),
                }
            }
        }
    }
    let mut stream = Dribble {
        data,
        at: 0,
        step: usize::from(step % 64) + 1,
    };
    let read = RT.with(|rt| rt.block_on(read_header(&mut stream, Duration::from_secs(3600))));
    match (&parsed, &read) {
        (Ok(Some((header, len))), Ok(got)) => {
            assert_eq!(header, got);
            assert_eq!(stream.at, *len, "read_header read past the header");
        }
        (Err(_), Err(_)) => {}
        (Ok(None), Err(ProxyProtocolError::Truncated { received })) => {
            assert_eq!(*received, data.len());
        }
        _ => panic!("parse said {parsed:?}, read_header said {read:?}"),
    }
});
