//! What kind of device an interface is, from rtnetlink: the attach path warns about
//! devices whose XDP behaviour surprises operators.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};

/// Whether `iface` (in this network namespace) is a veth. Frames a native XDP program
/// sends back out of a veth (XDP_TX) or redirects into one reach its peer only if the
/// peer runs an XDP program too; generic mode has no such requirement. `None` when it
/// cannot be told (no netlink, no such interface).
pub async fn is_veth(iface: &str) -> Option<bool> {
    let (conn, handle, _) = rtnetlink::new_connection().ok()?;
    let task = tokio::spawn(conn);
    let link = handle
        .link()
        .get()
        .match_name(iface.to_owned())
        .execute()
        .try_next()
        .await;
    task.abort();
    let link = link.ok()??;
    Some(link.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
    }))
}
