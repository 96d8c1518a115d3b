//! `xlb-fuzz`: differential fuzzing of the balancer program against the reference model
//! (`testbed::model`), run by `cargo xtask fuzz-datapath --packets N [--seed S]`. Needs
//! root (loads the XDP object and uses BPF_PROG_TEST_RUN). Prints packets/s, every
//! disagreement (also saved under `--save-dir`, default target/fuzz) and a per-class
//! summary; exits 1 when the program and the model disagreed on any packet.

use std::path::PathBuf;

use testbed::fuzz;

fn main() {
    let mut opts = fuzz::Options {
        packets: 100_000,
        seed: 1,
        save_dir: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/fuzz"
        ))),
        print_limit: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--packets" => {
                opts.packets = value()
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("--packets: {e}")));
            }
            "--seed" => {
                opts.seed = value()
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("--seed: {e}")));
            }
            "--save-dir" => opts.save_dir = Some(PathBuf::from(value())),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    testbed::require_root();
    println!(
        "fuzzing the data plane: {} packets, seed {}",
        opts.packets, opts.seed
    );
    let report = fuzz::run(&opts);
    print!("{}", report.summary());
    if !report.disagreements.is_empty() {
        if let Some(dir) = &opts.save_dir {
            println!("disagreements saved under {}", dir.display());
        }
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("xlb-fuzz: {problem}");
    }
    eprintln!("usage: xlb-fuzz [--packets N] [--seed S] [--save-dir DIR]");
    std::process::exit(2);
}
