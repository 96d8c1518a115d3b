//! Packet fixture rows for BPF_PROG_TEST_RUN tests, in the shape of Katran's fixture
//! vectors (description, input frame, verdict, output frame or "unchanged", counters),
//! and the loop that runs a table of them through the balancer program.

use lb_common::Stat;

use crate::dataplane::TestDataplane;

/// One fixture row.
#[derive(Clone, Debug)]
pub struct Case {
    /// Names the row in every assertion message, so a failure says which row it was.
    pub description: String,
    pub input: Vec<u8>,
    pub verdict: u32,
    /// `None`: the frame must come out byte for byte unchanged.
    pub output: Option<Vec<u8>>,
    /// Global counters (`XLB_STATS`) that must move by exactly one packet of the input's
    /// length; every other counter must not move.
    pub counted: Vec<Stat>,
}

impl Case {
    /// A row whose frame comes out as `output`.
    pub fn new(
        description: impl Into<String>,
        input: Vec<u8>,
        verdict: u32,
        output: Vec<u8>,
        counted: &[Stat],
    ) -> Self {
        Self {
            description: description.into(),
            input,
            verdict,
            output: Some(output),
            counted: counted.to_vec(),
        }
    }

    /// A row whose frame must come out unchanged.
    pub fn unchanged(
        description: impl Into<String>,
        input: Vec<u8>,
        verdict: u32,
        counted: &[Stat],
    ) -> Self {
        Self {
            description: description.into(),
            input,
            verdict,
            output: None,
            counted: counted.to_vec(),
        }
    }
}

// Counter sets that many rows share.
/// A new flow forwarded back out (XDP_TX).
pub const NEW_FLOW_TX: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::ConnMiss];
/// A flow's second packet, which confirms the entry its first one left in the
/// unconfirmed table (XDP_TX).
pub const CONFIRMED_TX: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::ConnHit, Stat::ConnConfirmed];
/// An established flow forwarded back out (XDP_TX).
pub const ESTABLISHED_TX: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::ConnHit];
/// Passed to the stack as not ours.
pub const NOT_VIP: &[Stat] = &[Stat::Rx, Stat::Pass, Stat::NotVip];

impl TestDataplane {
    /// Runs the rows in order (a row may rely on the connection entries earlier rows
    /// made) and checks each one ([`TestDataplane::check`]).
    #[track_caller]
    pub fn run_cases(&mut self, cases: impl IntoIterator<Item = Case>) {
        for case in cases {
            self.run_case(&case);
        }
    }

    /// Runs and checks one row.
    #[track_caller]
    pub fn run_case(&mut self, case: &Case) {
        self.run_case_on(lb_common::programs::BALANCER, case);
    }

    /// Runs and checks one row through the program `name` (e.g. `xlb_decap`).
    #[track_caller]
    pub fn run_case_on(&mut self, name: &'static str, case: &Case) {
        let output = case.output.as_deref().unwrap_or(&case.input);
        self.check_program(
            name,
            &case.description,
            &case.input,
            case.verdict,
            output,
            &case.counted,
        );
    }
}
