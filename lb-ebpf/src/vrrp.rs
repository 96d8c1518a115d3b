//! VRRP advertisements (IPv4 protocol / IPv6 next header 112), handled before the VIP
//! lookup. Valid adverts are recorded in `XLB_VRRP_SEEN` for the userspace election;
//! while we are master, a lower-priority or priority-0 advert is answered at once with
//! our own prebuilt advertisement (XDP_TX), at most once per router per 10 ms. The rule
//! table is in docs/vrrp-xdp.md; this file follows it top to bottom.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_tail, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use lb_common::{
    service::AF_INET,
    vrrp::{VRRP_ANSWER_INTERVAL_NS, VRRP_FRAME_MAX, VRRP_MAX_ADDRS, VRRP_STATE_MASTER},
    wire::{
        ETH_HLEN, IPPROTO_VRRP, IPV4_VER_IHL, IP_MF, IP_OFFSET, VRRP_HLEN, VRRP_TTL,
        VRRP_TYPE_ADVERTISEMENT, VRRP_V2_AUTH_LEN,
    },
    Stat, VrrpKey, VrrpSeen,
};

use crate::{
    csum,
    maps::{XLB_VRRP_ROUTERS, XLB_VRRP_SEEN},
    parse::{header, Ipv4Hdr, Ipv6Hdr},
};

/// Longest message XDP validates: v3 over IPv6 with [`VRRP_MAX_ADDRS`] addresses (v2
/// over IPv4 with as many is shorter), in 16-bit words for the checksum loop.
const MAX_MSG_WORDS: usize = (VRRP_HLEN + VRRP_MAX_ADDRS as usize * 16) / 2;

/// VRRP header as it sits on the wire (RFC 5798 §5.1, RFC 3768 §5.1).
#[repr(C)]
struct VrrpHdr {
    ver_type: u8,
    vrid: u8,
    priority: u8,
    count: u8,
    /// v3: reserved nibble and high nibble of Max Adver Int; v2: auth type.
    int_hi: u8,
    /// v3: low byte of Max Adver Int; v2: Adver Int in seconds.
    int_lo: u8,
    check: u16,
}

/// What to do with a VRRP packet that was not dropped.
pub enum Verdict {
    /// XDP_PASS, counting this reason.
    Pass(Stat),
    /// XDP_TX: the packet now holds our advertisement.
    Answered,
    /// The packet was resized for the answer but could not be written (should not
    /// happen): XDP_ABORTED rather than sending a half-written frame.
    Aborted,
}

/// The IP layer of an advert, checked (IPv4: no options, not a fragment, header
/// checksum). `Err` only when the IP header is unusable for VRRP.
struct Ip {
    ttl: u8,
    src: [u32; 4],
    dst: [u32; 4],
    /// Offset of the VRRP message in the frame.
    l4: usize,
    /// IP payload length: the VRRP message length (link padding excluded).
    msg_len: usize,
}

/// Handles an advert of `family` (already known to be protocol 112). `Err` is a drop
/// reason.
#[inline(always)]
pub fn advert(ctx: &XdpContext, family: u8) -> Result<Verdict, Stat> {
    // SAFETY: ctx.ctx is the kernel's xdp_md for this packet.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // Rule 1: VRRP not used on this interface: not ours to judge, whatever it holds.
    if XLB_VRRP_ROUTERS.get_ptr(VrrpKey::marker(ifindex)).is_none() {
        return Ok(Verdict::Pass(Stat::NotVip));
    }
    // Rule 2: RFC 5798 §7.1 / RFC 3768 §7.1 receive checks.
    let ip = if family == AF_INET {
        ip4(ctx)?
    } else {
        ip6(ctx)?
    };
    if ip.ttl != VRRP_TTL || ip.msg_len < VRRP_HLEN {
        return Err(Stat::VrrpInvalid);
    }
    // SAFETY: `header` bounds-checked the 8 bytes.
    let hdr = unsafe { &*header::<VrrpHdr>(ctx, ip.l4).map_err(|_| Stat::VrrpInvalid)? };
    let version = hdr.ver_type >> 4;
    let v2 = version == 2;
    if hdr.ver_type & 0x0f != VRRP_TYPE_ADVERTISEMENT
        || !(version == 3 || (v2 && family == AF_INET))
        || hdr.count > VRRP_MAX_ADDRS
    {
        return Err(Stat::VrrpInvalid);
    }
    let addr_len = if family == AF_INET { 4 } else { 16 };
    let auth_len = if v2 { VRRP_V2_AUTH_LEN } else { 0 };
    if ip.msg_len != VRRP_HLEN + usize::from(hdr.count) * addr_len + auth_len {
        return Err(Stat::VrrpInvalid);
    }
    let pseudo = if v2 {
        0
    } else {
        pseudo_header_sum(&ip, family)
    };
    if !checksum_ok(ctx, ip.l4, ip.msg_len, pseudo) {
        return Err(Stat::VrrpInvalid);
    }
    let (vrid, priority) = (hdr.vrid, hdr.priority);
    let adver_int_cs = if v2 {
        u16::from(hdr.int_lo) * 100
    } else {
        // The upper four bits are reserved, ignored on receipt (RFC 5798 §5.2.6).
        u16::from_be_bytes([hdr.int_hi & 0x0f, hdr.int_lo])
    };
    let key = VrrpKey::new(ifindex, vrid, family);
    let router = XLB_VRRP_ROUTERS.get_ptr(key).ok_or(Stat::VrrpUnknownVrid)?;
    // SAFETY: a map value; the kernel keeps it alive for this program run. Userspace
    // replaces values whole (bpf_map_update_elem), fields are read once each.
    let router = unsafe { &*router };
    if router.version != version {
        return Err(Stat::VrrpInvalid);
    }

    // Rule 3: record it for the userspace election.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(seen) = seen_slot(&key) else {
        // Cannot happen (the map holds as many entries as routers can be configured);
        // without a slot there is no rate limit, so no answer either.
        return Ok(Verdict::Pass(Stat::VrrpAdvert));
    };
    // SAFETY: a map value of this key; concurrent writers (other CPUs with adverts of
    // the same router) can at worst interleave field updates of two valid adverts.
    let seen = unsafe { &mut *seen };
    seen.src = ip.src;
    seen.last_seen_ns = now;
    seen.adverts += 1;
    seen.priority = priority;
    seen.version = version;
    seen.adver_int_cs = adver_int_cs;

    // Rule 4: answer a weaker or resigning peer while we are master, under the lease
    // of a live daemon.
    if router.state != VRRP_STATE_MASTER
        || now >= router.lease_until_ns
        || ip.src == router.addr
        || !(priority == 0 || priority < router.priority)
    {
        return Ok(Verdict::Pass(Stat::VrrpAdvert));
    }
    let frame_len = usize::from(router.frame_len);
    if !(ETH_HLEN..=VRRP_FRAME_MAX).contains(&frame_len) {
        // No usable frame configured: leave it to the election.
        return Ok(Verdict::Pass(Stat::VrrpAdvert));
    }
    if now.saturating_sub(seen.answered_ns) < VRRP_ANSWER_INTERVAL_NS {
        return Ok(Verdict::Pass(Stat::VrrpRateLimited));
    }
    // The copy has a constant size (the whole `frame` array) so the verifier needs no
    // bound on `frame_len` (LLVM folds range checks into forms the verifier cannot
    // follow): make the packet VRRP_FRAME_MAX bytes, copy, then cut it to frame_len.
    let full = VRRP_FRAME_MAX as i32;
    let delta = full - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY (helper calls): on this program's own context; no packet pointer is used
    // after a resize.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // The driver cannot resize: the packet is unchanged, the stack gets it.
        return Ok(Verdict::Pass(Stat::VrrpAdvert));
    }
    seen.answered_ns = now;
    // `frame` lies inside the map value: VRRP_FRAME_MAX bytes from its start.
    let stored = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            0,
            router.frame.as_ptr() as *mut _,
            VRRP_FRAME_MAX as u32,
        )
    };
    let cut = frame_len as i32 - full;
    if stored != 0 || (cut != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, cut) } != 0) {
        return Ok(Verdict::Aborted);
    }
    Ok(Verdict::Answered)
}

#[inline(always)]
fn ip4(ctx: &XdpContext) -> Result<Ip, Stat> {
    // SAFETY: `header` bounds-checked the 20 bytes.
    let ip = unsafe { &*header::<Ipv4Hdr>(ctx, ETH_HLEN).map_err(|_| Stat::VrrpInvalid)? };
    // Options, fragments (RFC 5798 §5.1.1: adverts are never fragmented) and a bad
    // header checksum (the stack would drop it: so do we, before recording it).
    // SAFETY: Ipv4Hdr is 20 bytes of plain integers, as is [u16; 10].
    if ip.ver_ihl != IPV4_VER_IHL
        || u16::from_be(ip.frag_off) & (IP_MF | IP_OFFSET) != 0
        || csum::ipv4_header(unsafe { &*(ip as *const Ipv4Hdr).cast() }) != 0
    {
        return Err(Stat::VrrpInvalid);
    }
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    Ok(Ip {
        ttl: ip.ttl,
        src: [ip.src, 0, 0, 0],
        dst: [ip.dst, 0, 0, 0],
        l4: ETH_HLEN + size_of::<Ipv4Hdr>(),
        // parse::ipv4 checked tot_len >= the header length.
        msg_len: tot_len - size_of::<Ipv4Hdr>(),
    })
}

#[inline(always)]
fn ip6(ctx: &XdpContext) -> Result<Ip, Stat> {
    // SAFETY: `header` bounds-checked the 40 bytes.
    let ip = unsafe { &*header::<Ipv6Hdr>(ctx, ETH_HLEN).map_err(|_| Stat::VrrpInvalid)? };
    Ok(Ip {
        ttl: ip.hop_limit,
        src: ip.src,
        dst: ip.dst,
        l4: ETH_HLEN + size_of::<Ipv6Hdr>(),
        msg_len: usize::from(u16::from_be(ip.payload_len)),
    })
}

/// One's-complement sum (unfolded, native word order like the packet words summed in
/// [`checksum_ok`]) of the VRRPv3 pseudo-header (RFC 5798 §5.2.8: the IPv4 / IPv6
/// pseudo-header of RFC 768 / RFC 8200 §8.1 with protocol 112).
#[inline(always)]
fn pseudo_header_sum(ip: &Ip, family: u8) -> u64 {
    let mut sum: u64 = 0;
    let words = if family == AF_INET { 1 } else { 4 };
    let mut i = 0;
    while i < 4 {
        if i < words {
            sum += u64::from(ip.src[i]) + u64::from(ip.dst[i]);
        }
        i += 1;
    }
    let [len_hi, len_lo] = (ip.msg_len as u16).to_be_bytes();
    if family == AF_INET {
        // zero, protocol, length
        sum + u64::from(u32::from_ne_bytes([0, IPPROTO_VRRP, len_hi, len_lo]))
    } else {
        // 32-bit length, 24 zero bits, next header
        sum + u64::from(u32::from_ne_bytes([0, 0, len_hi, len_lo]))
            + u64::from(u32::from_ne_bytes([0, 0, 0, IPPROTO_VRRP]))
    }
}

/// Whether the message of `msg_len` bytes (even, at most `2 * MAX_MSG_WORDS`) at `l4`
/// sums, with `pseudo` and its own checksum field, to all ones. Summing native-order
/// words gives the byte-swapped sum on a little-endian host; all ones is the same
/// either way.
#[inline(always)]
fn checksum_ok(ctx: &XdpContext, l4: usize, msg_len: usize, pseudo: u64) -> bool {
    let mut sum = pseudo;
    let mut i = 0;
    while i < MAX_MSG_WORDS {
        if i * 2 >= msg_len {
            break;
        }
        match header::<u16>(ctx, l4 + i * 2) {
            // SAFETY: `header` bounds-checked the word.
            Ok(w) => sum += u64::from(unsafe { *w }),
            Err(_) => return false,
        }
        i += 1;
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// The `XLB_VRRP_SEEN` value of `key`, created zeroed on the first advert.
#[inline(always)]
fn seen_slot(key: &VrrpKey) -> Option<*mut VrrpSeen> {
    if let Some(p) = XLB_VRRP_SEEN.get_ptr_mut(key) {
        return Some(p);
    }
    // Another CPU may create it meanwhile: NOEXIST keeps its entry.
    let _ = XLB_VRRP_SEEN.insert(key, VrrpSeen::default(), u64::from(BPF_NOEXIST));
    XLB_VRRP_SEEN.get_ptr_mut(key)
}
