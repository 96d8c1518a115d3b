//! Internet checksum helpers.

/// Checksum of a 20-byte IPv4 header (option-less) whose checksum field is zero. The
/// one's-complement sum is byte-order agnostic, so summing native-order words of a
/// network-order header and storing the result natively gives the right bytes.
#[inline(always)]
pub fn ipv4_header(words: &[u16; 10]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 10 {
        sum += u32::from(words[i]);
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Incremental update (RFC 1624, eqn. 3) of the network-order checksum `check` when one
/// 16-bit word changes from `old` to `new` (both as big-endian values).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!u16::from_be(check)) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be()
}
