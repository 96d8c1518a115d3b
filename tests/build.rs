//! Builds the benchmark floors (`tests/ebpf`, `xlb-bench-ebpf`) for `bpfel-unknown-none`
//! with the data plane's recipe (`xlb-ebpf-build`); `testbed::bench` embeds the object.

fn main() -> anyhow::Result<()> {
    let root = xlb_ebpf_build::workspace_root(1)?;
    xlb_ebpf_build::build(
        &root,
        xlb_ebpf_build::EbpfCrate {
            package: "xlb-bench-ebpf",
            dir: "tests/ebpf",
        },
    )?;
    Ok(())
}
