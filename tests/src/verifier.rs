//! The verifier's statistics for loaded programs: states explored, peak states, stack
//! depth — what `BPF_LOG_STATS` prints and `bpf_prog_info` does not carry (it has only
//! `verified_insns`).
//!
//! aya keeps no log of a load that succeeds (its first attempt passes no log buffer), so
//! each program is loaded a second time here, with `log_level = BPF_LOG_STATS`, then
//! closed. The second load must verify the very same program: the object is parsed and
//! relocated by aya-obj exactly as aya's loader does it, against the fds of the maps aya
//! created (so `.rodata` holds the same frozen values, which decide dead branches), with
//! the BTF aya loaded (found by the program's `btf_id`), the same func/line info, program
//! type, expected attach type and flags. The proof is the count: the re-load's
//! "processed N insns" must equal the loaded program's `verified_insns`, or
//! [`verifier_stats`] fails.

use std::{
    collections::{HashMap, HashSet},
    io, mem,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{
    maps::{Map, MapData},
    programs::ProgramError,
    Ebpf,
};
use aya_obj::{
    btf::{Btf, BtfError, BtfRelocationError},
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type, BPF_F_XDP_HAS_FRAGS},
    relocation::EbpfRelocationError,
    Object, ParseError, ProgramSection,
};

/// `BPF_LOG_STATS` (include/linux/bpf_verifier.h): only the statistics, no trace.
const BPF_LOG_STATS: u32 = 4;
/// The statistics are a few lines; the buffer grows if the kernel asks for more.
const LOG_SIZE: usize = 64 << 10;
const MAX_LOG_SIZE: usize = 64 << 20;

/// What the verifier reports for one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierStats {
    pub program: String,
    /// Instructions processed (equal to the loaded program's `verified_insns`, checked).
    pub processed_insns: u32,
    /// The kernel's limit on `processed_insns` (1,000,000 for privileged loads).
    pub insn_limit: u32,
    /// Most verifier states kept for any one instruction (pruning points).
    pub max_states_per_insn: u32,
    /// States created over the whole verification.
    pub total_states: u32,
    /// Most states alive at once (the verifier's memory high-water mark).
    pub peak_states: u32,
    /// Longest walk of the old liveness marking; kernels that dropped it leave `None`.
    pub mark_read: Option<u32>,
    /// Stack bytes of each function (the program first, then its bpf-to-bpf callees).
    pub stack_depth: Vec<u32>,
    /// Wall time of the re-verification (varies from run to run).
    pub verification_time_us: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("parsing the eBPF object")]
    Parse(#[from] ParseError),
    #[error("sanitizing the object's BTF")]
    Btf(#[from] BtfError),
    #[error("applying the object's CO-RE relocations")]
    Core(#[from] BtfRelocationError),
    #[error("relocating map references and calls")]
    Relocation(#[from] EbpfRelocationError),
    /// Every map of the object must be one aya created, or the re-load would verify
    /// against different maps.
    #[error("map {0} of the object is not in the loaded Ebpf (not created, or taken out)")]
    MissingMap(String),
    #[error("program {0} is not in the object")]
    MissingProgram(String),
    #[error("program {0} is not an XDP program (the only kind re-verified here)")]
    NotXdp(String),
    #[error("program {name}: reading its kernel info (is it loaded?)")]
    Info {
        name: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("program {0}: the kernel reports no verified_insns (kernel < 5.16)")]
    NoVerifiedInsns(String),
    #[error("opening BTF object {id} by id")]
    BtfById {
        id: u32,
        #[source]
        source: io::Error,
    },
    #[error("program {name}: re-loading with BPF_LOG_STATS: {source}; verifier log:\n{log}")]
    Load {
        name: String,
        #[source]
        source: io::Error,
        log: String,
    },
    #[error("program {name}: no statistics line in the verifier log:\n{log}")]
    NoStats { name: String, log: String },
    #[error(
        "program {name}: re-verified with {reloaded} instructions processed, but its \
         load processed {loaded}: the re-load is not the same program"
    )]
    Mismatch {
        name: String,
        loaded: u32,
        reloaded: u32,
    },
}

/// Re-verifies each of `programs` (already loaded from `object` into `ebpf`) and returns
/// their statistics, in order. Errors when a re-load is not provably the same program.
pub fn verifier_stats(
    ebpf: &Ebpf,
    object: &[u8],
    programs: &[&str],
) -> Result<Vec<VerifierStats>, VerifierError> {
    let obj = relocated_object(ebpf, object)?;
    programs
        .iter()
        .map(|name| reverify(ebpf, &obj, name))
        .collect()
}

/// `object` prepared the way `EbpfLoader::load` prepares it (aya 0.14, src/bpf.rs), with
/// the maps aya created.
fn relocated_object(ebpf: &Ebpf, object: &[u8]) -> Result<Object, VerifierError> {
    let features = aya::features();
    let mut obj = Object::parse(object)?;
    // The sanitized BTF itself is not loaded again (the program's own is reused), but
    // CO-RE relocations read the sanitized types, as in aya.
    if let Some(btf_features) = features.btf() {
        obj.fixup_and_sanitize_btf(btf_features)?;
    }
    if let Ok(kernel_btf) = Btf::from_sys_fs() {
        obj.relocate_btf(&kernel_btf)?;
    }
    let fds: HashMap<&str, RawFd> = ebpf
        .maps()
        .map(|(name, map)| (name, map_data(map).fd().as_fd().as_raw_fd()))
        .collect();
    let maps: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
    let mut relocations = Vec::with_capacity(maps.len());
    for (name, map) in &maps {
        let fd = *fds
            .get(name.as_str())
            .ok_or_else(|| VerifierError::MissingMap(name.clone()))?;
        relocations.push((name.as_str(), fd, map));
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(relocations.into_iter(), &text_sections)?;
    obj.relocate_calls(&text_sections)?;
    obj.sanitize_functions(features);
    Ok(obj)
}

/// Every variant holds a `MapData`; aya 0.14 has no accessor for it on `Map`.
fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}

fn reverify(ebpf: &Ebpf, obj: &Object, name: &str) -> Result<VerifierStats, VerifierError> {
    let missing = || VerifierError::MissingProgram(name.to_owned());
    let info = ebpf
        .program(name)
        .ok_or_else(missing)?
        .info()
        .map_err(|source| VerifierError::Info {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    let loaded = info
        .verified_instruction_count()
        .ok_or_else(|| VerifierError::NoVerifiedInsns(name.to_owned()))?;
    let program = obj.programs.get(name).ok_or_else(missing)?;
    let function = obj
        .functions
        .get(&program.function_key())
        .ok_or_else(missing)?;
    let ProgramSection::Xdp { frags, attach_type } = program.section else {
        return Err(VerifierError::NotXdp(name.to_owned()));
    };
    let btf = info
        .btf_id()
        .map(|id| btf_fd_by_id(id).map_err(|source| VerifierError::BtfById { id, source }))
        .transpose()?;

    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    // SAFETY: all-zero is a valid bpf_attr (plain integers), and the kernel's default
    // for every field not set below.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writing plain integer fields of the BPF_PROG_LOAD member.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
    load.expected_attach_type = bpf_attach_type::from(attach_type) as u32;
    load.prog_flags = if frags { BPF_F_XDP_HAS_FRAGS } else { 0 };
    load.insns = function.instructions.as_ptr() as u64;
    load.insn_cnt = function.instructions.len() as u32;
    load.license = program.license.as_ptr() as u64;
    // Only kprobes look at it (aya passes the running kernel's, to the same effect).
    load.kern_version = program.kernel_version.unwrap_or(0);
    // Truncated as the kernel requires; the zeroed tail terminates it.
    let name_room = load.prog_name.len() - 1;
    for (dst, src) in load.prog_name.iter_mut().zip(name.bytes().take(name_room)) {
        *dst = src as libc::c_char;
    }
    if let Some(btf) = &btf {
        load.prog_btf_fd = btf.as_raw_fd() as u32;
        if function.func_info_rec_size > 0 {
            load.func_info = func_info.as_ptr() as u64;
            load.func_info_cnt = function.func_info.len() as u32;
            load.func_info_rec_size = function.func_info_rec_size as u32;
        }
        if function.line_info_rec_size > 0 {
            load.line_info = line_info.as_ptr() as u64;
            load.line_info_cnt = function.line_info.len() as u32;
            load.line_info_rec_size = function.line_info_rec_size as u32;
        }
    }

    let mut log = vec![0u8; LOG_SIZE];
    let result = loop {
        // SAFETY: as above.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.log_level = BPF_LOG_STATS;
        load.log_buf = log.as_mut_ptr() as u64;
        load.log_size = log.len() as u32;
        log[0] = 0;
        // SAFETY: attr is a BPF_PROG_LOAD request whose pointers (instructions,
        // license, func/line info, log) outlive the call.
        match unsafe { sys_bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) } {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && log.len() < MAX_LOG_SIZE => {
                log.resize(log.len() * 4, 0);
            }
            // The extra program is closed here: only its log was wanted.
            other => break other.map(drop),
        }
    };
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let log = String::from_utf8_lossy(&log[..end]).into_owned();
    if let Err(source) = result {
        return Err(VerifierError::Load {
            name: name.to_owned(),
            source,
            log,
        });
    }
    let stats = parse_log(name, &log).ok_or_else(|| VerifierError::NoStats {
        name: name.to_owned(),
        log: log.clone(),
    })?;
    if stats.processed_insns != loaded {
        return Err(VerifierError::Mismatch {
            name: name.to_owned(),
            loaded,
            reloaded: stats.processed_insns,
        });
    }
    Ok(stats)
}

/// Reads the `BPF_LOG_STATS` lines of a verifier log:
///
/// ```text
/// verification time 2718 usec
/// stack depth 48+0+16
/// processed 22316 insns (limit 1000000) max_states_per_insn 11 total_states 1180 peak_states 620 mark_read 87
/// ```
///
/// `None` without a "processed" line or with one missing a required field.
pub fn parse_log(program: &str, log: &str) -> Option<VerifierStats> {
    let mut stack_depth = Vec::new();
    let mut verification_time_us = None;
    let mut processed = None;
    for line in log.lines() {
        if let Some(depths) = line.strip_prefix("stack depth ") {
            stack_depth = depths
                .trim()
                .split('+')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
        } else if let Some(rest) = line.strip_prefix("verification time ") {
            verification_time_us = rest.split_whitespace().next()?.parse().ok();
        } else if line.starts_with("processed ") {
            processed = Some(line);
        }
    }
    let tokens: Vec<&str> = processed?.split_whitespace().collect();
    let (processed_insns, insn_limit) = match tokens.as_slice() {
        ["processed", n, "insns", "(limit", limit, ..] => {
            (n.parse().ok()?, limit.strip_suffix(')')?.parse().ok()?)
        }
        _ => return None,
    };
    let fields: HashMap<&str, u32> = tokens[5..]
        .chunks_exact(2)
        .filter_map(|pair| Some((pair[0], pair[1].parse().ok()?)))
        .collect();
    Some(VerifierStats {
        program: program.to_owned(),
        processed_insns,
        insn_limit,
        max_states_per_insn: *fields.get("max_states_per_insn")?,
        total_states: *fields.get("total_states")?,
        peak_states: *fields.get("peak_states")?,
        mark_read: fields.get("mark_read").copied(),
        stack_depth,
        verification_time_us,
    })
}

fn btf_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    attr.__bindgen_anon_6.__bindgen_anon_1.btf_id = id;
    // SAFETY: a BPF_BTF_GET_FD_BY_ID request without pointers.
    unsafe { sys_bpf_fd(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr) }
}

/// # Safety
///
/// `cmd` must return a new file descriptor on success, and every pointer in `attr`
/// must be valid for the call.
unsafe fn sys_bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: the caller's promises.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stats_lines() {
        let log = "func#0 @0\nverification time 2718 usec\nstack depth 48+0+16\n\
                   processed 22316 insns (limit 1000000) max_states_per_insn 11 \
                   total_states 1180 peak_states 620 mark_read 87\n";
        let stats = parse_log("xlb", log).unwrap();
        assert_eq!(
            stats,
            VerifierStats {
                program: "xlb".into(),
                processed_insns: 22316,
                insn_limit: 1_000_000,
                max_states_per_insn: 11,
                total_states: 1180,
                peak_states: 620,
                mark_read: Some(87),
                stack_depth: vec![48, 0, 16],
                verification_time_us: Some(2718),
            }
        );
        // Kernels without the old liveness walk end the line at peak_states.
        let short = "processed 33 insns (limit 1000000) max_states_per_insn 0 \
                     total_states 2 peak_states 2\n";
        let stats = parse_log("bench_tx", short).unwrap();
        assert_eq!((stats.total_states, stats.mark_read), (2, None));
        assert!(stats.stack_depth.is_empty());
    }

    #[test]
    fn refuses_incomplete_stats() {
        assert_eq!(parse_log("x", ""), None);
        assert_eq!(parse_log("x", "processed 5 insns (limit 1000000)\n"), None);
        assert_eq!(
            parse_log(
                "x",
                "processed five insns (limit 1000000) max_states_per_insn 0 \
                 total_states 2 peak_states 2\n"
            ),
            None
        );
        assert_eq!(
            parse_log(
                "x",
                "stack depth 8+x\nprocessed 5 insns (limit 1000000) \
                 max_states_per_insn 0 total_states 2 peak_states 2\n"
            ),
            None
        );
    }
}
