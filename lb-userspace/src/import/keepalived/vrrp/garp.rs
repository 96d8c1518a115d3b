//! Gratuitous ARP settings: the `vrrp_garp_*` defaults of `global_defs` and the `garp_*`
//! keywords of a `vrrp_instance` that override them, read by the same handlers.

use super::{seconds_ms, Converter, Node};

/// What the `garp_*` keywords set.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct GarpTimers {
    pub repeat: Option<u32>,
    pub interval_ms: Option<u64>,
    /// For IPv6 (unsolicited neighbour advertisements).
    pub gna_interval_ms: Option<u64>,
    /// `garp_master_refresh`, seconds.
    pub refresh_s: Option<u32>,
}

fn delay_reason(seconds: &str) -> String {
    format!(
        "not carried over: keepalived repeats the gratuitous ARPs {seconds} s after becoming \
         master; xlb sends its garp.repeat announcements garp.delay_ms apart at once (and \
         again when the link comes back), with no second round. For a slow switch raise \
         garp.delay_ms"
    )
}

const REFRESH_REASON: &str =
    "not a number of seconds up to 86400 (xlb's garp.refresh_s limit): ignored";

const REFRESH_REPEAT_REASON: &str = "not carried over: xlb sends one round (every address \
     once) per garp.refresh_s";

const INTERVAL_REASON: &str =
    "not a number of seconds up to 10 (xlb's garp.delay_ms limit): ignored";

/// Seconds (fractions allowed) as ms, at most xlb's `garp.delay_ms` limit.
fn interval_ms(n: &Node) -> Option<u64> {
    n.arg().and_then(seconds_ms).filter(|ms| *ms <= 10_000)
}

/// `garp_master_repeat`.
pub(super) fn repeat<B: AsMut<GarpTimers>>(b: &mut B, c: &mut Converter<'_>, n: &Node) {
    match n.arg().and_then(|a| a.parse::<u32>().ok()) {
        Some(r) => b.as_mut().repeat = Some(r),
        None => c.note(n.line, &n.keyword, "not a number: ignored"),
    }
}

/// `garp_interval`.
pub(super) fn interval<B: AsMut<GarpTimers>>(b: &mut B, c: &mut Converter<'_>, n: &Node) {
    match interval_ms(n) {
        Some(ms) => b.as_mut().interval_ms = Some(ms),
        None => c.note(n.line, &n.keyword, INTERVAL_REASON),
    }
}

/// `gna_interval`.
pub(super) fn gna_interval<B: AsMut<GarpTimers>>(b: &mut B, c: &mut Converter<'_>, n: &Node) {
    match interval_ms(n) {
        Some(ms) => b.as_mut().gna_interval_ms = Some(ms),
        None => c.note(n.line, &n.keyword, INTERVAL_REASON),
    }
}

/// `garp_master_delay`: a second round xlb does not send.
pub(super) fn master_delay<B>(_: &mut B, c: &mut Converter<'_>, n: &Node) {
    let arg = n.arg();
    if arg.and_then(seconds_ms).is_some_and(|ms| ms > 0) {
        c.note(n.line, &n.keyword, delay_reason(arg.unwrap_or_default()));
    }
}

/// `garp_master_refresh` (→ `garp.refresh_s`) and `garp_master_refresh_repeat`.
pub(super) fn master_refresh<B: AsMut<GarpTimers>>(b: &mut B, c: &mut Converter<'_>, n: &Node) {
    if n.keyword.ends_with("_repeat") {
        if n.arg().is_some_and(|a| a != "1") {
            c.note(n.line, &n.keyword, REFRESH_REPEAT_REASON);
        }
        return;
    }
    match n
        .arg()
        .and_then(|a| a.parse::<u32>().ok())
        .filter(|s| *s <= 86_400)
    {
        Some(s) => b.as_mut().refresh_s = Some(s),
        None => c.note(n.line, &n.keyword, REFRESH_REASON),
    }
}
