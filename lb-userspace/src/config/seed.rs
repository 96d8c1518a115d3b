//! `hash_seed`: the seed of the flow hash and of the Maglev permutations. With the
//! built-in constants alone (seed 0, the default, what xlb used before the option), the
//! placement of every flow can be computed from the public source: anyone can craft
//! flows that all land on one backend. A seed of the operator's choosing, the same on
//! every balancer of a group (they must place flows alike), takes that away.

use serde::{Deserialize, Serialize};

/// As written in the config: a JSON number, or a string in hex (`"0x1a2b3c4d"`) or
/// decimal. Kept as written so validation can name what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HashSeed {
    Number(serde_json::Number),
    Text(String),
}

impl HashSeed {
    /// The seed, or why it is not one.
    pub fn value(&self) -> Result<u32, String> {
        const EXPECTED: &str = "expected a 32-bit unsigned number (0..=4294967295) or a hex \
                                string such as \"0x1a2b3c4d\"";
        let parsed = match self {
            HashSeed::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
            HashSeed::Text(s) => {
                let s = s.trim();
                match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => s.parse::<u32>().ok(),
                }
            }
        };
        parsed.ok_or_else(|| {
            let shown = match self {
                HashSeed::Number(n) => n.to_string(),
                HashSeed::Text(s) => format!("{s:?}"),
            };
            format!("{shown}: {EXPECTED}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(json: &str) -> Result<u32, String> {
        serde_json::from_str::<HashSeed>(json).unwrap().value()
    }

    #[test]
    fn numbers_and_hex_or_decimal_strings() {
        assert_eq!(seed("0"), Ok(0));
        assert_eq!(seed("4294967295"), Ok(u32::MAX));
        assert_eq!(seed(r#""0x1a2B3c4d""#), Ok(0x1a2b_3c4d));
        assert_eq!(seed(r#""12345""#), Ok(12345));
        for bad in [
            "4294967296",
            "-1",
            "1.5",
            r#""0x1_0000_0000""#,
            r#""seed""#,
            r#""""#,
        ] {
            let e = seed(bad).unwrap_err();
            assert!(e.contains("32-bit"), "{bad}: {e}");
        }
    }
}
