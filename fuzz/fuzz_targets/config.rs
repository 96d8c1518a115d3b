//! `Config::parse` on arbitrary UTF-8: it returns Ok or Err, never panics; and a config
//! it accepts, written back out by `import::to_json` (the pruned JSON that
//! `xlb import-keepalived` prints), parses again to the very same config.
#![no_main]

use lb_userspace::{config::Config, import::to_json};
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    // Config files are read with read_to_string: anything else never reaches parse.
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    if let Ok(config) = Config::parse(text) {
        let json = to_json(&config);
        match Config::parse(&json) {
            Ok(again) => assert_eq!(again, config, "to_json changed the config:\n{json}"),
            Err(e) => panic!("to_json wrote a config that does not parse: {e}\n{json}"),
        }
    }
    Corpus::Keep
});
