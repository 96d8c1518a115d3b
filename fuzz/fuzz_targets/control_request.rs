//! The control socket's request decoding (`control::parse_request`, what the daemon's
//! server runs on each connection) on arbitrary bytes from a client. Never a panic; a
//! typed error or a request; nothing longer than `MAX_REQUEST` accepted; every accepted
//! request is one the client library could have sent (it serializes and decodes back).
#![no_main]

use lb_userspace::edges::control::{parse_request, RequestError, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // What the server's bounded `read_until` hands over: up to and including the first
    // newline, at most MAX_REQUEST bytes.
    let bounded = &data[..data.len().min(MAX_REQUEST)];
    let line = match bounded.iter().position(|&b| b == b'\n') {
        Some(end) => &bounded[..=end],
        None => bounded,
    };
    check(line);
    // The parser enforces the bound itself too, whatever it is given.
    check(data);
});

fn check(line: &[u8]) {
    match parse_request(line) {
        Ok(request) => {
            assert!(line.len() <= MAX_REQUEST && line.ends_with(b"\n"));
            let mut sent = serde_json::to_vec(&request).expect("requests serialize");
            sent.push(b'\n');
            assert_eq!(parse_request(&sent).ok(), Some(request), "round trip");
        }
        Err(RequestError::TooLong) => assert!(line.len() >= MAX_REQUEST),
        Err(RequestError::Empty) => assert!(line.is_empty()),
        Err(RequestError::Unterminated) => assert!(!line.ends_with(b"\n")),
        // The text goes back to the client: it must render.
        Err(e @ RequestError::Json(_)) => assert!(!e.to_string().is_empty()),
    }
}
