//! Builds the XDP object (`lb-ebpf`) for `bpfel-unknown-none` so that every build of `xlb`
//! embeds a data plane compiled from the same sources (the recipe: `xlb-ebpf-build`;
//! docs/toolchain.md says why it is not aya-build: it cannot share one BPF target dir
//! between builds).

fn main() -> anyhow::Result<()> {
    let root = xlb_ebpf_build::workspace_root(1)?;
    xlb_ebpf_build::build(
        &root,
        xlb_ebpf_build::EbpfCrate {
            package: "lb-ebpf",
            dir: "lb-ebpf",
        },
    )?;
    Ok(())
}
