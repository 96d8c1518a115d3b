//! keepalived's argument values: timers, status code lists and command lines.

/// keepalived timers: seconds, fractions allowed. `None` for anything else.
pub(super) fn seconds_ms(text: &str) -> Option<u64> {
    let s: f64 = text.parse().ok()?;
    (s.is_finite() && (0.0..=1e9).contains(&s)).then(|| (s * 1000.0).round() as u64)
}

/// `status_code` arguments: codes and `N-M` ranges in 100..=599.
pub(super) fn status_codes(args: &[String]) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for a in args {
        let (lo, hi) = match a.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?),
            None => {
                let c = a.parse::<u16>().ok()?;
                (c, c)
            }
        };
        if !(100..=599).contains(&lo) || !(lo..=599).contains(&hi) {
            return None;
        }
        out.extend(lo..=hi);
    }
    (!out.is_empty()).then_some(out)
}

/// Splits a command line into words like a shell would without expanding anything:
/// whitespace separates, '...' and "..." quote, `\` escapes the next character.
pub fn split_command(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => out.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("trailing \\".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    Ok(out)
}
