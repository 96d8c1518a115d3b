//! The `xlb` command line (`cli::Cli`, clap) on arbitrary argument vectors: NUL bytes
//! separate arguments, which may be any bytes (an OS argument need not be UTF-8).
//! `try_parse_from` never panics (with debug assertions on, clap also checks the
//! definition's consistency on the first parse), and every refusal, help and version
//! text renders.
#![no_main]

use std::{ffi::OsString, os::unix::ffi::OsStringExt};

use clap::Parser;
use lb_userspace::edges::cli::Cli;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The kernel caps a single argument at 128 KiB; clap's cost is linear in the
    // number of arguments, and libFuzzer's -max_len (4 KiB by default) bounds the rest.
    let argv = std::iter::once(OsString::from("xlb")).chain(
        data.split(|&b| b == 0)
            .map(|arg| OsString::from_vec(arg.to_vec())),
    );
    match Cli::try_parse_from(argv) {
        Ok(cli) => {
            let _ = format!("{cli:?}");
        }
        Err(e) => {
            let _ = e.kind();
            let _ = e.render().to_string();
        }
    }
});
