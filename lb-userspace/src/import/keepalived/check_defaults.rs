//! The checker settings a `virtual_server` sets for its real servers and a `real_server`
//! overrides for its checkers (`delay_loop`, `connect_timeout`, `retry`, `virtualhost`,
//! `alpha`, `inhibit_on_failure`): their handlers, shared by both blocks' tables, and
//! the reasons both blocks give.

use super::{seconds_ms, Converter, Node};
use crate::config::check::Health;

/// Settings of a `virtual_server` that its real servers and checkers inherit.
#[derive(Clone, Debug)]
pub(super) struct Defaults {
    /// Seconds → ms; keepalived's default `delay_loop` is 60 s.
    pub interval_ms: u64,
    /// keepalived's default `connect_timeout` is 5 s.
    pub timeout_ms: u64,
    /// `retry` / `nb_get_retry`; keepalived's default is 1 (0 for MISC_CHECK).
    pub retry: Option<u32>,
    pub host: Option<String>,
    pub initial: Health,
    pub inhibit: bool,
}

impl Defaults {
    /// keepalived's, for a `virtual_server` that sets none.
    pub fn keepalived() -> Defaults {
        Defaults {
            interval_ms: 60_000,
            timeout_ms: 5_000,
            retry: None,
            host: None,
            initial: Health::Up,
            inhibit: false,
        }
    }
}

pub(super) const DELAY_BEFORE_RETRY_REASON: &str = "not carried over: xlb probes at \
     interval_ms (delay_loop) also after a failure, so a failure is confirmed after fall x \
     interval, not retry x delay_before_retry";

pub(super) const WARMUP_REASON: &str =
    "not carried over: xlb spreads the first probes of all backends over the interval";

pub(super) const SMTP_ALERT_REASON: &str =
    "not carried over: no e-mail alerts (use the service's `notify`)";

pub(super) fn delay_loop<B: AsMut<Defaults>>(b: &mut B, c: &mut Converter<'_>, n: &Node) {
    match n.arg().and_then(seconds_ms) {
        Some(ms) => b.as_mut().interval_ms = ms,
        None => c.note(n.line, &n.keyword, "not a number of seconds: ignored"),
    }
}

pub(super) fn connect_timeout<B: AsMut<Defaults>>(b: &mut B, c: &mut Converter<'_>, n: &Node) {
    match n.arg().and_then(seconds_ms) {
        Some(ms) => b.as_mut().timeout_ms = ms,
        None => c.note(n.line, &n.keyword, "not a number of seconds: ignored"),
    }
}

/// `retry` and `nb_get_retry`.
pub(super) fn retry<B: AsMut<Defaults>>(b: &mut B, c: &mut Converter<'_>, n: &Node) {
    match n.arg().and_then(|a| a.parse().ok()) {
        Some(r) => b.as_mut().retry = Some(r),
        None => c.note(n.line, &n.keyword, "not a number: ignored"),
    }
}

pub(super) fn virtualhost<B: AsMut<Defaults>>(b: &mut B, _: &mut Converter<'_>, n: &Node) {
    b.as_mut().host = n.arg().map(str::to_owned);
}

pub(super) fn alpha<B: AsMut<Defaults>>(b: &mut B, _: &mut Converter<'_>, _: &Node) {
    b.as_mut().initial = Health::Down;
}

pub(super) fn inhibit_on_failure<B: AsMut<Defaults>>(b: &mut B, _: &mut Converter<'_>, n: &Node) {
    b.as_mut().inhibit = !matches!(n.arg(), Some("false" | "off" | "no"));
}
