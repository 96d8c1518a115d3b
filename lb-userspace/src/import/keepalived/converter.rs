//! The converter's state across blocks: the notes, the converted services (validated
//! once more at the end), the `--mac` addresses used, the GUE port and the VRRP
//! globals; and the finished config.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{vrrp, Node};
use crate::{
    config::{service::vip_key, validate, vrrp as vrrp_spec, Config, MacAddr, Mode, ServiceSpec},
    dataplane::{addr::describe_vip, prefix::Prefix},
    import::{ImportReport, Note, Options},
};

pub(super) struct Converter<'a> {
    options: &'a Options,
    pub notes: Vec<Note>,
    /// Converted services with the line of their `virtual_server`.
    pub services: Vec<(ServiceSpec, usize)>,
    /// `--mac` addresses that were used.
    macs_used: HashSet<IpAddr>,
    /// The GUE port of the first GUE service and its line.
    pub gue_port: Option<(u16, usize)>,
    pub vrrp_globals: vrrp::Globals,
}

impl<'a> Converter<'a> {
    pub fn new(options: &'a Options) -> Converter<'a> {
        Converter {
            options,
            notes: Vec::new(),
            services: Vec::new(),
            macs_used: HashSet::new(),
            gue_port: None,
            vrrp_globals: vrrp::Globals::default(),
        }
    }
}

impl Converter<'_> {
    /// Notes something of line `line` that was not carried over (exactly).
    pub fn note(&mut self, line: usize, keyword: &str, reason: impl Into<String>) {
        self.notes.push(Note {
            line,
            keyword: keyword.to_owned(),
            reason: reason.into(),
        });
    }

    /// Lists `node` and everything in its block as not carried over.
    pub fn list_all(&mut self, node: &Node, reason: &str) {
        self.note(node.line, &node.keyword, reason);
        for child in node.block.iter().flatten() {
            self.list_all(child, reason);
        }
    }

    /// The next-hop MAC of `ip` given with `--mac`; without one xlb learns it from the
    /// kernel's neighbour table (nothing to report).
    pub fn mac(&mut self, ip: IpAddr) -> Option<MacAddr> {
        let mac = self.options.macs.get(&ip).copied()?;
        self.macs_used.insert(ip);
        Some(mac)
    }

    /// Drops the converted entries that xlb's validation rejected, each with a note at
    /// its keepalived line naming the reasons. An error's path `<prefix>i]...` names
    /// entry i; one without a usable index is charged to the last entry, so every round
    /// of validation drops at least one and the caller's loop ends.
    fn drop_rejected<'e, T>(
        &mut self,
        entries: &mut Vec<(T, usize)>,
        errors: impl Iterator<Item = (&'e str, String)>,
        prefix: &str,
        keyword: &str,
    ) {
        let mut drop: HashMap<usize, Vec<String>> = HashMap::new();
        for (path, text) in errors {
            let index = path
                .strip_prefix(prefix)
                .and_then(|r| r.split(']').next())
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < entries.len())
                .unwrap_or(entries.len() - 1);
            drop.entry(index).or_default().push(text);
        }
        for index in (0..entries.len()).rev() {
            if let Some(why) = drop.remove(&index) {
                let (_, line) = entries.remove(index);
                self.note(
                    line,
                    keyword,
                    format!("rejected by xlb's validation ({}); skipped", why.join("; ")),
                );
            }
        }
    }

    /// The config of the converted services and then of `instances` (they may name
    /// the services), with every note sorted by line.
    pub fn finish(mut self, instances: &[Node]) -> ImportReport {
        let mut config = Config::default();
        let needs = |v4: bool| {
            self.services
                .iter()
                .find(|(s, _)| s.mode != Mode::Dsr && s.vip.is_ipv4() == v4)
                .map(|(_, l)| *l)
        };
        let (need_v4, need_v6) = (needs(true), needs(false));
        config.encap_sources.v4 = self.options.encap_v4.map(Prefix::host);
        config.encap_sources.v6 = self.options.encap_v6.map(Prefix::host);
        if let (Some(line), None) = (need_v4, self.options.encap_v4) {
            config.encap_sources.v4 = Some(Prefix::host(Ipv4Addr::UNSPECIFIED));
            self.note(line, "virtual_server", encap_reason("v4", "0.0.0.0"));
        }
        if let (Some(line), None) = (need_v6, self.options.encap_v6) {
            config.encap_sources.v6 = Some(Prefix::host(Ipv6Addr::UNSPECIFIED));
            self.note(line, "virtual_server", encap_reason("v6", "::"));
        }
        if let Some((port, _)) = self.gue_port {
            config.encap_sources.gue_port = port;
        }
        // The converter keeps each service valid; should anything still fail the
        // config's validation, the services concerned are dropped rather than writing
        // a config `xlb run` refuses.
        let mut services = std::mem::take(&mut self.services);
        loop {
            let specs: Vec<ServiceSpec> = services.iter().map(|(s, _)| s.clone()).collect();
            let Err(errors) = validate::services(&specs, &config.encap_sources) else {
                break;
            };
            let errors = errors.iter().map(|e| (e.path.as_str(), e.to_string()));
            self.drop_rejected(&mut services, errors, "services[", "virtual_server");
        }
        config.services = services.into_iter().map(|(s, _)| s).collect();
        config.vrrp = self.vrrp(instances, &config.services);
        let unused: Vec<IpAddr> = self
            .options
            .macs
            .keys()
            .filter(|ip| !self.macs_used.contains(ip))
            .copied()
            .collect();
        for ip in unused {
            self.note(
                0,
                "--mac",
                format!("{ip} is no real_server or sorry_server of a converted service"),
            );
        }
        self.notes.sort_by_key(|n| n.line);
        ImportReport {
            config,
            notes: self.notes,
        }
    }

    /// The VRRP instances, each valid for a host that has its interfaces: an instance
    /// the validation still rejects is dropped (noted), as services are.
    fn vrrp(&mut self, instances: &[Node], services: &[ServiceSpec]) -> Vec<vrrp_spec::VrrpSpec> {
        let names: Vec<String> = services.iter().map(|s| describe_vip(&vip_key(s))).collect();
        let vips: Vec<(IpAddr, String)> = services
            .iter()
            .zip(&names)
            .map(|(s, n)| (s.vip, n.clone()))
            .collect();
        let mut out: Vec<(vrrp_spec::VrrpSpec, usize)> = Vec::new();
        for node in instances {
            if let Some(spec) = vrrp::instance(self, node, &vips) {
                if let Some((_, l)) = out.iter().find(|(o, _)| o.name == spec.name) {
                    let reason = format!("{} is already defined on line {l}; skipped", spec.name);
                    self.note(node.line, "vrrp_instance", reason);
                    continue;
                }
                out.push((spec, node.line));
            }
        }
        loop {
            let specs: Vec<_> = out.iter().map(|(s, _)| s.clone()).collect();
            let errors: Vec<_> = vrrp_spec::validate(&specs, &names)
                .into_iter()
                .filter(|e| !vrrp_spec::host_dependent(e))
                .collect();
            if errors.is_empty() {
                break;
            }
            let errors = errors.iter().map(|e| (e.path.as_str(), e.to_string()));
            self.drop_rejected(&mut out, errors, "vrrp[", "vrrp_instance");
        }
        out.into_iter().map(|(s, _)| s).collect()
    }
}

fn encap_reason(family: &str, placeholder: &str) -> String {
    format!(
        "TUN needs the balancer's own address as outer source: encap_sources.{family} \
         placeholder {placeholder} written; set it (or pass --encap-source IP)"
    )
}
