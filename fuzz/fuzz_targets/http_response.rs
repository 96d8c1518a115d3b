//! The HTTP checker's response handling (`health::http`: head parsing, body framing,
//! de-chunking, substring and MD5 matching) on arbitrary bytes from the "server", via
//! `judge_response`, which runs the same code as a probe over an in-memory stream.
//! Never a panic, only verdicts a response can earn, and consistent ones: a check that
//! passes with a body condition passes without it.
#![no_main]

use std::sync::OnceLock;

use lb_userspace::health::{
    http::{judge_response, Check, Options},
    CheckResult, FailReason,
};
use libfuzzer_sys::fuzz_target;

/// (check, options) pairs: status only, a body substring, a digest, both.
fn checks() -> &'static [(Check, Options)] {
    static CHECKS: OnceLock<Vec<(Check, Options)>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let substring = Check {
            body_contains: Some("ok".into()),
            ..Check::default()
        };
        let digest = Options {
            // md5("ok")
            digest: Some("444bcb3a3fcf8389296c49467f27e1d6".into()),
            ..Options::default()
        };
        vec![
            (Check::default(), Options::default()),
            (
                Check {
                    expect_status: vec![200, 204, 301],
                    ..Check::default()
                },
                Options::default(),
            ),
            (substring.clone(), Options::default()),
            (Check::default(), digest.clone()),
            (substring, digest),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let results: Vec<CheckResult> = checks()
        .iter()
        .map(|(check, options)| judge_response(check, options, data))
        .collect();
    for result in &results {
        // Nothing but the verdicts a response can earn: no socket, so no I/O errors.
        match &result {
            CheckResult::Ok
            | CheckResult::Fail(
                FailReason::Status(_)
                | FailReason::BodyMismatch(_)
                | FailReason::DigestMismatch { .. }
                | FailReason::Protocol(_),
            ) => {}
            other => panic!("unexpected verdict {other:?}"),
        }
    }
    let ok = |i: usize| results[i].is_ok();
    // Substring, digest, both: each needs the status to pass; both needs the digest.
    assert!(!ok(2) || ok(0), "{results:?}");
    assert!(!ok(3) || ok(0), "{results:?}");
    assert!(!ok(4) || (ok(0) && ok(3)), "{results:?}");
    // Status 200 passes the check accepting 200, 204 and 301 too.
    assert!(!ok(0) || ok(1), "{results:?}");
});
