//! The upstream HTTP/1.1 client's response head parser and body decoder
//! (proxy/src/upstream/h1: parse.rs, body.rs), fed a backend's bytes in
//! pieces. Never more body than input; a length-framed body is exactly its
//! length; and the outcome does not depend on how the bytes were split.
#![no_main]

use cutover_proxy::fuzzing::{read_response, BodyFraming, End};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // First byte: HEAD request or not, and how many piece sizes follow.
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let head_request = first & 1 == 1;
    let n_pieces = usize::from((first >> 1) & 7).min(rest.len());
    let (pieces, data) = rest.split_at(n_pieces);
    let out = read_response(data, head_request, pieces);
    let total = data.len() as u64;
    assert!(out.head_len as u64 + out.body_len + out.left as u64 <= total);
    match (out.framing, out.end) {
        (None, end) => assert_eq!(end, End::NoHead),
        (Some(BodyFraming::Empty), end) => {
            assert_eq!(end, End::Complete);
            assert_eq!(out.body_len, 0);
        }
        (Some(BodyFraming::Length(n)), End::Complete) => {
            assert_eq!(out.body_len, n);
            assert_eq!(out.head_len as u64 + n + out.left as u64, total);
        }
        (Some(BodyFraming::Length(n)), _) => assert!(out.body_len < n),
        (Some(BodyFraming::Close), end) => {
            assert_eq!(end, End::Complete);
            assert_eq!(out.head_len as u64 + out.body_len, total);
        }
        (Some(BodyFraming::Chunked), _) => {}
    }
    if out.end == End::NoHead {
        assert!(out.status.is_none());
    }
    // Split or whole, the same response (below the limits that depend on
    // how much is buffered: chunk-size lines of 4 KiB, heads of 64 KiB).
    if !pieces.is_empty() && data.len() <= 4096 {
        let whole = read_response(data, head_request, &[]);
        assert_eq!(out, whole, "split into pieces of {pieces:?}");
    }
});
