//! `keepalived.conf` → xlb [`Config`](crate::config::Config): keepalived's syntax is
//! parsed into a tree of statements ([`syntax`]), then each block is read through its
//! keyword table ([`keywords`]) into a builder that makes a service, backend, check
//! or (in [`vrrp`]) VRRP instance of it. See docs/keepalived-import.md for the mapping
//! and what is not carried over.
//!
//! Syntax: one statement per line (`keyword arg...`), `{ ... }` blocks (the `{` may
//! also start the next line), `#` and `!` comments to the end of the line, `"..."`
//! quoting (with `\"` and `\\`), `\` at the end of a line continuing it. `include`
//! is reported, not followed.

mod check_defaults;
mod checker;
mod converter;
mod keywords;
mod real_server;
mod syntax;
mod values;
mod virtual_server;
mod vrrp;

pub use syntax::{parse, Node, MAX_DEPTH};
pub use values::split_command;

use converter::Converter;
use keywords::{Action::*, Block, Row};
use values::{seconds_ms, status_codes};

use super::{ImportReport, Options, ParseError};

/// Parses and converts a keepalived.conf text.
pub fn import(text: &str, options: &Options) -> Result<ImportReport, ParseError> {
    let nodes = parse(text)?;
    let mut c = Converter::new(options);
    let mut top = TopLevel::default();
    TOP_LEVEL.walk(&mut top, &mut c, &nodes);
    Ok(c.finish(&top.instances))
}

/// What the top level keeps for later.
#[derive(Default)]
struct TopLevel {
    /// Converted last: they inherit global_defs wherever it is, and their notes name
    /// the converted services.
    instances: Vec<Node>,
}

impl TopLevel {
    fn vrrp_instance(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.instances.push(n.clone());
    }
}

static TOP_LEVEL: Block<TopLevel> = Block {
    keywords: &[LVS, vrrp::TOP_LEVEL, PARAMETERS],
    unknown: "unknown keyword: not carried over",
    one_value_args: false,
};

const LVS: &[Row<TopLevel>] = &[
    (&["virtual_server"], Apply(virtual_server)),
    (
        &["virtual_server_group"],
        NoteAll(
            "virtual_server_group is not carried over: write one virtual_server per address \
             and port (xlb has one service per VIP, port and protocol)",
        ),
    ),
    (&["include"], Apply(include)),
];

const PARAMETERS: &[Row<TopLevel>] = &[(
    &["$*", "@*"],
    NoteAll(
        "keepalived parameters and conditional configuration ($NAME, @host) are not \
         expanded: import a file without them",
    ),
)];

fn virtual_server(_: &mut TopLevel, c: &mut Converter<'_>, n: &Node) {
    virtual_server::convert(c, n);
}

fn include(_: &mut TopLevel, c: &mut Converter<'_>, n: &Node) {
    c.note(
        n.line,
        "include",
        format!(
            "{} not read: import the included file separately",
            n.args.join(" ")
        ),
    );
}

#[cfg(test)]
mod tests;
