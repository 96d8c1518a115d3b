//! What VRRP instances inherit from outside their block: the `vrrp_*` settings of
//! `global_defs` (and `default_interface`), `vrrp_script` weights; and the top-level
//! VRRP keywords with their notes.

use std::collections::HashMap;

use super::{
    garp::{self, GarpTimers},
    valid_ifname, Converter, Node, STRICT_REASON,
};
use crate::import::keepalived::{
    keywords::{Action::*, Block, Row},
    TopLevel,
};

/// The `vrrp_*` settings of `global_defs` (and `default_interface`) instances inherit.
#[derive(Clone, Debug, Default)]
pub(in super::super) struct Globals {
    pub(super) version: Option<u8>,
    pub(super) strict: bool,
    pub(super) default_interface: Option<String>,
    pub(super) garp: GarpTimers,
    /// `vrrp_script` weights by name (keepalived's default 0: FAULT when it fails).
    pub(super) script_weights: HashMap<String, i64>,
}

impl AsMut<GarpTimers> for Globals {
    fn as_mut(&mut self) -> &mut GarpTimers {
        &mut self.garp
    }
}

/// The top-level VRRP keywords.
pub(in super::super) const TOP_LEVEL: &[Row<TopLevel>] = &[
    (&["global_defs"], Apply(global_defs)),
    (&["vrrp_instance"], Apply(TopLevel::vrrp_instance)),
    (&["vrrp_sync_group"], Apply(sync_group)),
    (&["vrrp_script"], Apply(script)),
    (
        &[
            "vrrp_track_process",
            "track_process",
            "track_file",
            "vrrp_track_file",
            "track_bfd",
            "bfd_instance",
        ],
        Apply(tracker),
    ),
    (
        &["static_ipaddress", "static_routes", "static_rules"],
        Note(
            "not carried over: xlb does not manage static addresses, routes or rules; \
             configure them with the host's network configuration",
        ),
    ),
    (
        &["garp_group"],
        Note(
            "not carried over: xlb's gratuitous ARPs are per instance (garp.repeat, \
             garp.delay_ms)",
        ),
    ),
    (
        &["linkbeat_use_polling"],
        Note("not needed: xlb follows carrier changes through netlink"),
    ),
    (
        &["vrrp_*", "track_*", "static_*"],
        Note("unknown VRRP keyword: not carried over"),
    ),
];

/// The children of `global_defs`: only the VRRP ones have an xlb equivalent.
static GLOBAL_DEFS: Block<Globals> = Block {
    keywords: &[&[
        (&["vrrp_version"], Apply(version)),
        (&["vrrp_strict"], Apply(strict)),
        (&["default_interface"], Apply(default_interface)),
        (&["vrrp_garp_master_repeat"], Apply(garp::repeat)),
        (&["vrrp_garp_interval"], Apply(garp::interval)),
        (&["vrrp_gna_interval"], Apply(garp::gna_interval)),
        (&["vrrp_garp_master_delay"], Apply(garp::master_delay)),
        (
            &[
                "vrrp_garp_master_refresh",
                "vrrp_garp_master_refresh_repeat",
            ],
            Apply(garp::master_refresh),
        ),
        (
            &["vrrp_*"],
            NoteAll(
                "VRRP global setting: no xlb equivalent (xlb's VRRP settings are per \
                 instance, docs/vrrp.md)",
            ),
        ),
    ]],
    unknown: "global setting: no xlb equivalent (e-mail alerts, router_id, logging, scripts)",
    one_value_args: false,
};

fn global_defs(_: &mut TopLevel, c: &mut Converter<'_>, node: &Node) {
    c.note(
        node.line,
        "global_defs",
        "global settings: no xlb equivalent except the vrrp_* defaults of VRRP instances \
         (each other one is listed)",
    );
    // The handlers note into `c`, the settings go to its globals.
    let mut globals = std::mem::take(&mut c.vrrp_globals);
    GLOBAL_DEFS.walk(&mut globals, c, node.block.as_deref().unwrap_or_default());
    c.vrrp_globals = globals;
}

fn version(g: &mut Globals, c: &mut Converter<'_>, n: &Node) {
    match n.arg() {
        Some("2") => g.version = Some(2),
        Some("3") => g.version = Some(3),
        _ => c.note(
            n.line,
            &n.keyword,
            "not 2 or 3: ignored (keepalived's default is 2)",
        ),
    }
}

fn strict(g: &mut Globals, c: &mut Converter<'_>, n: &Node) {
    g.strict = true;
    c.note(n.line, &n.keyword, STRICT_REASON);
}

fn default_interface(g: &mut Globals, c: &mut Converter<'_>, n: &Node) {
    match n.arg() {
        Some(i) if valid_ifname(i) => g.default_interface = Some(i.to_owned()),
        _ => c.note(n.line, &n.keyword, "not an interface name: ignored"),
    }
}

fn sync_group(_: &mut TopLevel, c: &mut Converter<'_>, node: &Node) {
    let members: Vec<&str> = node
        .block
        .iter()
        .flatten()
        .filter(|n| n.keyword == "group")
        .flat_map(|n| n.block.iter().flatten())
        .map(|n| n.keyword.as_str())
        .collect();
    c.note(
        node.line,
        &node.keyword,
        format!(
            "{} ({}) not carried over: xlb has no sync groups, each instance is elected on \
             its own and they may be master on different hosts (give them the same \
             priorities and tracking so that they move together). Its notify and track \
             settings are not carried over either",
            name(node),
            members.join(", ")
        ),
    );
}

/// `vrrp_script`: its weight is kept for the `track_script` note of the instances.
fn script(_: &mut TopLevel, c: &mut Converter<'_>, node: &Node) {
    let name = name(node);
    let first = |keyword: &str| node.block.iter().flatten().find(|n| n.keyword == keyword);
    let weight = first("weight")
        .and_then(Node::arg)
        .and_then(|w| w.parse::<i64>().ok())
        .unwrap_or(0);
    c.vrrp_globals
        .script_weights
        .insert(name.to_owned(), weight);
    let script = first("script")
        .map(|n| n.args.join(" "))
        .unwrap_or_default();
    c.note(
        node.line,
        &node.keyword,
        format!(
            "{name} ({script}) not carried over: xlb lowers an instance's priority by its own \
             health checks instead of scripts: `track_services` (a service with no usable \
             backend) and `track_interfaces`"
        ),
    );
}

/// The trackers of processes, files and BFD.
fn tracker(_: &mut TopLevel, c: &mut Converter<'_>, node: &Node) {
    c.note(
        node.line,
        &node.keyword,
        format!(
            "{} not carried over: xlb tracks services (track_services) and interfaces \
             (track_interfaces) only",
            name(node)
        ),
    );
}

fn name(node: &Node) -> &str {
    node.arg().unwrap_or("")
}
