//! `run-cell --pipeline-run ID` and `collect --pipeline-run ID`: in a
//! workspace a self-hosted runner keeps from one pipeline run to the next,
//! collect takes only this pipeline run's cell reports; a report an
//! earlier run left where it looks leaves its cell `missing`, naming it.

use crate::matrix::{describe, validate_junit, Matrix, CELL_FAILURES};
use crate::matrix_split::{collect, read_json, run_cell_with};
use crate::util::{failed_with, run};

const USAGE: i32 = 2;

/// The pipeline runs each suite of the report directory `report`'s
/// `junit.xml` names (its `pipeline_run` properties), the file checked
/// against the Jenkins schema.
fn junit_pipeline_runs(m: &Matrix, report: &str) -> Vec<String> {
    let path = m.path(&format!("{report}/junit.xml"));
    validate_junit(&path);
    let xml = std::fs::read_to_string(path).unwrap();
    let property = "<property name=\"pipeline_run\" value=\"";
    let runs = xml.split(property).skip(1);
    runs.map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// Runs cell `id` of `m` as pipeline run `pipeline_run`'s job: into the
/// report directory `fruix-cells/ID`, where a GitLab CI collect job on the
/// same runner finds it (`--from fruix-cells`).
fn cell_job(m: &Matrix, id: &str, pipeline_run: &str) -> std::process::Output {
    let dir = format!("fruix-cells/{id}");
    run_cell_with(m, id, "store", &dir, &["--pipeline-run", pipeline_run])
}

/// Regression: in a reused workspace, `collect --from` took the passing
/// cell report an earlier pipeline run of the same matrix file left there
/// for this run's, when this run's cell job failed before writing its
/// own: the cell was counted passed. With `--pipeline-run`, a report of
/// another run is not this run's: its cell is `missing` (exit 5), its
/// error naming the file left over; this run's report of the cell, failed,
/// is the one that counts, never refused as reported twice.
#[test]
fn a_passing_cell_report_an_earlier_pipeline_run_left_is_not_this_run_s() {
    let m = Matrix::new(
        r#"  (axes (executor "local") (make-flag "A=1" "A=2"))
  (local-slots 2)"#,
    );
    let [a1, a2] = ["local-A_1", "local-A_2"];
    // Pipeline run 101: both cells pass.
    for id in [a1, a2] {
        let out = cell_job(&m, id, "101");
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let stale = m.path(&format!("fruix-cells/{a2}/cell-{a2}.json"));
    assert_eq!(read_json(&stale)["pipeline_run"], "101");
    // Pipeline run 102: A=1 passes again; the job of A=2 dies before it
    // writes its report (the runner lost), leaving run 101's in place.
    let out = cell_job(&m, a1, "102");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let out = run(collect(&m, "report")
        .args(["--from", "fruix-cells", "--pipeline-run", "102", "--json"])
        .current_dir(m.dir.path()));
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    let report = read_json(&m.path("report/report.json"));
    // Regression: neither report.json nor --json said which pipeline run
    // was collected.
    assert_eq!(report["pipeline_run"], "102", "{report:#}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["pipeline_run"], "102", "{printed:#}");
    let cell = |id: &str| crate::matrix::cell(&report, id).clone();
    assert_eq!(cell(a1)["status"], "passed", "{report:#}");
    let missing = cell(a2);
    assert_eq!(missing["status"], "missing", "{missing:#}");
    assert_eq!(
        missing["error"],
        format!(
            "no cell report of pipeline run 102 was collected for this cell (cell-{a2}.json); reports of other pipeline runs are not collected: fruix-cells/{a2}/cell-{a2}.json (pipeline run 101)"
        ),
        "{missing:#}"
    );
    // Regression: junit.xml did not say it either.
    assert_eq!(junit_pipeline_runs(&m, "report"), ["102", "102"]);
    let junit = std::fs::read_to_string(m.path("report/junit.xml")).unwrap();
    assert!(junit.contains("(pipeline run 101)"), "{junit}");
    assert!(stale.is_file(), "a report of another run is left as it is");

    // Without --pipeline-run, collect cannot tell which run is this one:
    // reports of several runs are refused, nothing written.
    let out = run(collect(&m, "unsure")
        .args(["--from", "fruix-cells"])
        .current_dir(m.dir.path()));
    failed_with(
        "reports of two pipeline runs",
        &out,
        USAGE,
        &[
            "of pipeline run 101",
            "of pipeline run 102",
            "--pipeline-run",
        ],
    );
    assert!(!m.path("unsure").exists());

    // This run's job of A=2 fails (no result root can be made: a system
    // failure), its report elsewhere (a retried job's directory): that
    // report counts, the one left over is set aside.
    let roots = m.path("state/native-builds");
    std::fs::rename(&roots, m.path("roots-aside")).unwrap();
    std::fs::write(&roots, "").unwrap();
    let dir = format!("retried/{a2}");
    let out = run_cell_with(&m, a2, "store", &dir, &["--pipeline-run", "102"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    std::fs::remove_file(&roots).unwrap();
    std::fs::rename(m.path("roots-aside"), &roots).unwrap();
    let failed = m.path(&format!("{dir}/cell-{a2}.json"));
    assert_eq!(read_json(&failed)["cell"]["status"], "system-failure");
    let out = run(collect(&m, "report2")
        .arg(&failed)
        .args(["--from", "fruix-cells", "--pipeline-run", "102"])
        .current_dir(m.dir.path()));
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    let report = read_json(&m.path("report2/report.json"));
    let c = crate::matrix::cell(&report, a2);
    assert_eq!(c["status"], "system-failure", "{c:#}");
    assert_eq!(
        crate::matrix::cell(&report, a1)["status"],
        "passed",
        "{report:#}"
    );

    // Older reports, of no pipeline run, are still collected without
    // --pipeline-run; with it they are another run's.
    let out = run_cell_with(&m, a1, "store", "old", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let old = m.path(&format!("old/cell-{a1}.json"));
    assert!(read_json(&old).get("pipeline_run").is_none());
    let out = run(collect(&m, "report3").arg(&old));
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    let report = read_json(&m.path("report3/report.json"));
    assert_eq!(crate::matrix::cell(&report, a1)["status"], "passed");
    assert_eq!(
        report.get("pipeline_run"),
        Some(&serde_json::Value::Null),
        "no --pipeline-run: null, {report:#}"
    );
    assert!(junit_pipeline_runs(&m, "report3").is_empty());
    let out = run(collect(&m, "report4")
        .arg(&old)
        .args(["--pipeline-run", "102"]));
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    let report = read_json(&m.path("report4/report.json"));
    let c = crate::matrix::cell(&report, a1);
    assert_eq!(c["status"], "missing", "{c:#}");
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{} (no pipeline run)", old.display())),
        "{c:#}"
    );
}

/// A pipeline run id is checked where it is given: 1 to 128 letters,
/// digits, `.`, `_` or `-`, starting with a letter or digit (exit 2).
#[test]
fn a_pipeline_run_id_that_is_no_word_is_refused() {
    let m = Matrix::new(r#"  (axes (executor "local"))"#);
    let long = "1".repeat(129);
    for bad in ["", "a b", "-1", "run/1", "r\u{1b}[31m", long.as_str()] {
        let given = format!("--pipeline-run={bad}");
        let out = run_cell_with(&m, "local", "store", "jobs", &[&given]);
        failed_with(bad, &out, USAGE, &["--pipeline-run", "no pipeline run id"]);
        let out = run(collect(&m, "report")
            .arg(m.path("jobs/cell-local.json"))
            .arg(&given));
        failed_with(bad, &out, USAGE, &["--pipeline-run", "no pipeline run id"]);
    }
    assert!(!m.path("jobs").exists() && !m.path("report").exists());
    let ok = "1".repeat(128);
    let out = run_cell_with(&m, "local", "store", "jobs", &["--pipeline-run", &ok]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
