//! The keepalived importer's tests: fixtures converted exactly, keepalived's rules,
//! syntax, and mutated inputs.

use serde_json::{json, Value};

use super::{real_server::NOTIFY_REASON, *};
use crate::{
    config::Config,
    import::{parse_for_another_host, to_json, ImportReport},
};

const SAMPLE: &str = include_str!("../../../tests/fixtures/keepalived/sample.conf");
const DR_TCP: &str = include_str!("../../../tests/fixtures/keepalived/dr_tcp.conf");
const TUN_MISC: &str = include_str!("../../../tests/fixtures/keepalived/tun_misc.conf");
const QUIRKS: &str = include_str!("../../../tests/fixtures/keepalived/quirks.conf");
const VRRP: &str = include_str!("../../../tests/fixtures/keepalived/vrrp.conf");

const VRRP_NOTES: [(usize, &str, &str); 23] = [
    (
        2,
        "global_defs",
        "global settings: no xlb equivalent except the vrrp_* defaults of VRRP instances (each other one is listed)",
    ),
    (
        3,
        "router_id",
        "global setting: no xlb equivalent (e-mail alerts, router_id, logging, scripts)",
    ),
    (
        7,
        "vrrp_garp_master_delay",
        "not carried over: keepalived repeats the gratuitous ARPs 10 s after becoming master; xlb sends its garp.repeat announcements garp.delay_ms apart at once (and again when the link comes back), with no second round. For a slow switch raise garp.delay_ms",
    ),
    (
        8,
        "enable_script_security",
        "global setting: no xlb equivalent (e-mail alerts, router_id, logging, scripts)",
    ),
    (
        11,
        "vrrp_script",
        "chk_web (/usr/local/bin/check-web) not carried over: xlb lowers an instance's priority by its own health checks instead of scripts: `track_services` (a service with no usable backend) and `track_interfaces`",
    ),
    (
        17,
        "vrrp_sync_group",
        "VG_WEB (VI_WEB4, VI_WEB6) not carried over: xlb has no sync groups, each instance is elected on its own and they may be master on different hosts (give them the same priorities and tracking so that they move together). Its notify and track settings are not carried over either",
    ),
    (
        31,
        "unicast_src_ip",
        "not carried over: xlb sends adverts from the interface's primary address (IPv6: its link-local address); peers that check the source must expect that one",
    ),
    (
        37,
        "203.0.113.10/24",
        "/24 not carried over: xlb adds virtual addresses as /32 (no subnet route from them; the host's own address on that subnet provides it)",
    ),
    (
        37,
        "203.0.113.10/24",
        "label bond0:web not carried over: xlb adds a plain address (no label, scope or flags)",
    ),
    (
        40,
        "virtual_ipaddress_excluded",
        "1 excluded addresses not carried over: xlb adds only the advertised `addresses` (at most 16); add them there if they fit, or to the host's network configuration",
    ),
    (
        45,
        "eth3",
        "no weight (keepalived: FAULT while down, the instance gives up the addresses): weight 149 written, the priority drops to 1 while it is down and any peer takes over",
    ),
    (
        47,
        "track_script",
        "chk_web not carried over: xlb tracks services with its own health checks instead of scripts; for the converted services on this instance's addresses add e.g. \"track_services\": [{\"service\": \"203.0.113.10:80/tcp\", \"weight\": 60}]",
    ),
    (
        50,
        "notify",
        "carried over with other arguments: keepalived calls it as `SCRIPT INSTANCE NAME STATE PRIORITY` (STATE MASTER, BACKUP, FAULT, STOP); xlb as `argv... STATE NAME REASON` with STATE master, backup or initialize (lower case): adapt the script to read the state from its first argument",
    ),
    (
        51,
        "notify_master",
        "not carried over: xlb runs one `notify` per instance as `argv... STATE NAME REASON` (STATE master, backup, initialize; no fault or stop). Call this script from one that dispatches on its first argument and set that one as `notify`",
    ),
    (
        56,
        "state",
        "MASTER not carried over: xlb starts every instance as backup (unless priority 255) and becomes master after the master-down interval if no better master advertises; the priority decides",
    ),
    (
        60,
        "advert_int",
        "0.125 s: VRRPv3 advertises 10 ms steps (0.01..=40.95 s), 130 ms, as keepalived",
    ),
    (
        62,
        "2001:db8:10::10/64",
        "/64 not carried over: xlb adds virtual addresses as /128 (no subnet route from them; the host's own address on that subnet provides it)",
    ),
    (
        64,
        "192.0.2.99",
        "not of the family of 2001:db8:10::10: not carried over (xlb instances are IPv4 or IPv6; write another vrrp_instance for it)",
    ),
    (
        68,
        "2001:db8:10::13",
        "not carried over: xlb sends and receives IPv6 adverts on link-local addresses only (RFC 5798); write this peer's fe80:: address",
    ),
    (
        71,
        "eth2",
        "positive weights: keepalived adds them to the priority while the interface is up, xlb subtracts the weight while it is down; priority 200 + 20 = 220 written, so that the priority with every interface up is keepalived's",
    ),
    (
        73,
        "authentication",
        "not carried over: keepalived ignores authentication with VRRPv3 too",
    ),
    (
        77,
        "use_vmac",
        "not carried over: xlb has no virtual MAC; a new master announces the addresses with its own MAC (gratuitous ARP / unsolicited NA)",
    ),
    (
        80,
        "vrrp_instance",
        "VI_WEB6 is already defined on line 55; skipped",
    ),
];

/// A VRRP-heavy config: two instances (v3 with unicast peers, track_interface and
/// nopreempt; IPv6 with a link-local peer), global VRRP defaults, a sync group and a
/// script, a duplicate instance. Exact JSON and exact notes.
#[test]
fn vrrp_instances_exact() {
    let mut options = Options::default();
    options.macs.insert(
        "10.2.0.1".parse().unwrap(),
        "52:54:00:02:00:01".parse().unwrap(),
    );
    let (config, _, report) = run(VRRP, &options);
    assert_eq!(
        config,
        json!({
            "encap_sources": {},
            "services": [
                {
                    "vip": "203.0.113.10", "port": 80, "protocol": "tcp", "mode": "dsr",
                    "check": {"type": "tcp", "interval_ms": 2000, "timeout_ms": 1000,
                              "rise": 1, "fall": 2, "initial": "up"},
                    "on_failure": "reset",
                    "fallback": "drop",
                    "backends": [
                        {"address": "10.2.0.1", "mac": "52:54:00:02:00:01", "weight": 1}
                    ]
                }
            ],
            "vrrp": [
                {
                    "name": "VI_WEB4", "interface": "bond0", "vrid": 51, "priority": 150,
                    "version": 3, "advert_int_ms": 250, "preempt": false,
                    "preempt_delay_ms": 0,
                    "addresses": ["203.0.113.10", "203.0.113.11"],
                    "track_interfaces": [
                        {"interface": "eth2", "weight": 50},
                        {"interface": "eth3", "weight": 149}
                    ],
                    "unicast_peers": ["10.1.0.12", "10.1.0.13"],
                    "garp": {"repeat": 3, "delay_ms": 50, "refresh_s": 60},
                    "notify": ["/usr/local/bin/vrrp-notify", "--log"]
                },
                {
                    "name": "VI_WEB6", "interface": "bond0", "vrid": 52, "priority": 220,
                    "version": 3, "advert_int_ms": 130, "preempt": true,
                    "preempt_delay_ms": 0,
                    "addresses": ["2001:db8:10::10", "2001:db8:10::11"],
                    "track_interfaces": [{"interface": "eth2", "weight": 20}],
                    "unicast_peers": ["fe80::12"],
                    "garp": {"repeat": 3, "delay_ms": 100}
                }
            ]
        })
    );
    let got: Vec<(usize, &str, &str)> = report
        .notes
        .iter()
        .map(|n| (n.line, n.keyword.as_str(), n.reason.as_str()))
        .collect();
    assert_eq!(got, VRRP_NOTES);
    // Written for another host: its interfaces need not exist here, but where they
    // do not, the full check (`xlb check-config`) names them.
    let json = to_json(&report.config);
    match Config::parse(&json) {
        Ok(_) => {}
        Err(crate::config::ConfigError::Invalid { errors, .. }) => {
            assert!(
                errors.iter().all(crate::config::vrrp::host_dependent),
                "{errors:?}"
            );
        }
        Err(e) => panic!("{e}"),
    }
}

/// keepalived's own defaults and corrections, and the instances it would refuse.
#[test]
fn vrrp_keepalived_rules() {
    let text = "vrrp_instance V2 {
state MASTER
virtual_router_id 7
advert_int 2.5
nopreempt
preempt_delay 5
authentication {
    auth_type PASS
    auth_pass 1234
}
virtual_ipaddress {
    10.0.0.7
}
track_interface {
    eth9 weight 10 reverse
}
track_script {
    chk
}
}
vrrp_instance V6 {
interface eth0
version 2
virtual_router_id 8
priority 0
virtual_ipaddress {
    fd00::8
}
}
vrrp_instance NOVRID {
interface eth0
virtual_ipaddress {
    10.0.0.9
}
}
vrrp_instance NOVIP {
interface eth0
virtual_router_id 9
}
vrrp_instance BADIF {
interface \"a/b\"
virtual_router_id 10
virtual_ipaddress {
    10.0.0.10
}
}
vrrp_instance SAME {
interface eth0
virtual_router_id 8
virtual_ipaddress {
    fd00::9
}
}
";
    let (config, notes, report) = run(text, &Options::default());
    assert_eq!(
        config["vrrp"],
        json!([
            {
                // state MASTER without a priority: 255; keepalived's default version 2
                // rounds 2.5 s to 3 s; nopreempt and preempt_delay are cleared.
                "name": "V2", "interface": "eth0", "vrid": 7, "priority": 255,
                "version": 2, "advert_int_ms": 3000, "preempt": true,
                "preempt_delay_ms": 0, "addresses": ["10.0.0.7"],
                "garp": {"repeat": 5, "delay_ms": 100}
            },
            {
                "name": "V6", "interface": "eth0", "vrid": 8, "priority": 100,
                "version": 3, "advert_int_ms": 1000, "preempt": true,
                "preempt_delay_ms": 0, "addresses": ["fd00::8"],
                "garp": {"repeat": 5, "delay_ms": 100}
            }
        ])
    );
    assert_eq!(
        notes,
        owned(&[
            (1, "vrrp_instance"),
            (2, "state"),
            (4, "advert_int"),
            (5, "nopreempt"),
            (6, "preempt_delay"),
            (7, "authentication"),
            (15, "eth9"),
            (17, "track_script"),
            (23, "version"),
            (25, "priority"),
            (30, "vrrp_instance"),
            (36, "vrrp_instance"),
            (40, "vrrp_instance"),
            (47, "vrrp_instance"),
        ])
    );
    assert_eq!(
        reason(&report, 1, "vrrp_instance"),
        "no interface: eth0, keepalived's default_interface"
    );
    assert!(
        reason(&report, 7, "authentication").starts_with(
            "NOT CARRIED OVER, BREAKS INTEROPERATION: xlb sends VRRPv2 adverts without \
             authentication"
        ),
        "{}",
        reason(&report, 7, "authentication")
    );
    assert_eq!(
        reason(&report, 4, "advert_int"),
        "2.5 s: VRRPv2 advertises whole seconds (1..=255), 3000 ms, as keepalived"
    );
    assert_eq!(
        reason(&report, 17, "track_script"),
        "chk not carried over: xlb tracks services with its own health checks instead \
         of scripts; list the services it protects in `track_services` \
         (`vip:port/proto`, weight 254)"
    );
    assert_eq!(
        reason(&report, 30, "vrrp_instance"),
        "NOVRID: no virtual_router_id; skipped"
    );
    assert_eq!(
        reason(&report, 36, "vrrp_instance"),
        "NOVIP: no virtual_ipaddress (xlb needs at least one); skipped"
    );
    assert_eq!(
        reason(&report, 40, "vrrp_instance"),
        "BADIF: line 41: interface a/b: not an interface name; skipped"
    );
    assert_eq!(
        reason(&report, 47, "vrrp_instance"),
        "rejected by xlb's validation (vrrp[2].vrid: 8 on eth0 is already vrrp[1]); skipped"
    );
}

/// Imports `text`; checks that the JSON validates and reads back to the same
/// config; returns it with the notes as (line, keyword).
fn run(text: &str, options: &Options) -> (Value, Vec<(usize, String)>, ImportReport) {
    let report = import(text, options).unwrap();
    let json = to_json(&report.config);
    let parsed = parse_for_another_host(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(parsed, report.config, "{json}");
    let notes = report
        .notes
        .iter()
        .map(|n| (n.line, n.keyword.clone()))
        .collect();
    (serde_json::from_str(&json).unwrap(), notes, report)
}

fn owned(notes: &[(usize, &str)]) -> Vec<(usize, String)> {
    notes.iter().map(|(l, k)| (*l, (*k).to_owned())).collect()
}

fn reason<'a>(report: &'a ImportReport, line: usize, keyword: &str) -> &'a str {
    &report
        .notes
        .iter()
        .find(|n| n.line == line && n.keyword == keyword)
        .unwrap_or_else(|| panic!("no note {line} {keyword}: {:#?}", report.notes))
        .reason
}

const GLOBAL_AND_VRRP_NOTES: [(usize, &str); 11] = [
    (3, "global_defs"),
    (4, "notification_email"),
    (5, "acassen@firewall.loc"),
    (6, "failover@firewall.loc"),
    (8, "notification_email_from"),
    (9, "smtp_server"),
    (10, "smtp_connect_timeout"),
    (11, "router_id"),
    (12, "vrrp_strict"),
    (16, "state"),
    // keepalived itself ignores PASS authentication in strict mode.
    (21, "authentication"),
];

/// keepalived's sample VI_1: VRRPv2 (keepalived's default), 1 s adverts.
fn sample_vrrp() -> Value {
    json!([{
        "name": "VI_1", "interface": "eth0", "vrid": 51, "priority": 100, "version": 2,
        "advert_int_ms": 1000, "preempt": true, "preempt_delay_ms": 0,
        "addresses": ["192.168.200.16", "192.168.200.17"],
        "garp": {"repeat": 5, "delay_ms": 100}
    }])
}

#[test]
fn keepalived_sample_nat_services_are_skipped_with_the_reason() {
    let (config, notes, report) = run(SAMPLE, &Options::default());
    assert_eq!(
        config,
        json!({"encap_sources": {}, "services": [], "vrrp": sample_vrrp()})
    );
    let mut want = owned(&GLOBAL_AND_VRRP_NOTES);
    want.extend(owned(&[(34, "lb_kind"), (74, "lb_kind")]));
    assert_eq!(notes, want);
    assert_eq!(
        reason(&report, 21, "authentication"),
        "not carried over: keepalived ignores authentication in strict mode too"
    );
    assert!(
        reason(&report, 34, "lb_kind").starts_with("NAT is not supported")
            && reason(&report, 34, "lb_kind").ends_with("virtual_server 10.10.10.2 1358 skipped"),
        "{}",
        reason(&report, 34, "lb_kind")
    );
}

#[test]
fn keepalived_sample_as_dr() {
    let text = SAMPLE.replace("lb_kind NAT", "lb_kind DR");
    let mut options = Options::default();
    options.macs.insert(
        "192.168.200.2".parse().unwrap(),
        "52:54:00:c8:00:02".parse().unwrap(),
    );
    let (config, notes, report) = run(&text, &options);
    assert_eq!(
        config,
        json!({
            "encap_sources": {},
            "services": [
                {
                    "vip": "10.10.10.2", "port": 1358, "protocol": "tcp", "mode": "dsr",
                    "source_affinity": true,
                    "on_failure": "reset",
                    "fallback": {"sorry_server": {
                        "address": "192.168.200.200", "weight": 1
                    }},
                    // Different digests: each backend carries its own check.
                    "backends": [
                        {"address": "192.168.200.2", "mac": "52:54:00:c8:00:02", "weight": 1,
                         "check": {
                            "type": "http", "path": "/testurl/test.jsp",
                            "digest": "640205b7b0fc66c1ea91c463fac6334d",
                            "interval_ms": 6000, "timeout_ms": 3000,
                            "rise": 1, "fall": 4, "initial": "up"
                         }},
                        {"address": "192.168.200.3", "weight": 1,
                         "check": {
                            "type": "http", "path": "/testurl/test.jsp",
                            "digest": "640205b7b0fc66c1ea91c463fac6334c",
                            "interval_ms": 6000, "timeout_ms": 3000,
                            "rise": 1, "fall": 4, "initial": "up"
                         }}
                    ]
                },
                {
                    "vip": "10.10.10.3", "port": 443, "protocol": "tcp", "mode": "dsr",
                    "source_affinity": true,
                    "check": {
                        "type": "https", "path": "/testurl/test.jsp",
                        "expect_status": [200], "tls_insecure": true,
                        "interval_ms": 3000, "timeout_ms": 3000,
                        "rise": 1, "fall": 4, "initial": "up"
                    },
                    "on_failure": "reset",
                    "fallback": "drop",
                    "backends": [
                        {"address": "192.168.200.4", "weight": 1}
                    ]
                }
            ],
            "vrrp": sample_vrrp()
        })
    );
    let mut want = owned(&GLOBAL_AND_VRRP_NOTES);
    want.extend(owned(&[
        (33, "lb_algo"),
        (35, "persistence_timeout"),
        (47, "url"),
        (53, "delay_before_retry"),
        (66, "delay_before_retry"),
        (73, "lb_algo"),
        (75, "persistence_timeout"),
        (80, "SSL_GET"),
        (87, "delay_before_retry"),
    ]));
    assert_eq!(notes, want);
    // No MAC is invented: xlb learns it from the kernel's neighbour table.
    assert!(report.notes.iter().all(|n| !n.reason.contains("MAC")));
    assert!(reason(&report, 33, "lb_algo").starts_with("rr replaced by weighted Maglev"));
    assert!(
        reason(&report, 80, "SSL_GET")
            .starts_with("keepalived does not verify the server's certificate"),
        "{}",
        reason(&report, 80, "SSL_GET")
    );
}

#[test]
fn dr_with_tcp_and_http_checks() {
    let mut options = Options::default();
    options.macs.insert(
        "192.0.2.11".parse().unwrap(),
        "52:54:00:00:00:11".parse().unwrap(),
    );
    let (config, notes, report) = run(DR_TCP, &options);
    assert_eq!(
        config,
        json!({
            "encap_sources": {},
            "services": [
                {
                    "vip": "203.0.113.10", "port": 80, "protocol": "tcp", "mode": "dsr",
                    "check": {
                        "type": "tcp", "port": 8080, "interval_ms": 2000,
                        "timeout_ms": 1000, "rise": 1, "fall": 3, "initial": "down"
                    },
                    "on_failure": "drain",
                    "fallback": "drop",
                    "backends": [
                        {"address": "192.0.2.11", "mac": "52:54:00:00:00:11", "weight": 3},
                        {"address": "192.0.2.12", "weight": 1},
                        {"address": "192.0.2.13", "weight": 0}
                    ]
                },
                {
                    "vip": "203.0.113.10", "port": 53, "protocol": "udp", "mode": "dsr",
                    "source_affinity": true,
                    "on_failure": "reset",
                    "fallback": "drop",
                    "backends": [
                        {"address": "192.0.2.21", "weight": 1,
                         "check": {"type": "tcp", "interval_ms": 5000, "timeout_ms": 5000,
                                   "rise": 1, "fall": 2, "initial": "up"}},
                        {"address": "192.0.2.22", "weight": 65535}
                    ]
                },
                {
                    "vip": "2001:db8::10", "port": 443, "protocol": "tcp", "mode": "dsr",
                    "source_affinity": true,
                    "check": {
                        "type": "http", "path": "/healthz", "host": "www.example.com",
                        "expect_status": [200, 201, 202, 203, 204],
                        "interval_ms": 10000, "timeout_ms": 2000,
                        "rise": 1, "fall": 5, "initial": "up"
                    },
                    "on_failure": "reset",
                    "fallback": "drop",
                    "backends": [
                        {"address": "2001:db8::11", "weight": 1}
                    ]
                }
            ]
        })
    );
    assert_eq!(
        notes,
        owned(&[
            (2, "vrrp_script"),
            (9, "lb_algo"),
            (12, "quorum"),
            (18, "notify_down"),
            (23, "delay_before_retry"),
            (33, "delay_before_retry"),
            (36, "real_server"),
            (43, "delay_before_retry"),
            (55, "TCP_CHECK"),
            (61, "weight"),
            (70, "persistence_timeout"),
            (83, "real_server"),
        ])
    );
    assert_eq!(reason(&report, 18, "notify_down"), NOTIFY_REASON);
    assert!(reason(&report, 36, "real_server").starts_with("port 8080 not carried over: DSR"));
    assert_eq!(
        reason(&report, 55, "TCP_CHECK"),
        "timeout 10000 ms is longer than the interval (delay_loop) 5000 ms: xlb needs \
         timeout <= interval, timeout set to 5000 ms"
    );
    assert_eq!(
        reason(&report, 83, "real_server"),
        "192.0.2.40 is not of the VIP's address family: skipped"
    );
}

#[test]
fn tun_with_misc_and_ping_checks() {
    let options = Options::from_args(&[], &["192.0.2.1".parse().unwrap()]).unwrap();
    let (config, notes, _) = run(TUN_MISC, &options);
    assert_eq!(
        config,
        json!({
            "encap_sources": {"v4": "192.0.2.1", "gue_port": 6081},
            "services": [
                {
                    "vip": "198.51.100.7", "port": 25, "protocol": "tcp", "mode": "ipip",
                    "on_failure": "reset",
                    "fallback": "drop",
                    "backends": [
                        {"address": "10.20.0.5", "weight": 2,
                         "check": {
                            "type": "exec",
                            "command": ["/usr/local/bin/check_smtp", "--host", "10.20.0.5",
                                        "--banner", "ESMTP ready"],
                            "interval_ms": 15000, "timeout_ms": 5000,
                            "rise": 1, "fall": 1, "initial": "up"
                         }},
                        {"address": "10.20.0.6", "weight": 2,
                         "check": {
                            "type": "icmp", "interval_ms": 15000, "timeout_ms": 5000,
                            "rise": 1, "fall": 2, "initial": "up"
                         }}
                    ]
                },
                {
                    "vip": "198.51.100.8", "port": 4789, "protocol": "udp", "mode": "gue",
                    "on_failure": "drain",
                    "fallback": "drop",
                    "backends": [
                        {"address": "10.20.0.7", "weight": 1}
                    ]
                }
            ]
        })
    );
    assert_eq!(
        notes,
        owned(&[
            (1, "global_defs"),
            (2, "router_id"),
            (7, "lvs_sched"),
            (16, "misc_dynamic"),
            (21, "notify_up"),
            (22, "notify_down"),
            (41, "lvs_method"),
        ])
    );
    let (_, _, report) = run(TUN_MISC, &options);
    assert!(
        reason(&report, 16, "misc_dynamic").contains("exit codes 2-255"),
        "{}",
        reason(&report, 16, "misc_dynamic")
    );

    // Without --encap-source: a placeholder that validates but is reported.
    let (config, notes, report) = run(TUN_MISC, &Options::default());
    assert_eq!(
        config["encap_sources"],
        json!({"v4": "0.0.0.0", "gue_port": 6081})
    );
    assert!(notes.contains(&(5, "virtual_server".to_owned())));
    assert!(reason(&report, 5, "virtual_server").contains("pass --encap-source IP"));
}

#[test]
fn misc_ping_ssl_and_digest_details() {
    let text = "virtual_server 10.0.0.100 443 {
lb_kind DR
delay_loop 4
real_server 10.0.0.1 443 {
    MISC_CHECK {
        misc_path /bin/check 10.0.0.1 'two words'
        user nobody
        connect_timeout 1
    }
}
real_server 10.0.0.2 443 {
    MISC_CHECK {
        misc_path \"/bin/check 'unterminated\"
    }
}
real_server 10.0.0.3 443 {
    PING_CHECK {
        connect_port 7
        connect_timeout 0.5
        bindto 10.0.0.250
    }
}
real_server 10.0.0.4 443 {
    SSL_GET {
        virtualhost www.example.com
        url {
            path /health
            digest 640205B7B0FC66C1EA91C463FAC6334D
        }
    }
}
real_server 10.0.0.5 443 {
    HTTP_GET {
        url {
            digest 640205b7
        }
    }
}
}
";
    let (config, notes, report) = run(text, &Options::default());
    let backends = &config["services"][0]["backends"];
    // Unquoted words are the arguments; without misc_timeout, keepalived's
    // MISC_CHECK times out after delay_loop.
    assert_eq!(
        backends[0]["check"],
        json!({
            "type": "exec", "command": ["/bin/check", "10.0.0.1", "two words"],
            "interval_ms": 4000, "timeout_ms": 4000, "rise": 1, "fall": 1,
            "initial": "up"
        })
    );
    assert_eq!(backends[1].get("check"), None);
    assert_eq!(
        backends[2]["check"],
        json!({
            "type": "icmp", "source": "10.0.0.250", "interval_ms": 4000,
            "timeout_ms": 500, "rise": 1, "fall": 2, "initial": "up"
        })
    );
    assert_eq!(
        backends[3]["check"],
        json!({
            "type": "https", "host": "www.example.com", "path": "/health",
            "digest": "640205b7b0fc66c1ea91c463fac6334d", "tls_insecure": true,
            "interval_ms": 4000, "timeout_ms": 4000, "rise": 1, "fall": 2,
            "initial": "up"
        })
    );
    assert_eq!(
        backends[4]["check"],
        json!({
            "type": "http", "interval_ms": 4000, "timeout_ms": 4000, "rise": 1,
            "fall": 2, "initial": "up"
        })
    );
    let keywords: Vec<(usize, &str)> = notes.iter().map(|(l, k)| (*l, k.as_str())).collect();
    assert_eq!(
        keywords,
        [
            (7, "user"),
            (8, "connect_timeout"),
            (12, "MISC_CHECK"),
            (13, "misc_path"),
            (18, "connect_port"),
            (24, "SSL_GET"),
            (24, "SSL_GET"),
            (33, "HTTP_GET"),
            (35, "digest"),
        ]
    );
    assert!(reason(&report, 13, "misc_path").contains("unterminated"));
    assert!(
        reason(&report, 12, "MISC_CHECK").contains("command: required"),
        "{}",
        reason(&report, 12, "MISC_CHECK")
    );
    assert_eq!(
        reason(&report, 35, "digest"),
        "not an MD5 (32 hex digits): ignored"
    );
}

#[test]
fn comments_quoting_and_odd_whitespace() {
    let (config, notes, report) = run(QUIRKS, &Options::default());
    assert_eq!(
        config,
        json!({
            "encap_sources": {},
            "services": [
                {
                    "vip": "203.0.113.30", "port": 8443, "protocol": "tcp", "mode": "dsr",
                    "on_failure": "reset",
                    "fallback": "drop",
                    "backends": [
                        {"address": "192.0.2.50", "weight": 5},
                        {"address": "192.0.2.51", "weight": 5,
                         "check": {"type": "http", "path": "/status!ok",
                                   "interval_ms": 500, "timeout_ms": 200,
                                   "rise": 1, "fall": 2, "initial": "up"}}
                    ]
                }
            ]
        })
    );
    assert_eq!(
        notes,
        owned(&[
            (1, "include"),
            (3, "virtual_server_group"),
            (4, "203.0.113.20"),
            (5, "203.0.113.21"),
            (7, "virtual_server"),
            (10, "virtual_server"),
            (20, "weight"),
            (21, "path"),
            (24, "real_server"),
            (25, "frobnicate"),
            (27, "virtual_server"),
            (30, "lb_kind"),
        ])
    );
    assert_eq!(
        reason(&report, 1, "include"),
        "/etc/keepalived/conf.d/*.conf not read: import the included file separately"
    );
    assert_eq!(
        reason(&report, 21, "path"),
        "extra arguments ignored: status_code 200 (one statement per line)"
    );
    assert_eq!(
        reason(&report, 27, "virtual_server"),
        "203.0.113.30 TCP port 8443 is already defined above; skipped"
    );
    assert_eq!(
        reason(&report, 30, "lb_kind"),
        "not set: keepalived's default is NAT, which xlb does not support; \
         virtual_server 203.0.113.31 80 skipped"
    );
}

#[test]
fn syntax() {
    let text = "a \"x y\" b\\c\n\
                c { d \"e # f\" ! g\n\
                \t}\n\
                h i \\\n j\n\
                k\n{\nl \"q\\\"q\" }\n\
                m { n { o } } p\n";
    let got = parse(text).unwrap();
    let leaf = |k: &str, args: &[&str], line| Node {
        keyword: k.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        line,
        block: None,
    };
    let with = |mut n: Node, block: Vec<Node>| {
        n.block = Some(block);
        n
    };
    assert_eq!(
        got,
        [
            leaf("a", &["x y", "b\\c"], 1),
            with(leaf("c", &[], 2), vec![leaf("d", &["e # f"], 2)]),
            leaf("h", &["i", "j"], 4),
            with(leaf("k", &[], 6), vec![leaf("l", &["q\"q"], 8)]),
            with(
                leaf("m", &[], 9),
                vec![with(leaf("n", &[], 9), vec![leaf("o", &[], 9)])]
            ),
            leaf("p", &[], 9),
        ]
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let cases: [(&str, usize, &str); 7] = [
        ("a {\n b\n", 1, "`{` opened here is never closed"),
        ("a\n}\n", 2, "`}` without a matching `{`"),
        ("a {\n}\n}\n", 3, "`}` without a matching `{`"),
        ("\n\n{ a }\n", 3, "`{` without a keyword before it"),
        ("a { b }\n{\n}", 2, "`{` without a keyword before it"),
        (
            "a\nb \"open\nc\n",
            2,
            "unterminated quoted string (quotes end on their line)",
        ),
        (&"a {\n".repeat(40), 33, "blocks nested deeper than 32"),
    ];
    for (text, line, message) in cases {
        let err = import(text, &Options::default()).unwrap_err();
        assert_eq!(
            err,
            ParseError {
                line,
                message: message.into()
            },
            "{text:?}"
        );
    }
    assert_eq!(
        import("a {", &Options::default()).unwrap_err().to_string(),
        "line 1: `{` opened here is never closed"
    );
}

#[test]
fn command_lines_split_like_a_shell() {
    assert_eq!(
        split_command(r#"/bin/check --banner 'ESMTP ready' "a \"b\"" c\ d"#).unwrap(),
        ["/bin/check", "--banner", "ESMTP ready", "a \"b\"", "c d"]
    );
    assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
    assert!(split_command("a 'b").is_err());
    assert!(split_command("a \"b").is_err());
}

#[test]
fn command_line_options() {
    let o = Options::from_args(
        &["10.0.0.1=52:54:00:00:00:01".into()],
        &["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
    )
    .unwrap();
    assert_eq!(o.macs.len(), 1);
    assert_eq!(o.encap_v4, Some("10.0.0.9".parse().unwrap()));
    assert_eq!(o.encap_v6, Some("fd00::9".parse().unwrap()));
    for bad in ["10.0.0.1", "x=52:54:00:00:00:01", "10.0.0.1=52:54"] {
        assert!(Options::from_args(&[bad.into()], &[]).is_err(), "{bad}");
    }
    let e = Options::from_args(
        &[],
        &["10.0.0.9".parse().unwrap(), "10.0.0.8".parse().unwrap()],
    )
    .unwrap_err();
    assert!(e.contains("one address per family"), "{e}");
    // A --mac for no converted server is reported.
    let (_, notes, _) = run(
        "virtual_server 10.0.0.100 80 { lb_kind DR\n real_server 10.0.0.1 80 { } }",
        &Options::from_args(
            &[
                "10.0.0.1=52:54:00:00:00:01".into(),
                "10.0.0.2=52:54:00:00:00:02".into(),
            ],
            &[],
        )
        .unwrap(),
    );
    assert_eq!(notes, owned(&[(0, "--mac")]));
}

/// Mutated sample configs: never a panic; either a parse error with a line inside
/// the text, or a config that passes validation.
#[test]
fn fuzzed_inputs_never_panic_and_yield_valid_configs() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let dr_sample = SAMPLE.replace("lb_kind NAT", "lb_kind DR");
    let seeds = [SAMPLE, DR_TCP, TUN_MISC, QUIRKS, VRRP, dr_sample.as_str()];
    let pieces = [
        "{",
        "}",
        "\"",
        "#",
        "!",
        "\n",
        "\\\n",
        " ",
        "0",
        "65536",
        "-1",
        "1e400",
        "NaN",
        "::",
        "real_server 10.0.0.1 80 {",
        "virtual_server 10.0.0.1 0 {",
        "lb_kind TUN",
        "weight 99999999999",
        "delay_loop 0",
        "connect_timeout 9999999999",
        "url {",
        "status_code 99-700",
        "TCP_CHECK {",
        "HTTP_GET {",
        "vrrp_instance VI_9 {",
        "virtual_ipaddress {",
        "unicast_peer {",
        "track_interface {",
        "virtual_router_id 0",
        "priority 300",
        "advert_int 0.001",
        "advert_int 99999",
        "version 2",
        "weight -300",
        "fe80::1",
        "10.0.0.1/8 dev x label y",
        "state MASTER",
        "\u{00e9}",
        "\t",
        "\r\n",
    ];
    let (mut errors, mut converted) = (0, 0);
    for i in 0..2_000 {
        let mut text: Vec<char> = seeds[i % seeds.len()].chars().collect();
        for _ in 0..1 + next() % 8 {
            let at = (next() as usize) % (text.len() + 1);
            match next() % 4 {
                0 if !text.is_empty() => {
                    let end = (at + (next() as usize % 20)).min(text.len());
                    text.drain(at.min(end)..end);
                }
                1 => {
                    let piece = pieces[next() as usize % pieces.len()];
                    text.splice(at..at, piece.chars());
                }
                2 => {
                    let c = char::from_u32((next() % 0x250) as u32).unwrap_or('x');
                    text.insert(at, c);
                }
                _ => {
                    let from = (next() as usize) % (text.len() + 1);
                    let end = (from + (next() as usize % 200)).min(text.len());
                    let copy: Vec<char> = text[from..end].to_vec();
                    text.splice(at..at, copy);
                }
            }
        }
        let text: String = text.into_iter().collect();
        match import(&text, &Options::default()) {
            Ok(report) => {
                converted += 1;
                let json = to_json(&report.config);
                let parsed = parse_for_another_host(&json)
                    .unwrap_or_else(|e| panic!("iteration {i}: {e}\n{text}\n{json}"));
                assert_eq!(parsed, report.config);
                assert!(report.notes.windows(2).all(|w| w[0].line <= w[1].line));
            }
            Err(e) => {
                errors += 1;
                let lines = text.lines().count().max(1);
                assert!(
                    (1..=lines + 1).contains(&e.line),
                    "iteration {i}: line {} of {lines}: {e}",
                    e.line
                );
            }
        }
    }
    // Both outcomes are exercised.
    assert!(
        errors > 100 && converted > 100,
        "{errors} errors, {converted} converted"
    );
}
