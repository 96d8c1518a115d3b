//! Issue 14, item 6: the data plane converges to what the daemon wants after a failure
//! it did not cause: here an egress interface that disappears and comes back (a NIC
//! driver reload, a VLAN or bond re-created by the network manager). The kernel clears
//! the devmap slot of a deleted device, so without re-resolving the interface the
//! service would stay blackholed after the interface is back.

use std::{net::SocketAddr, time::Duration};

use testbed::{
    dataplane::{wait_until, PinDir},
    lab::{greet, Lab},
};

const EGRESS: &str = "xlbegr0";
const EGRESS_PEER: &str = "xlbegr0p";

/// Creates the balancer's egress interface `EGRESS` as a veth whose peer is a port of
/// the lab's switch, with an XDP program on the peer (native redirects need one).
fn plug_egress(lab: &mut Lab, peer_pins: &PinDir) {
    lab.lb.ip(&[
        "link",
        "add",
        EGRESS,
        "type",
        "veth",
        "peer",
        "name",
        EGRESS_PEER,
        "netns",
        lab.switch.name(),
    ]);
    // It only sends (XDP redirects into it); answering ARP for the balancer's address
    // on the shared switch would draw the client's traffic past the XDP program.
    lab.lb.ip(&["link", "set", EGRESS, "arp", "off"]);
    lab.lb.link_up(EGRESS);
    lab.switch.enslave(EGRESS_PEER, "br0");
    lab.switch.link_up(EGRESS_PEER);
    lab.start_peer_on(EGRESS_PEER, peer_pins.path());
}

/// Whether a greeting through the VIP is answered by a backend.
fn answered(lab: &Lab, vip: SocketAddr) -> bool {
    lab.client
        .run(move || greet(vip))
        .is_ok_and(|who| who.starts_with("be"))
}

/// Creates the egress again and waits until the service answers through it; returns
/// the status then, which must say the data plane is in sync.
fn replug_and_serve(lab: &mut Lab, peer_pins: &PinDir, vip: SocketAddr) -> serde_json::Value {
    plug_egress(lab, peer_pins);
    assert!(
        wait_until(Duration::from_secs(10), || answered(lab, vip)),
        "the service stayed blackholed after its egress interface came back: {}",
        lab.view("status")
    );
    let status = lab.view("status");
    assert_eq!(status["dataplane"]["in_sync"], true, "{status}");
    status
}

#[test]
fn a_recreated_egress_interface_serves_again_and_status_says_when_it_is_missing() {
    let mut lab = Lab::new("conv");
    let peer_pins: Vec<PinDir> = (0..3)
        .map(|i| PinDir::new(&format!("conv-egr{i}")))
        .collect();
    plug_egress(&mut lab, &peer_pins[0]);
    lab.write_config_with(&[1, 1, 1], serde_json::json!({ "egress": EGRESS }));
    lab.start_xlb(&[]);
    let vip = lab.vip();
    assert!(
        answered(&lab, vip),
        "no answer through the egress interface: {} {}",
        lab.view("stats"),
        lab.log.read()
    );

    // Gone and back: forwarding resumes by itself.
    lab.lb.ip(&["link", "del", EGRESS]);
    assert!(!answered(&lab, vip), "answered without an egress interface");
    replug_and_serve(&mut lab, &peer_pins[1], vip);

    // While it is gone, the status says so.
    lab.lb.ip(&["link", "del", EGRESS]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            lab.view("status")["dataplane"]["missing_egress"] == serde_json::json!([EGRESS])
        }),
        "status does not name the missing egress: {}",
        lab.view("status")
    );
    assert_eq!(lab.view("status")["dataplane"]["in_sync"], false);
    let status = replug_and_serve(&mut lab, &peer_pins[2], vip);
    assert_eq!(
        status["dataplane"]["missing_egress"],
        serde_json::json!([]),
        "{status}"
    );
}
