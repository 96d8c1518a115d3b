//! Keyword tables: what each statement of a kind of block means, and the one loop that
//! reads a block's statements through them.
//!
//! Every block kind (top level, `global_defs`, `virtual_server`, `real_server`, each
//! checker, `url`, `vrrp_instance`) has a [`Block`]: rows of keywords, each either
//! applied to the block's builder by a handler or not carried over for a fixed reason,
//! and the reason for a keyword no row names.

use super::{Converter, Node};

/// What a keyword does.
pub(super) enum Action<B> {
    /// The handler converts the statement into the builder (noting what it must).
    Apply(fn(&mut B, &mut Converter<'_>, &Node)),
    /// Not carried over: the statement is noted with this reason.
    Note(&'static str),
    /// Not carried over: the statement and everything in its block are noted with
    /// this reason.
    NoteAll(&'static str),
    /// Nothing to carry over, and nothing worth a note.
    Nothing,
}

/// Keywords and what they do. A keyword ending in `*` is a prefix: it matches what
/// starts with it, and only when no row names the keyword exactly.
pub(super) type Row<B> = (&'static [&'static str], Action<B>);

/// How one kind of block reads its statements.
pub(super) struct Block<B: 'static> {
    /// The rows, in tables that several blocks share.
    pub keywords: &'static [&'static [Row<B>]],
    /// Reason for a keyword no row names, noted with its block.
    pub unknown: &'static str,
    /// Whether extra arguments of one-value keywords are noted (the LVS blocks).
    pub one_value_args: bool,
}

impl<B> Block<B> {
    fn action(&self, keyword: &str) -> Option<&Action<B>> {
        let rows = || self.keywords.iter().flat_map(|table| table.iter());
        let exact = |name: &&str| !name.ends_with('*') && *name == keyword;
        let prefix = |name: &&str| {
            name.strip_suffix('*')
                .is_some_and(|prefix| keyword.starts_with(prefix))
        };
        rows()
            .find(|(names, _)| names.iter().any(exact))
            .or_else(|| rows().find(|(names, _)| names.iter().any(prefix)))
            .map(|(_, action)| action)
    }

    /// Applies each statement of `body` to `builder`, in order.
    pub fn walk(&self, builder: &mut B, c: &mut Converter<'_>, body: &[Node]) {
        for n in body {
            if self.one_value_args {
                extra_args(c, n);
            }
            match self.action(&n.keyword) {
                Some(Action::Apply(handler)) => handler(builder, c, n),
                Some(Action::Note(reason)) => c.note(n.line, &n.keyword, *reason),
                Some(Action::NoteAll(reason)) => c.list_all(n, reason),
                Some(Action::Nothing) => {}
                None => c.list_all(n, self.unknown),
            }
        }
    }
}

/// Keywords of the LVS blocks that take one value.
const ONE_VALUE: &[&str] = &[
    "protocol",
    "lb_algo",
    "lvs_sched",
    "persistence_timeout",
    "delay_loop",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "virtualhost",
    "weight",
    "connect_port",
    "path",
    "digest",
    "misc_timeout",
];

/// Notes arguments beyond those a one-value keyword takes (one statement per line:
/// `path / status_code 200` on one line is a `path` with three arguments).
fn extra_args(c: &mut Converter<'_>, n: &Node) {
    if ONE_VALUE.contains(&n.keyword.as_str()) && n.args.len() > 1 {
        c.note(
            n.line,
            &n.keyword,
            format!(
                "extra arguments ignored: {} (one statement per line)",
                n.args[1..].join(" ")
            ),
        );
    }
}
