//! A report with one cell of each status and one agreement held and one
//! broken, shared by the report tests.

use std::collections::BTreeMap;
use std::path::Path;

use super::{AgreementReport, AttemptReport, CellReport, DifferenceReport, Report, SetAside};
use crate::agreement::{FileDifference, FileState};
use crate::runner::{CellStatus, PromotedArtifact};

fn attempt(machine: &str, status: CellStatus, error: Option<&str>) -> AttemptReport {
    AttemptReport {
        attempt: 1,
        machine: machine.into(),
        started_at: 1775420084.0,
        finished_at: 1775420086.5,
        status,
        error: error.map(Into::into),
    }
}

/// A cell `EXECUTOR-KERNCONF` with `status` and nothing else.
pub fn cell(id: &str, status: CellStatus, logs: &Path) -> CellReport {
    let (executor, kernconf) = id.split_once('-').unwrap();
    CellReport {
        id: id.into(),
        executor: executor.into(),
        kernconf: kernconf.into(),
        target_arch: "amd64".into(),
        make_flag: None,
        machine: None,
        status,
        duration_s: 2.5,
        started_at: Some(1775420084.0),
        finished_at: Some(1775420086.5),
        attempts: Vec::new(),
        result_store: None,
        artifacts: BTreeMap::new(),
        signed_by: None,
        signatures_not_recorded: Vec::new(),
        log: Some(logs.join(format!("{id}.log"))),
        error: None,
    }
}

fn file(size: u64, sha256: &str) -> FileState {
    FileState {
        kind: "file",
        size: Some(size),
        sha256: Some(sha256.into()),
        mode: Some("0444".into()),
        link: None,
    }
}

/// The report of a run of four cells, their logs in `logs`:
/// - `local-GENERIC` passed, with a world artifact;
/// - `local-MINIMAL` failed to build; its log has 33 lines, the last one
///   `error: deliberate failure`;
/// - `remote-GENERIC` failed twice on m1 as a system failure;
/// - `remote-MINIMAL` never started.
///
/// The kernel agrees across local-GENERIC and remote-GENERIC; the world
/// does not, differing in `./stamp`.
pub fn report(logs: &Path) -> Report {
    let mut passed = cell("local-GENERIC", CellStatus::Passed, logs);
    passed.machine = Some("local".into());
    passed.attempts = vec![attempt("local", CellStatus::Passed, None)];
    passed.result_store = Some("/store/bbb-result".into());
    passed.artifacts.insert(
        "world".into(),
        PromotedArtifact {
            store_path: "/store/aaa-world".into(),
            tree_signature: "sha256:w1".into(),
        },
    );
    std::fs::write(passed.log.as_ref().unwrap(), "==> buildworld\n").unwrap();

    let error = "build step `buildworld` failed";
    let mut failed = cell("local-MINIMAL", CellStatus::BuildFailure, logs);
    failed.machine = Some("local".into());
    failed.attempts = vec![attempt("local", CellStatus::BuildFailure, Some(error))];
    failed.error = Some(error.into());
    let mut log: String = (1..=32).map(|n| format!("line {n}\n")).collect();
    log.push_str("error: deliberate failure\n");
    std::fs::write(failed.log.as_ref().unwrap(), log).unwrap();

    let error = "system failure: connection lost";
    let mut system = cell("remote-GENERIC", CellStatus::SystemFailure, logs);
    system.machine = Some("m1".into());
    system.attempts = vec![
        attempt("m1", CellStatus::SystemFailure, Some(error)),
        AttemptReport {
            attempt: 2,
            ..attempt("m1", CellStatus::SystemFailure, Some(error))
        },
    ];
    system.error = Some(error.into());

    let mut cancelled = cell("remote-MINIMAL", CellStatus::Cancelled, logs);
    cancelled.error = Some("never started".into());
    cancelled.log = None;
    cancelled.started_at = None;
    cancelled.finished_at = None;
    cancelled.duration_s = 0.0;

    let pair = || ["local-GENERIC".to_string(), "remote-GENERIC".to_string()];
    let signatures = |a: &str, b: &str| {
        BTreeMap::from([
            ("local-GENERIC".to_string(), Some(a.to_string())),
            ("remote-GENERIC".to_string(), Some(b.to_string())),
        ])
    };
    Report {
        matrix: "/ci/matrix.scm".into(),
        started_at: 1775420084.0,
        duration_s: 61.25,
        max_parallel: Some(4),
        cancelled: false,
        time_limit_s: None,
        time_limit_reached: false,
        machines_file: Some("/ci/machines.scm".into()),
        pipeline_run: None,
        cells: vec![passed, failed, system, cancelled],
        agreement: vec![
            AgreementReport {
                artifact: "kernel".into(),
                cells: pair().into(),
                agree: true,
                signatures: signatures("sha256:k", "sha256:k"),
                differences: Vec::new(),
                not_compared: Vec::new(),
                diffoscope: Vec::new(),
            },
            AgreementReport {
                artifact: "world".into(),
                cells: pair().into(),
                agree: false,
                signatures: signatures("sha256:w1", "sha256:w2"),
                differences: vec![DifferenceReport {
                    cells: pair(),
                    difference: FileDifference {
                        path: "./stamp".into(),
                        change: "modified",
                        first: Some(file(3, "aa")),
                        second: Some(file(5, "bb")),
                    },
                }],
                not_compared: Vec::new(),
                diffoscope: Vec::new(),
            },
        ],
        machines_set_aside: vec![SetAside {
            machine: "m1".into(),
            reason: "unreachable after attempt 2 of cell remote-GENERIC".into(),
        }],
    }
}
