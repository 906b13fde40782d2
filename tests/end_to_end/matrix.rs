//! `fruix matrix` end to end with executors that build on this host: the
//! built-in `local` and the external `mini-sh` (POSIX sh scripts, from
//! tests/fixtures/external), over the miniature FreeBSD tree, with real
//! bmake, cc, promotion, and the JUnit report checked by `xmllint` against
//! the Jenkins JUnit schema.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use fruix_core::testing::conformance::processes_mentioning;

use crate::util::{
    element_with, failed_with, fixture_source, fruix, listing, require_tool, run, run_ok,
    run_with_deadline, store_and_state, strings_of, wait_until,
};

/// The exit statuses of `fruix matrix run`.
pub const CELL_FAILURES: i32 = 5;
pub const DIVERGENCE: i32 = 6;

/// A matrix run in a temporary directory.
pub struct Matrix {
    pub dir: tempfile::TempDir,
}

/// `fruix store roots --json` of the matrix's store and state directory.
fn store_roots(m: &Matrix) -> Value {
    let roots = run_ok(
        fruix()
            .args(["store", "roots", "--json", "--store"])
            .arg(m.path("store"))
            .arg("--state-dir")
            .arg(m.path("state")),
    );
    serde_json::from_str(&roots).unwrap()
}

impl Matrix {
    /// A matrix whose file holds `body` after the common fields (source,
    /// -DNO_ROOT, jobs, source-date-epoch).
    pub fn new(body: &str) -> Matrix {
        require_tool("bmake", "bmake");
        require_tool("cc", "gcc");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("matrix.scm"),
            format!(
                "(fruix-matrix\n  (format-version 1)\n  (source {:?})\n  (make-flags \"-DNO_ROOT\")\n  (jobs 1)\n  (source-date-epoch 1775420084)\n{body})\n",
                fixture_source().display().to_string()
            ),
        )
        .unwrap();
        Matrix { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fruix matrix run` with the external executors of the fixtures.
    pub fn command(&self, extra: &[&str]) -> Command {
        self.command_reporting_to("report", extra)
    }

    /// [`Matrix::command`] with the reports in directory `report`.
    pub fn command_reporting_to(&self, report: &str, extra: &[&str]) -> Command {
        let mut cmd = fruix();
        cmd.arg("--executors-file")
            .arg(external_executors())
            .args(["matrix", "run"])
            .arg(self.path("matrix.scm"))
            .args(store_and_state(self.dir.path()))
            .arg("--report-dir")
            .arg(self.path(report))
            .args(extra);
        cmd
    }

    /// Starts [`Matrix::command`], its stdout and stderr piped.
    pub fn spawn(&self) -> Child {
        self.command(&[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn run(&self, extra: &[&str]) -> Output {
        run(&mut self.command(extra))
    }

    /// `fruix` (with any global options) `matrix plan --json` of the
    /// matrix, which must succeed: the plan.
    pub fn plan(&self, fruix: &mut Command) -> Value {
        let out = run(fruix
            .args(["matrix", "plan", "--json"])
            .arg(self.path("matrix.scm")));
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn report(&self) -> Value {
        let text = std::fs::read_to_string(self.path("report/report.json"))
            .expect("the run wrote report.json");
        serde_json::from_str(&text).unwrap()
    }

    /// Checks junit.xml against the Jenkins JUnit schema and returns it.
    pub fn junit(&self) -> String {
        let xml = self.path("report/junit.xml");
        validate_junit(&xml);
        std::fs::read_to_string(xml).unwrap()
    }
}

/// The executors file of the external executor fixtures.
pub fn external_executors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/external/executors.scm")
}

/// Validates `xml` with `xmllint --schema` against the Jenkins JUnit schema.
pub fn validate_junit(xml: &Path) {
    require_tool("xmllint", "libxml2-utils");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/jenkins-junit.xsd");
    let out = run(Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema)
        .arg(xml));
    assert!(
        out.status.success(),
        "{} does not validate against the Jenkins JUnit schema:\n{}\n{}",
        xml.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(xml).unwrap_or_default()
    );
}

/// Whether `xml` has a `<tag ...>` start tag with `attribute`
/// (`name="value"`), whatever the order of its attributes.
pub fn has_element(xml: &str, tag: &str, attribute: &str) -> bool {
    xml.split(&format!("<{tag} ")).skip(1).any(|rest| {
        rest.split('>')
            .next()
            .is_some_and(|a| a.contains(attribute))
    })
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The cell of `report` with id `id`.
pub fn cell<'a>(report: &'a Value, id: &str) -> &'a Value {
    element_with(&report["cells"], "id", id)
}

/// The most attempts running at once, per machine ("local" included) and in
/// all, from the recorded start and end times.
pub fn peak_concurrency(report: &Value) -> (usize, std::collections::BTreeMap<String, usize>) {
    let mut points: Vec<(f64, i32, String)> = Vec::new();
    for c in report["cells"].as_array().unwrap() {
        for a in c["attempts"].as_array().unwrap() {
            let machine = a["machine"].as_str().unwrap().to_string();
            points.push((a["started_at"].as_f64().unwrap(), 1, machine.clone()));
            points.push((a["finished_at"].as_f64().unwrap(), -1, machine));
        }
    }
    // Ends before starts at the same instant.
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak) = (0i32, 0i32);
    let mut per: std::collections::BTreeMap<String, (i32, i32)> = Default::default();
    for (_, delta, machine) in points {
        now += delta;
        peak = peak.max(now);
        let m = per.entry(machine).or_default();
        m.0 += delta;
        m.1 = m.1.max(m.0);
    }
    (
        peak as usize,
        per.into_iter().map(|(k, (_, p))| (k, p as usize)).collect(),
    )
}

#[test]
fn local_and_external_executors_agree_over_two_kernconfs() {
    let m = Matrix::new(
        r#"  (axes (executor "local" "mini-sh") (kernconf "GENERIC" "MINIMAL"))
  (local-slots 4)
  (max-parallel 2)"#,
    );
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = m.report();
    let ids = strings_of(&report["cells"], "id");
    assert_eq!(
        ids,
        [
            "local-GENERIC",
            "local-MINIMAL",
            "mini-sh-GENERIC",
            "mini-sh-MINIMAL"
        ]
    );
    for id in ids {
        let c = cell(&report, id);
        assert_eq!(c["status"], "passed", "{c:#}");
        assert_eq!(c["machine"], "local");
        assert!(c["duration_s"].as_f64().unwrap() > 0.0);
        assert!(Path::new(c["result_store"].as_str().unwrap()).is_dir());
        assert!(Path::new(c["log"].as_str().unwrap()).is_file());
        // REPORT/results/CELL links the bundle: a root while the report stays.
        assert_eq!(
            std::fs::read_link(m.path(&format!("report/results/{id}"))).unwrap(),
            Path::new(c["result_store"].as_str().unwrap())
        );
        for artifact in ["world", "kernel", "headers", "bootloader"] {
            let a = &c["artifacts"][artifact];
            assert!(
                Path::new(a["store_path"].as_str().unwrap()).is_dir(),
                "{c:#}"
            );
            assert!(a["tree_signature"].as_str().unwrap().starts_with("sha256:"));
        }
    }
    let roots = store_roots(&m);
    assert_eq!(roots.as_array().unwrap().len(), 4, "{roots}");
    // Every local cell built the one source object the matrix's directory
    // was added as.
    let sources: Vec<String> = std::fs::read_dir(m.path("store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-freebsd-source-default"))
        .collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    for id in ["local-GENERIC", "local-MINIMAL"] {
        let bundle = cell(&report, id)["result_store"]
            .as_str()
            .unwrap()
            .to_string();
        let metadata =
            std::fs::read_to_string(Path::new(&bundle).join(".fruix-native-build-result.scm"))
                .unwrap();
        assert!(metadata.contains(&sources[0]), "{id}: {metadata}");
    }
    // 2 groups (one per kernconf) x 4 artifacts, all agreeing.
    let agreement = report["agreement"].as_array().unwrap();
    assert_eq!(agreement.len(), 8, "{report:#}");
    assert!(agreement
        .iter()
        .all(|a| a["agree"] == true && a["differences"] == serde_json::json!([])));
    assert_eq!(
        agreement[0]["cells"],
        serde_json::json!(["local-GENERIC", "mini-sh-GENERIC"])
    );
    // max-parallel 2 held, and was used.
    let (peak, _) = peak_concurrency(&report);
    assert_eq!(peak, 2, "{report:#}");
    let junit = m.junit();
    assert_eq!(junit.matches("<testcase name=\"").count(), 4 + 8);
    assert!(junit.contains("<testcase name=\"mini-sh-MINIMAL\" classname=\"fruix.matrix.mini-sh\""));
    assert!(!junit.contains("<failure") && !junit.contains("<error"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CELL") && stdout.contains("mini-sh-GENERIC") && stdout.contains("passed"),
        "{stdout}"
    );
}

/// A `diffoscope` stand-in that records what it was asked to compare.
fn fake_diffoscope(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("diffoscope");
    std::fs::write(&script, "#!/bin/sh\necho \"compared $1 $2\"\nexit 1\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn nondeterminism_is_reported_as_divergence_naming_the_file() {
    let m = Matrix::new(
        r#"  (axes (executor "local" "mini-sh") (make-flag "NONDETERMINISTIC=yes"))
  (local-slots 2)"#,
    );
    let bin = fake_diffoscope(m.dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = run(m.command(&["--diff", "diffoscope"]).env("PATH", &path));
    assert_eq!(out.status.code(), Some(DIVERGENCE), "{}", describe(&out));
    let report = m.report();
    let world = element_with(&report["agreement"], "artifact", "world");
    assert_eq!(world["agree"], false);
    let differences = world["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1, "{world:#}");
    let d = &differences[0];
    assert_eq!(d["path"], "./usr/share/misc/build-stamp");
    assert_eq!(d["change"], "modified");
    assert_eq!(d["cells"], serde_json::json!(["local", "mini-sh"]));
    assert_ne!(d["first"]["sha256"], d["second"]["sha256"]);
    assert_eq!(d["first"]["mode"], "0444");
    assert!(d["first"]["size"].as_u64().is_some());
    let kernel = element_with(&report["agreement"], "artifact", "kernel");
    assert_eq!(kernel["agree"], true, "only the world is non-deterministic");
    // diffoscope ran on the differing file of both store objects.
    let diffoscope = &world["diffoscope"][0];
    assert_eq!(diffoscope["status"], "differences found");
    let output = std::fs::read_to_string(diffoscope["output"].as_str().unwrap()).unwrap();
    assert!(
        output.starts_with("compared /")
            && output.matches("usr/share/misc/build-stamp").count() == 2,
        "{output}"
    );
    let junit = m.junit();
    assert!(
        has_element(&junit, "failure", "type=\"divergence\""),
        "{junit}"
    );
    assert!(junit.contains("./usr/share/misc/build-stamp"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DIVERGENCE: world") && stdout.contains("build-stamp"),
        "{stdout}"
    );

    // Without diffoscope installed, the run says so and still lists the file.
    let again = run(m
        .command_reporting_to("report2", &["--diff", "diffoscope"])
        .env("PATH", "/usr/bin:/bin"));
    assert_eq!(
        again.status.code(),
        Some(DIVERGENCE),
        "{}",
        describe(&again)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("diffoscope is not installed"));

    // Regression: a `diffoscope` in the report directory that is a symlink
    // (unpacked CI artifacts, say) was followed, writing its output
    // elsewhere.
    let victim = m.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(m.path("report3")).unwrap();
    std::os::unix::fs::symlink(&victim, m.path("report3/diffoscope")).unwrap();
    let linked = run(m
        .command_reporting_to("report3", &["--diff", "diffoscope"])
        .env("PATH", &path));
    assert_eq!(
        linked.status.code(),
        Some(DIVERGENCE),
        "{}",
        describe(&linked)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(m.path("report3/report.json")).unwrap())
            .unwrap();
    let world = element_with(&report["agreement"], "artifact", "world");
    let diffoscope = &world["diffoscope"][0];
    assert_eq!(diffoscope["output"], Value::Null, "{diffoscope:#}");
    assert!(
        diffoscope["status"]
            .as_str()
            .unwrap()
            .contains("is a symlink"),
        "{diffoscope:#}"
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
}

#[test]
fn fail_fast_stops_the_matrix_and_failures_carry_the_log_tail() {
    let m = Matrix::new(
        r#"  (axes (executor "local") (make-flag "FAIL_STEP=buildworld" "FAIL_STEP=none-yet"))
  (include ((executor "mini-sh-system-failure")))
  (fail-fast #t)
  (local-slots 1)"#,
    );
    // FAIL_STEP=none-yet is refused by the fixture's Makefile (a build
    // failure too); with fail-fast and one slot it never starts.
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    let report = m.report();
    let failed = cell(&report, "local-FAIL_STEP_buildworld");
    assert_eq!(failed["status"], "build-failure");
    assert!(
        failed["error"].as_str().unwrap().contains("buildworld"),
        "{failed:#}"
    );
    for id in ["local-FAIL_STEP_none-yet", "mini-sh-system-failure"] {
        let c = cell(&report, id);
        assert_eq!(c["status"], "cancelled", "{c:#}");
        assert_eq!(c["attempts"], serde_json::json!([]));
        assert_eq!(c["log"], serde_json::Value::Null, "it has no log: {c:#}");
        assert_eq!(
            c["error"], "never started: fail-fast: cell local-FAIL_STEP_buildworld did not pass",
            "{c:#}"
        );
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "fruix: cell local-FAIL_STEP_buildworld did not pass, and the matrix fails fast"
        ),
        "{}",
        describe(&out)
    );
    // The table points only to logs that exist.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("log: "))
        .collect();
    assert_eq!(logs.len(), 1, "{stdout}");
    assert!(Path::new(logs[0]).is_file(), "{stdout}");
    let junit = m.junit();
    assert!(
        has_element(&junit, "failure", "type=\"build-failure\""),
        "{junit}"
    );
    assert!(
        junit.contains("deliberate failure"),
        "the failure carries the log tail: {junit}"
    );
    assert_eq!(junit.matches("<skipped>").count(), 2);
}

#[test]
fn system_failures_are_retried_and_reported_as_errors() {
    let m = Matrix::new(
        r#"  (axes (executor "mini-sh-system-failure"))
  (retries 2)"#,
    );
    let out = m.run(&["--json"]);
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    // With --json, stdout is the report, with where its files are.
    let printed: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let report = m.report();
    assert_eq!(printed["cells"], report["cells"]);
    assert_eq!(
        printed["report_json"].as_str(),
        Some(m.path("report/report.json").to_str().unwrap())
    );
    let c = cell(&report, "mini-sh-system-failure");
    assert_eq!(c["status"], "system-failure");
    assert_eq!(c["attempts"].as_array().unwrap().len(), 3, "{c:#}");
    let junit = m.junit();
    assert!(
        has_element(&junit, "error", "type=\"system-failure\""),
        "{junit}"
    );
}

#[test]
fn matrix_file_errors_are_refused_before_anything_runs() {
    let cases: [(&str, &[&str]); 4] = [
        (
            r#"  (axes (executor "local") (kernconf "GENERIC" "GENERIC"))"#,
            &["axes.kernconf", "(line 7)", "twice"],
        ),
        (
            r#"  (axes (executor "lokal"))"#,
            &["unknown executor `lokal`", "local"],
        ),
        (
            r#"  (axes (executor "host-initiated"))"#,
            &["machines file"],
        ),
        (
            r#"  (axes (executor "local")) (include ((executor "local") (machine "builder-1")))"#,
            &["builds on this host"],
        ),
    ];
    for (body, expected) in cases {
        let m = Matrix::new(body);
        failed_with(body, &m.run(&[]), 2, expected);
        assert!(!m.path("store").exists() && !m.path("report").exists());
    }
}

#[test]
fn plan_lists_cells_and_agreement_groups_without_running() {
    let m = Matrix::new(
        r#"  (axes (executor "local" "mini-sh") (kernconf "GENERIC" "MINIMAL"))
  (exclude ((executor "local") (kernconf "MINIMAL")))"#,
    );
    let plan = m.plan(fruix().arg("--executors-file").arg(external_executors()));
    assert_eq!(
        strings_of(&plan["cells"], "id"),
        ["local-GENERIC", "mini-sh-GENERIC", "mini-sh-MINIMAL"]
    );
    assert_eq!(
        plan["must_agree"],
        serde_json::json!([["local-GENERIC", "mini-sh-GENERIC"]])
    );
    assert_eq!(plan["fail_fast"], true);
    assert_eq!(plan["jobs"], 1, "the file's");
    assert!(!m.path("state").exists());
    // Without the file's `jobs`, each machine that builds uses its CPUs.
    let file = m.path("no-jobs.scm");
    let text = std::fs::read_to_string(m.path("matrix.scm")).unwrap();
    std::fs::write(&file, text.replace("  (jobs 1)\n", "")).unwrap();
    let plan_of = |json: &[&str]| {
        let mut cmd = fruix();
        cmd.arg("--executors-file").arg(external_executors());
        run_ok(cmd.args(["matrix", "plan"]).args(json).arg(&file))
    };
    let out = plan_of(&[]);
    assert!(
        out.ends_with("; retries 1; jobs the CPUs of each machine that builds\n"),
        "{out}"
    );
    let plan: Value = serde_json::from_str(&plan_of(&["--json"])).unwrap();
    assert_eq!(plan["jobs"], Value::Null, "{plan:#}");
}

/// Regression: a matrix's `freebsd-version` reached its cells' metadata but
/// not its source object, which took `newvers.sh`'s version (and a source
/// tree without `newvers.sh` could not be added at all), unlike `fruix build
/// --freebsd-version`.
#[test]
fn a_matrix_s_freebsd_version_is_its_source_object_s_too() {
    let m = Matrix::new("  (freebsd-version \"14.3-RELEASE\")\n  (axes (executor \"local\"))");
    let out = m.run(&[]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(fruix()
        .args(["store", "list", "--json", "--store"])
        .arg(m.path("store")));
    assert!(out.status.success(), "{}", describe(&out));
    let objects: Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<(&str, &str)> = objects
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| Some((o["kind"].as_str()?, o["freebsd_version"].as_str()?)))
        .collect();
    assert!(
        versions.iter().any(|(kind, _)| *kind == "source"),
        "{objects:#}"
    );
    assert!(
        versions.iter().any(|(kind, _)| *kind == "artifact"),
        "{objects:#}"
    );
    assert!(
        versions.iter().all(|(_, v)| *v == "14.3-RELEASE"),
        "{versions:?}"
    );
}

/// Regression: the S-expression reader capped a whole file at 4096 data, so
/// a machines file of some 150 fully described machines was refused.
#[test]
fn a_pool_of_fifteen_hundred_machines_is_read() {
    let m = Matrix::new(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"host-initiated\") (machine \"m-1\" \"m-1500\"))",
    );
    // The plan checks that the keys of the machines its cells use open.
    let key = m.path("id_ed25519");
    std::fs::write(&key, "a key\n").unwrap();
    let machine = |i: usize| {
        format!(
            "  (machine (name \"m-{i}\") (host \"10.0.{}.{}\") (port 22) (user \"root\")\n    (private-key {:?}) (host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA{i:0>42}\")\n    (systems \"amd64\") (parallel-builds 2) (speed 1.0) (state-dir \"/var/lib/fruix\")\n    (helper \"/usr/local/bin/fruix\") (store \"/frx/store\"))\n",
            i / 250,
            i % 250,
            key.display().to_string()
        )
    };
    let machines: String = (1..=1500).map(machine).collect();
    std::fs::write(
        m.path("machines.scm"),
        format!("(fruix-machines\n{machines})\n"),
    )
    .unwrap();
    let plan = m.plan(&mut fruix());
    assert_eq!(
        strings_of(&plan["cells"], "machine"),
        ["m-1", "m-1500"],
        "{plan:#}"
    );
}

#[test]
fn ctrl_c_cancels_every_cell_and_still_writes_the_reports() {
    let m = Matrix::new(
        r#"  (axes (executor "local") (kernconf "GENERIC" "MINIMAL") (make-flag "HOLD_BUILD=yes"))
  (local-slots 2)"#,
    );
    let child = m.spawn();
    // Wait until both cells' builds wait to be interrupted, then interrupt.
    let holding = |id: &str| {
        std::fs::read_to_string(m.path(&format!("report/logs/{id}.log")))
            .is_ok_and(|log| log.contains("HOLD_BUILD=yes: waiting to be interrupted"))
    };
    let [generic, minimal] = ["local-GENERIC", "local-MINIMAL"];
    wait_until("both cells build", || holding(generic) && holding(minimal));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("==> {generic}: cancelled")) && !stderr.contains("(cancelled)"),
        "a cancellation is said once: {stderr}"
    );
    let report = m.report();
    assert_eq!(report["cancelled"], true);
    for id in [generic, minimal] {
        let c = cell(&report, id);
        assert_eq!(c["status"], "cancelled", "{c:#}");
        assert_eq!(c["attempts"].as_array().unwrap().len(), 1);
    }
    m.junit();
    // Cleanup ran: only the two result roots are left, both unfinished.
    let roots: Vec<PathBuf> = std::fs::read_dir(m.path("state/native-builds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(roots.len(), 2, "{roots:?}");
    assert!(
        roots.iter().all(|r| r.join(".fruix-incomplete").exists()),
        "{roots:?}"
    );
}

/// A cell whose build is silent for the matrix's `max-silent-time` is
/// stopped and fails as a system failure, retried like one; the report
/// says the limit passed, and the matrix exits 5.
#[test]
fn a_cell_silent_past_the_matrix_s_max_silent_time_is_a_system_failure() {
    let m = Matrix::new(
        r#"  (axes (executor "local") (make-flag "HOLD_BUILD=yes"))
  (max-silent-time 3) (retries 1)"#,
    );
    let out = run_with_deadline(&mut m.command(&[]), std::time::Duration::from_secs(180));
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    let report = m.report();
    let c = cell(&report, "local");
    assert_eq!(c["status"], "system-failure", "{c:#}");
    let attempts = c["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "retried once: {c:#}");
    for attempt in attempts {
        let error = attempt["error"].as_str().unwrap();
        assert!(
            error.contains("waiting for output from the build timed out after 3s; it was stopped"),
            "{error}"
        );
    }
    let left = processes_mentioning(&m.path("state"));
    assert!(left.is_empty(), "processes still running: {left:?}");
}

/// `--time-limit` stops the whole run: the cell that was building is
/// cancelled and cleaned up, the cell waiting for the one slot never
/// starts, each says why, and the reports are still written (exit 5).
#[test]
fn the_run_s_time_limit_stops_it_and_its_cells_say_why() {
    let m = Matrix::new(
        r#"  (axes (executor "local") (kernconf "GENERIC" "MINIMAL") (make-flag "HOLD_BUILD=yes"))
  (local-slots 1)"#,
    );
    let out = run_with_deadline(
        &mut m.command(&["--time-limit", "5s"]),
        std::time::Duration::from_secs(180),
    );
    let reached = "the run's time limit of 5s was reached";
    let stderr = failed_with(
        "the time limit",
        &out,
        CELL_FAILURES,
        &[&format!(
            "fruix: {reached}: cancelling its cells and cleaning up"
        )],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("stopped: {reached}\n")),
        "{stdout}"
    );
    let report = m.report();
    assert_eq!(report["cancelled"], false, "{report:#}");
    assert_eq!(report["time_limit_s"], 5.0, "{report:#}");
    assert_eq!(report["time_limit_reached"], true, "{report:#}");
    let mut started = 0;
    for id in ["local-GENERIC", "local-MINIMAL"] {
        let c = cell(&report, id);
        assert_eq!(c["status"], "cancelled", "{c:#}");
        // Whether the first cell started before the limit depends on how
        // fast this machine added the source; each says which it was.
        let attempts = c["attempts"].as_array().unwrap().len();
        started += attempts;
        let expected = match attempts {
            0 => format!("never started: {reached}"),
            _ => reached.to_string(),
        };
        assert_eq!(c["error"], expected.as_str(), "{c:#}\n{stderr}");
    }
    assert!(started <= 1, "one slot: {report:#}");
    m.junit();
    let left = processes_mentioning(&m.path("state"));
    assert!(left.is_empty(), "processes still running: {left:?}");
}

/// Regression: `matrix run-cell --quiet` of a failing cell printed only
/// `cell=`, `status=` and `cell_report=`: without the live view's end line,
/// a CI job's log showed no cause. Like `matrix run`'s table, its stdout
/// now has the cell's error and its log, with or without `--quiet`. Its
/// `--quiet` help describes run-cell's stdout, not run's.
#[test]
fn run_cell_prints_a_failed_cell_s_error_and_log_even_quiet() {
    let m = Matrix::new(r#"  (axes (executor "local") (make-flag "FAIL_STEP=buildworld"))"#);
    for (quiet, report_dir) in [(true, "quiet"), (false, "loud")] {
        let mut cmd = fruix();
        cmd.args(["matrix", "run-cell"])
            .arg(m.path("matrix.scm"))
            .args(["--cell", "local", "--report-dir"])
            .arg(m.path(report_dir))
            .args(store_and_state(m.dir.path()));
        if quiet {
            cmd.arg("--quiet");
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        let log = m.path(&format!("{report_dir}/logs/local.log"));
        let report = m.path(&format!("{report_dir}/cell-local.json"));
        assert_eq!(lines.len(), 5, "quiet {quiet}: {stdout}");
        assert!(
            lines[0].starts_with("local: build step `buildworld` failed"),
            "quiet {quiet}: {stdout}"
        );
        assert_eq!(lines[1], format!("  log: {}", log.display()));
        assert!(log.is_file(), "{stdout}");
        assert_eq!(
            lines[2..],
            [
                "cell=local".to_string(),
                "status=build-failure".to_string(),
                format!("cell_report={}", report.display())
            ]
        );
    }
    let out = run(fruix().args(["matrix", "run-cell", "--help"]));
    assert!(out.status.success(), "{}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    let quiet = help
        .split_once("-q, --quiet")
        .and_then(|(_, h)| h.split_once("--verbose"))
        .unwrap_or_else(|| panic!("--quiet has help: {help}"))
        .0;
    for said in ["cell_report=", "error and log"] {
        assert!(quiet.contains(said), "{said}: {quiet}");
    }
    for unsaid in ["table", "junit=", "fail-fast"] {
        assert!(!quiet.contains(unsaid), "{unsaid}: {quiet}");
    }
}

/// The names in directory `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Regression: a run into the report directory of an earlier one kept
/// what that run left there: the `results/` links of cells that no longer
/// passed or were no longer in the matrix (each still a garbage collector
/// root, keeping its objects), their logs, cell reports and diffoscope's
/// outputs. Now a run first removes what fruix wrote there, never
/// following a symlink and never removing anything else, and refuses a
/// directory that holds anything fruix does not write.
#[test]
fn a_run_into_an_earlier_run_s_report_directory_keeps_nothing_of_it() {
    let m = Matrix::new(
        r#"  (axes (executor "local") (make-flag "A=1" "A=2"))
  (local-slots 2)"#,
    );
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        names_in(&m.path("report/results")),
        ["local-A_1", "local-A_2"]
    );
    // What else fruix writes there: a cell report and its machines copy
    // (run-cell), diffoscope's output; a log that is a symlink is removed,
    // not followed; what fruix does not write is kept.
    let victim = m.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("kept.log"), "not fruix's").unwrap();
    std::fs::write(m.path("report/cell-local-A_2.json"), "{}").unwrap();
    std::fs::write(m.path("report/cell-local-A_2.machines.scm"), "").unwrap();
    std::fs::create_dir(m.path("report/diffoscope")).unwrap();
    std::fs::write(m.path("report/diffoscope/world-a-vs-b-1.txt"), "").unwrap();
    std::os::unix::fs::symlink(victim.join("kept.log"), m.path("report/logs/linked.log")).unwrap();
    std::fs::write(m.path("report/logs/notes.txt"), "mine").unwrap();
    // The next run has one cell, which fails.
    let text = std::fs::read_to_string(m.path("matrix.scm")).unwrap();
    let next = text
        .replace(r#"(make-flag "A=1" "A=2")"#, r#"(make-flag "A=1")"#)
        .replace(
            r#"(make-flags "-DNO_ROOT")"#,
            r#"(make-flags "-DNO_ROOT" "FAIL_STEP=buildworld")"#,
        );
    assert_ne!(next, text);
    std::fs::write(m.path("matrix.scm"), next).unwrap();
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(CELL_FAILURES), "{}", describe(&out));
    assert_eq!(
        names_in(&m.path("report")),
        ["diffoscope", "junit.xml", "logs", "report.json", "results"]
    );
    assert_eq!(names_in(&m.path("report/results")), [] as [&str; 0]);
    assert_eq!(names_in(&m.path("report/diffoscope")), [] as [&str; 0]);
    assert_eq!(names_in(&m.path("report/logs")), ["local.log", "notes.txt"]);
    assert_eq!(names_in(&victim), ["kept.log"]);
    // The earlier links' roots keep nothing any more.
    let roots = store_roots(&m);
    let kept: Vec<&Value> = roots
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dead"] != true)
        .collect();
    assert!(kept.is_empty(), "{roots:#}");

    // A directory holding anything else is no report directory: refused,
    // before anything is made or removed.
    let foreign = m.path("foreign");
    std::fs::create_dir_all(foreign.join("logs")).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    std::fs::write(foreign.join("logs/build.log"), "mine").unwrap();
    let before = listing(&foreign);
    let out = run(&mut m.command_reporting_to("foreign", &[]));
    failed_with(
        "a foreign report directory",
        &out,
        2,
        &["--report-dir", "notes.txt"],
    );
    assert_eq!(listing(&foreign), before);
}

/// Regression: a report directory's `results` that was a symlink (among a
/// CI engine's unpacked artifacts, say) was followed: each passed cell's
/// link to its result bundle, and its temporary, were written into the
/// directory it named. `matrix run` and `run-cell` refuse it before any
/// cell runs (exit 2), and write nothing there, nor anything else in the
/// report directory (`logs/` was made first).
#[test]
fn a_results_symlink_in_the_report_directory_is_refused_and_not_written_through() {
    let m = Matrix::new(r#"  (axes (executor "local"))"#);
    let victim = m.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("kept"), "not fruix's").unwrap();
    for report in ["report", "cells"] {
        std::fs::create_dir(m.path(report)).unwrap();
        std::os::unix::fs::symlink(&victim, m.path(&format!("{report}/results"))).unwrap();
    }
    let results = m.path("report/results");
    let says = format!("{}: is a symlink", results.display());
    let out = m.run(&[]);
    failed_with("matrix run", &out, 2, &[&says]);
    assert!(!m.path("report/report.json").exists());

    let out = run(fruix()
        .args(["matrix", "run-cell"])
        .arg(m.path("matrix.scm"))
        .args(["--cell", "local"])
        .args(store_and_state(m.dir.path()))
        .arg("--report-dir")
        .arg(m.path("cells")));
    let says = format!("{}: is a symlink", m.path("cells/results").display());
    failed_with("matrix run-cell", &out, 2, &[&says]);
    assert!(!m.path("cells/cell-local.json").exists());
    assert_eq!(names_in(&victim), ["kept"]);
    // Refused before anything was written there; a FIFO at `results` is
    // refused as no directory, as `run-cell` says it.
    for report in ["report", "cells"] {
        assert_eq!(names_in(&m.path(report)), ["results"], "{report}");
    }
    std::fs::remove_file(&results).unwrap();
    fruix_core::testing::mkfifo(&results).unwrap();
    let out = m.run(&[]);
    let says = format!("{}: is not a directory", results.display());
    failed_with("matrix run, a FIFO", &out, 2, &[&says]);
    assert_eq!(names_in(&m.path("report")), ["results"]);
}

/// Regression: once Ctrl-C cancelled the run, the matrix's live view
/// showed every stage that then failed `cancelled`, a cell's cleanup too,
/// though cleanup is never cancelled: it failed by itself. As `fruix
/// build` shows it, the stage Ctrl-C stopped is `cancelled`, and the
/// cleanup that failed afterwards `FAILED`.
#[test]
fn a_cleanup_failing_after_ctrl_c_is_shown_failed_not_cancelled() {
    let (m, mut cmd) = external_matrix("echo busy; exit 1");
    let child = crate::util::spawn_piped(&mut cmd);
    wait_until("the build runs", || m.path("building").exists());
    // SAFETY: kill(2) on a process this test started, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = crate::util::wait_with_deadline(child, std::time::Duration::from_secs(120), "fruix");
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = |line: &str| stderr.lines().any(|l| l.starts_with(line));
    assert!(said("==> rev: build cancelled in "), "{stderr}");
    assert!(said("==> rev: cleanup FAILED in "), "{stderr}");
    assert!(!stderr.contains("cleanup cancelled"), "{stderr}");
}

/// A second Ctrl-C while a cell's cleanup runs exits at once, naming the
/// run's report directory it leaves unfinished.
#[test]
fn a_second_ctrl_c_names_the_unfinished_report_directory() {
    let (m, mut cmd) = external_matrix(r#"touch "$FRUIX_CONFIG_DIR/cleaning"; exec sleep 600"#);
    let child = crate::util::spawn_piped(&mut cmd);
    let signal = || {
        // SAFETY: kill(2) on a process this test started, not yet reaped.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
            0
        )
    };
    wait_until("the build runs", || m.path("building").exists());
    signal();
    wait_until("the cleanup runs", || m.path("cleaning").exists());
    signal();
    let out = crate::util::wait_with_deadline(child, std::time::Duration::from_secs(60), "fruix");
    let report = m.dir.path().canonicalize().unwrap().join("report");
    failed_with(
        "a second Ctrl-C",
        &out,
        130,
        &[&format!(
            "cancelled again; exiting without finishing the cleanup; left the run's report directory, unfinished {}",
            report.display()
        )],
    );
}

/// A matrix of one cell, built by the external executor `rev`, whose
/// build marks `building` and holds, and whose cleanup runs `cleanup`;
/// and the command that runs it (`--report-dir DIR/report`).
fn external_matrix(cleanup: &str) -> (Matrix, std::process::Command) {
    let m = Matrix::new("  (axes (executor \"rev\"))\n  (config (rev (dir \"DIR\")))");
    let text = std::fs::read_to_string(m.path("matrix.scm")).unwrap();
    let dir = m.dir.path().display().to_string();
    std::fs::write(m.path("matrix.scm"), text.replace("DIR", &dir)).unwrap();
    for (name, body) in [
        (
            "build.sh",
            r#"touch "$FRUIX_CONFIG_DIR/building"; exec sleep 600"#,
        ),
        ("cleanup.sh", cleanup),
    ] {
        crate::sshd::script(&m.path(name), &format!("#!/bin/sh\n{body}\n"));
    }
    std::fs::write(
        m.path("executors.scm"),
        r#"(fruix-executors (format-version 1)
  (executor (name "rev") (version "1") (description "written by a test")
    (config-key (name "dir") (description "the test's directory"))
    (build (command "./build.sh")) (cleanup (command "./cleanup.sh"))))
"#,
    )
    .unwrap();
    let mut cmd = fruix();
    cmd.arg("--executors-file")
        .arg(m.path("executors.scm"))
        .args(["matrix", "run"])
        .arg(m.path("matrix.scm"))
        .args(store_and_state(m.dir.path()))
        .arg("--report-dir")
        .arg(m.path("report"));
    (m, cmd)
}

/// Regression: a matrix file past the 1 MiB cap was refused saying "fruix
/// never writes one that large", though a person writes matrix files.
#[test]
fn a_matrix_file_past_the_cap_is_refused_as_too_large_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("matrix.scm");
    std::fs::write(&file, vec![b' '; (1 << 20) + 1]).unwrap();
    let out = run(fruix().args(["matrix", "plan"]).arg(&file));
    let said = failed_with(
        "a matrix file of 1 MiB and a byte",
        &out,
        2,
        &["is larger than 1048576 bytes (1024 KiB), the most fruix reads of a metadata or configuration file: check where it came from"],
    );
    assert!(!said.contains("never writes"), "{said}");
}
