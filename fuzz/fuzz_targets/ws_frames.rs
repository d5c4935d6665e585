//! The WebSocket frame tracker (proxy/src/tunnel.rs `WsFrames`), fed a
//! server-to-client stream in pieces: after each piece it is at a frame
//! boundary exactly where a plain reading of RFC 6455 section 5.2 says.
#![no_main]

use cutover_proxy::tunnel::WsFrames;
use libfuzzer_sys::fuzz_target;

/// Whether each offset 0..=len of `stream` is between two whole frames.
fn boundaries(stream: &[u8]) -> Vec<bool> {
    let mut at = vec![false; stream.len() + 1];
    at[0] = true;
    let mut pos = 0usize;
    while let Some(&b1) = stream.get(pos + 1) {
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        let head = 2 + ext + mask;
        let Some(len_bytes) = stream.get(pos + 2..pos + 2 + ext) else {
            break;
        };
        if pos + head > stream.len() {
            break;
        }
        let len = match b1 & 0x7f {
            126 | 127 => len_bytes.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)),
            n => u64::from(n),
        };
        let end = ((pos + head) as u64).saturating_add(len);
        if end > stream.len() as u64 {
            break;
        }
        pos = end as usize;
        at[pos] = true;
    }
    at
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many piece sizes follow (up to 7).
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(first & 7).min(rest.len());
    let (pieces, stream) = rest.split_at(n);
    let expected = boundaries(stream);
    let mut frames = WsFrames::default();
    assert!(frames.at_boundary());
    let mut at = 0usize;
    let mut turn = 0usize;
    while at < stream.len() {
        let size = pieces
            .get(turn % pieces.len().max(1))
            .map_or(stream.len(), |p| usize::from(*p) + 1);
        turn += 1;
        let end = (at + size).min(stream.len());
        frames.feed(&stream[at..end]);
        at = end;
        assert_eq!(frames.at_boundary(), expected[at], "after {at} bytes");
    }
});
