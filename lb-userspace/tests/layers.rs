//! The layering rule of docs/architecture.md, checked on the source tree: every
//! `crate::…` (and, in the binary, `lb_userspace::…`) path names a layer below the
//! file's own, and only the kernel port (`src/dataplane/aya/`) touches `aya::Ebpf`.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// Layers, bottom to top; a layer may import only layers of a lower rank (and itself).
const LAYERS: &[(&str, u8)] = &[
    ("dataplane", 0),
    ("config", 1),
    ("balancer", 2),
    ("health", 2),
    ("nexthop", 2),
    ("vrrp", 2),
    ("supervisor", 3),
    ("import", 3),
    ("edges", 4),
    ("bin", 5),
];

fn rank(layer: &str) -> Option<u8> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layers `text` names after `prefix` (`crate::config::…` → `config`), including
/// the items of a `use prefix{a::…, b::…}` group.
fn named_layers(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first segment of each top-level item of the group.
            let (mut depth, mut first, mut word) = (0u32, true, String::new());
            for c in group.chars() {
                if c.is_alphanumeric() || c == '_' {
                    if depth == 0 && first {
                        word.push(c);
                    }
                    continue;
                }
                if !word.is_empty() {
                    out.insert(std::mem::take(&mut word));
                    first = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => first = true,
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// A source file without its comment lines (doc links are not imports).
fn code(file: &Path) -> String {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_layer_imports_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let layer = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if layer == "lib" {
            continue;
        }
        let Some(own) = rank(&layer) else {
            wrong.push(format!("{}: not in any layer", rel.display()));
            continue;
        };
        let text = code(file);
        let prefix = if layer == "bin" {
            "lb_userspace::"
        } else {
            "crate::"
        };
        for named in named_layers(&text, prefix) {
            match rank(&named) {
                Some(r) if named == layer || r < own => {}
                Some(_) => wrong.push(format!("{} ({layer}) imports {named}", rel.display())),
                // Not a layer (a crate-root item such as a macro): nothing to check.
                None => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn only_the_kernel_port_sees_aya_ebpf() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let outside: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("dataplane/aya")))
        .filter(|f| {
            let text = code(f);
            text.contains("aya::Ebpf") || text.contains("Ebpf,") || text.contains("&Ebpf")
        })
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "aya::Ebpf used outside src/dataplane/aya: {outside:?}"
    );
}

#[test]
fn the_checker_reads_groups_and_paths() {
    let text = "use crate::{config::{a, b}, dataplane::addr::x, self};\nlet x = crate::health::y;";
    let got = named_layers(text, "crate::");
    let want: BTreeSet<String> = ["config", "dataplane", "health", "self"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(got, want);
}
