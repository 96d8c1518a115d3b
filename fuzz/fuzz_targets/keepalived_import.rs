//! `import::keepalived::import` on arbitrary text (read lossily, as
//! `xlb import-keepalived` does), without and with `--mac`/`--encap-source` options:
//! never a panic, and whatever it converts is a config `xlb run` accepts: its JSON
//! (`import::to_json`) parses and validates back to the same config, the interfaces it
//! names aside (written for another host: `import::parse_for_another_host`).
#![no_main]

use std::sync::OnceLock;

use lb_userspace::import::{keepalived::import, parse_for_another_host, to_json, Options};
use libfuzzer_sys::fuzz_target;

fn options() -> &'static [Options; 2] {
    static OPTIONS: OnceLock<[Options; 2]> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        // Addresses of the seed fixtures, so MACs are found and used.
        let given = Options::from_args(
            &[
                "192.0.2.11=02:00:00:00:00:0b".into(),
                "192.0.2.50=02:00:00:00:00:32".into(),
                "2001:db8::11=02:00:00:00:00:11".into(),
            ],
            &["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        )
        .unwrap();
        [Options::default(), given]
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for options in options() {
        let Ok(report) = import(&text, options) else {
            continue;
        };
        let json = to_json(&report.config);
        match parse_for_another_host(&json) {
            Ok(again) => assert_eq!(again, report.config, "to_json changed the config:\n{json}"),
            Err(e) => panic!("the import wrote a config xlb refuses: {e}\n{json}"),
        }
    }
});
