//! Mixed-mode matrices: `local`, `host-initiated` and `guest-self-hosted`
//! over two loopback `sshd` machines, with real builds, promotion, the
//! agreement check, a machine stopped mid-run, a machines file edited
//! mid-run, and slot limits checked from
//! the recorded start and end times.

use std::path::Path;

use crate::matrix::{cell, describe, peak_concurrency, Matrix, DIVERGENCE};
use crate::sshd::Sshd;
use crate::util::{element_with, fruix, run, store_and_state, wait_until};

/// A machines file entry for `sshd` named `name`.
fn machine(sshd: &Sshd, name: &str, speed: f64, slots: u32) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    format!(
        "  (machine (name {name:?}) (host \"127.0.0.1\") (port {}) (user {user:?})\n           (private-key {:?}) (host-key {:?})\n           (parallel-builds {slots}) (speed {speed:.1}) (state-dir {:?}) (helper {:?})\n           (store {:?}))\n",
        sshd.port,
        sshd.identity().display().to_string(),
        sshd.host_key(),
        sshd.state_dir().display().to_string(),
        env!("CARGO_BIN_EXE_fruix"),
        sshd.guest_store().display().to_string(),
    )
}

/// Two sshd machines (m1 faster), their machines file, and a matrix.
fn setup(body: &str, slots: u32) -> (Matrix, Sshd, Sshd) {
    let (m1, m2) = (Sshd::start(), Sshd::start());
    let m = Matrix::new(&format!("  (machines-file \"machines.scm\")\n{body}"));
    std::fs::write(
        m.path("machines.scm"),
        format!(
            "(fruix-machines\n{}{})\n",
            machine(&m1, "m1", 2.0, slots),
            machine(&m2, "m2", 1.0, slots)
        ),
    )
    .unwrap();
    (m, m1, m2)
}

/// The text of every cell log the run of `m` has written so far, in no
/// particular order (a log it cannot read yet is empty).
fn cell_logs(m: &Matrix) -> Vec<String> {
    std::fs::read_dir(m.path("report/logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Checks that no machine ran more attempts at once than `slots`, and that
/// no more than `max_parallel` ran in all.
fn assert_slots_held(report: &serde_json::Value, slots: usize, local: usize, max_parallel: usize) {
    let (peak, per_machine) = peak_concurrency(report);
    assert!(
        peak <= max_parallel,
        "{peak} > max-parallel {max_parallel}: {report:#}"
    );
    for (machine, n) in per_machine {
        let limit = if machine == "local" { local } else { slots };
        assert!(
            n <= limit,
            "{machine} ran {n} at once (slots {limit}): {report:#}"
        );
    }
}

#[test]
fn three_executors_on_two_machines_agree_over_two_kernconfs() {
    let (m, _m1, _m2) = setup(
        r#"  (axes (executor "local" "host-initiated" "guest-self-hosted") (kernconf "GENERIC" "MINIMAL"))
  (max-parallel 3)
  (fail-fast #f)"#,
        1,
    );
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = m.report();
    assert_eq!(report["cells"].as_array().unwrap().len(), 6);
    for executor in ["local", "host-initiated", "guest-self-hosted"] {
        for kernconf in ["GENERIC", "MINIMAL"] {
            let c = cell(&report, &format!("{executor}-{kernconf}"));
            assert_eq!(c["status"], "passed", "{c:#}");
            let machine = c["machine"].as_str().unwrap();
            if executor == "local" {
                assert_eq!(machine, "local");
            } else {
                assert!(["m1", "m2"].contains(&machine), "{c:#}");
            }
            let world = Path::new(c["artifacts"]["world"]["store_path"].as_str().unwrap());
            assert!(
                world.to_string_lossy().ends_with(&format!("-{executor}")),
                "{c:#}"
            );
        }
    }
    let agreement = report["agreement"].as_array().unwrap();
    assert_eq!(agreement.len(), 8, "2 kernconfs x 4 artifacts: {report:#}");
    for a in agreement {
        assert_eq!(a["agree"], true, "{a:#}");
        assert_eq!(a["cells"].as_array().unwrap().len(), 3);
    }
    assert_slots_held(&report, 1, 1, 3);
    let junit = m.junit();
    assert!(junit.contains("classname=\"fruix.matrix.guest-self-hosted\""));
}

#[test]
fn nondeterminism_diverges_between_executors() {
    let (m, _m1, _m2) = setup(
        r#"  (axes (executor "local" "host-initiated" "guest-self-hosted") (make-flag "NONDETERMINISTIC=yes"))
  (max-parallel 3)
  (fail-fast #f)"#,
        2,
    );
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(DIVERGENCE), "{}", describe(&out));
    let report = m.report();
    let world = element_with(&report["agreement"], "artifact", "world");
    assert_eq!(world["agree"], false);
    let differences = world["differences"].as_array().unwrap();
    assert_eq!(
        differences.len(),
        2,
        "local against each other executor: {world:#}"
    );
    for d in differences {
        assert_eq!(d["path"], "./usr/share/misc/build-stamp", "{d:#}");
        assert_eq!(d["cells"][0], "local");
    }
    assert_slots_held(&report, 2, 1, 3);
    assert!(m.junit().contains("type=\"divergence\""));
}

#[test]
fn cells_of_a_machine_stopped_mid_run_are_retried_on_the_other() {
    let (m, mut m1, _m2) = setup(
        r#"  (axes (executor "host-initiated" "guest-self-hosted") (kernconf "GENERIC" "MINIMAL"))
  (max-parallel 2)
  (retries 1)
  (fail-fast #f)"#,
        1,
    );
    let child = m.spawn();
    // Wait until a cell builds on m1 (the faster machine gets the first
    // cell), then stop m1's sshd and everything it runs.
    let building_on_m1 = || {
        cell_logs(&m).iter().any(|log| {
            log.contains("attempt 1 on m1")
                && (log.contains("==> buildworld") || log.contains("==> guest-build"))
        })
    };
    wait_until("a cell builds on m1", building_on_m1);
    m1.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = m.report();
    let set_aside = report["machines_set_aside"].as_array().unwrap();
    assert_eq!(set_aside.len(), 1, "{report:#}");
    assert_eq!(set_aside[0]["machine"], "m1");
    let cells = report["cells"].as_array().unwrap();
    assert!(cells.iter().all(|c| c["status"] == "passed"), "{report:#}");
    let retried: Vec<&serde_json::Value> = cells
        .iter()
        .filter(|c| c["attempts"].as_array().unwrap().len() == 2)
        .collect();
    assert!(!retried.is_empty(), "{report:#}");
    for c in retried {
        let attempts = c["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["machine"], "m1");
        assert_eq!(attempts[0]["status"], "system-failure");
        assert_eq!(attempts[1]["machine"], "m2");
        assert_eq!(c["machine"], "m2");
    }
    assert_slots_held(&report, 1, 1, 2);
    m.junit();
}

#[test]
fn shared_results_carry_the_signature_of_the_machine_that_built_them() {
    let (m1, m2) = (Sshd::start(), Sshd::start());
    let m = Matrix::new(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"guest-self-hosted\") (kernconf \"GENERIC\" \"MINIMAL\"))\n  (share-results #t)\n  (fail-fast #f)",
    );
    let (secret, public) = crate::signing::key(m.dir.path(), "builder-m1");
    let (secret2, public2) = crate::signing::key(m.dir.path(), "builder-m2");
    let signing = |entry: String, secret: &Path, public: &str| {
        entry.replacen(
            "(store ",
            &format!(
                "(signing-key {:?}) (guest-signing-key {:?})\n           (store ",
                public.trim(),
                secret.display().to_string()
            ),
            1,
        )
    };
    // m2 has no key: the plan refuses to share results it could not sign.
    std::fs::write(
        m.path("machines.scm"),
        format!(
            "(fruix-machines\n{}{})\n",
            signing(machine(&m1, "m1", 2.0, 1), &secret, &public),
            machine(&m2, "m2", 1.0, 1)
        ),
    )
    .unwrap();
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("m2 of the machines file have no (signing-key"),
        "{}",
        describe(&out)
    );
    std::fs::write(
        m.path("machines.scm"),
        format!(
            "(fruix-machines\n{}{})\n",
            signing(machine(&m1, "m1", 2.0, 1), &secret, &public),
            signing(machine(&m2, "m2", 1.0, 1), &secret2, &public2)
        ),
    )
    .unwrap();
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = m.report();
    for kernconf in ["GENERIC", "MINIMAL"] {
        let c = cell(&report, &format!("guest-self-hosted-{kernconf}"));
        let (signer, public) = match c["machine"].as_str().unwrap() {
            "m1" => ("builder-m1", &public),
            _ => ("builder-m2", &public2),
        };
        assert_eq!(c["signed_by"], signer, "{c:#}");
        let store = m.dir.path().join("store");
        let bundle = crate::signing::info(&store, c["result_store"].as_str().unwrap());
        assert!(crate::signing::signed_by(&bundle, public), "{bundle:#}");
        let world = c["artifacts"]["world"]["store_path"].as_str().unwrap();
        assert!(crate::signing::signed_by(
            &crate::signing::info(&store, world),
            public
        ));
    }
}

/// The machines file is read and checked once, when the run is planned:
/// every attempt reads the run's copy (`machines.scm` in the report
/// directory), so an edit made while the run goes on changes nothing. Here
/// the machine is repointed at a port nothing listens on while the first
/// cell builds; the second still builds on the machine the plan checked.
#[test]
fn a_machines_file_edited_during_a_run_does_not_change_it() {
    let sshd = Sshd::start();
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let m = Matrix::new(&format!(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"local\" \"host-initiated\") (make-flag \"HOLD_UNTIL={}\"))\n  (max-parallel 1)\n  (retries 0)",
        go.display()
    ));
    let machines = format!("(fruix-machines\n{})\n", machine(&sshd, "m1", 1.0, 1));
    std::fs::write(m.path("machines.scm"), &machines).unwrap();
    let child = m.spawn();
    // Cells start in matrix order, one at a time: the local one holds.
    wait_until("the local cell builds", || {
        gate.path().join("go.holding").exists()
    });
    let edited = machines.replace(&format!("(port {})", sshd.port), "(port 1)");
    assert_ne!(edited, machines);
    std::fs::write(m.path("machines.scm"), &edited).unwrap();
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = m.report();
    let remote = cell(&report, "host-initiated");
    assert_eq!(
        (&remote["status"], &remote["machine"]),
        (&"passed".into(), &"m1".into()),
        "{remote:#}"
    );
    assert_eq!(
        report["machines_file"],
        m.path("machines.scm").display().to_string()
    );
    let copy = m.path("report/machines.scm");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), machines);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o444);
    // A cell run on its own keeps its copy beside its cell report, so that
    // cells run into one directory do not share one.
    std::fs::write(m.path("machines.scm"), &machines).unwrap();
    let out = run(fruix()
        .args(["matrix", "run-cell"])
        .arg(m.path("matrix.scm"))
        .args(["--cell", "host-initiated", "--report-dir"])
        .arg(m.path("cells"))
        .args(store_and_state(m.dir.path())));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let copy = m.path("cells/cell-host-initiated.machines.scm");
    assert_eq!(std::fs::read_to_string(copy).unwrap(), machines);
}

/// A machines file of `broken` (faster: its helper does not exist, but it
/// accepts SSH) and `good`, one slot each, for `m`.
fn broken_and_good(m: &Matrix, broken: &Sshd, good: &Sshd) {
    let helper = format!("(helper {:?})", env!("CARGO_BIN_EXE_fruix"));
    let entry = machine(broken, "broken", 2.0, 1);
    assert!(entry.contains(&helper), "{entry}");
    std::fs::write(
        m.path("machines.scm"),
        format!(
            "(fruix-machines\n{}{})\n",
            entry.replace(&helper, "(helper \"/nonexistent/fruix\")"),
            machine(good, "good", 1.0, 1)
        ),
    )
    .unwrap();
}

/// The machines each cell of `report` had its attempts on, in order.
fn attempts_on(report: &serde_json::Value) -> Vec<Vec<String>> {
    report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["machine"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// Regression: a machine that accepted SSH but could not build (its helper
/// missing) was never set aside, and as the fastest it took every cell,
/// each failing there, while the other machine idled: with retries 0 every
/// cell failed (exit 5), and with retries 1 every cell spent its retry.
/// Now a machine whose last attempt failed with a system failure comes
/// after the others.
#[test]
fn a_machine_that_accepts_ssh_but_cannot_build_does_not_take_every_cell() {
    let (broken, good) = (Sshd::start(), Sshd::start());
    for (retries, status, on_broken_then) in [(0, 5, vec![]), (1, 0, vec!["good".to_string()])] {
        let m = Matrix::new(&format!(
            "  (machines-file \"machines.scm\")\n  (axes (executor \"guest-self-hosted\") (kernconf \"GENERIC\" \"MINIMAL\") (make-flag \"A=1\" \"A=2\"))\n  (max-parallel 1)\n  (retries {retries})\n  (fail-fast #f)"
        ));
        broken_and_good(&m, &broken, &good);
        let out = m.run(&[]);
        assert_eq!(out.status.code(), Some(status), "{}", describe(&out));
        let report = m.report();
        let mut first = vec!["broken".to_string()];
        first.extend(on_broken_then);
        let good_only = vec!["good".to_string()];
        assert_eq!(
            attempts_on(&report),
            [first, good_only.clone(), good_only.clone(), good_only],
            "retries {retries}: {report:#}"
        );
        let first = &report["cells"][0];
        assert_eq!(
            first["attempts"][0]["status"], "system-failure",
            "{first:#}"
        );
    }
}

/// A machine that accepts SSH but on which two attempts in a row fail with
/// a system failure is set aside, as an unreachable one is, and the reason
/// names both attempts and what the last said. Each machine has one slot
/// and two cells run at once: the first cells go to broken and good; good
/// holds its cell (HOLD_UNTIL) while broken fails, so broken, though it
/// failed last, is the only free machine for the third cell.
#[test]
fn a_machine_on_which_two_attempts_in_a_row_fail_is_set_aside() {
    let (broken, good) = (Sshd::start(), Sshd::start());
    let gate = tempfile::tempdir().unwrap();
    let [go1, go2] = ["go1", "go2"].map(|g| gate.path().join(g));
    let m = Matrix::new(&format!(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"guest-self-hosted\") (kernconf \"GENERIC\" \"MINIMAL\") (make-flag \"HOLD_UNTIL={}\" \"HOLD_UNTIL={}\"))\n  (max-parallel 2)\n  (retries 1)\n  (fail-fast #f)",
        go1.display(),
        go2.display()
    ));
    broken_and_good(&m, &broken, &good);
    let child = m.spawn();
    // Cells 0 and 2 end their first attempt on broken while cell 1 holds
    // good's slot.
    let failed_on_broken = || {
        cell_logs(&m)
            .iter()
            .filter(|log| log.contains("attempt 1 on broken") && log.contains("(system failure)"))
            .count()
            == 2
    };
    wait_until("two cells failed on broken", failed_on_broken);
    std::fs::write(&go1, "").unwrap();
    std::fs::write(&go2, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = m.report();
    let [broken_then_good, good_only] = [vec!["broken", "good"], vec!["good"]]
        .map(|a| a.into_iter().map(String::from).collect::<Vec<_>>());
    assert_eq!(
        attempts_on(&report),
        [
            broken_then_good.clone(),
            good_only.clone(),
            broken_then_good,
            good_only
        ],
        "{report:#}"
    );
    let set_aside = report["machines_set_aside"].as_array().unwrap();
    assert_eq!(set_aside.len(), 1, "{report:#}");
    assert_eq!(set_aside[0]["machine"], "broken");
    let ids: Vec<&str> = (0..3)
        .map(|i| report["cells"][i]["id"].as_str().unwrap())
        .collect();
    let reason = set_aside[0]["reason"].as_str().unwrap();
    let expected = format!(
        "2 attempts in a row failed with a system failure on it: attempt 1 of cell {}, attempt 1 of cell {}: ",
        ids[0], ids[2]
    );
    assert!(reason.starts_with(&expected), "{reason}");
    assert!(reason.contains("/nonexistent/fruix"), "{reason}");
    assert!(!reason.contains('\n'), "{reason}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("machine broken set aside: 2 attempts"),
        "{}",
        describe(&out)
    );
}

/// Regression: when every machine of the pool was unreachable, a cell none
/// could take any more said `cannot run: every machine that could build it
/// was set aside: m1 (unreachable after attempt 1 of cell ...)`; what the
/// connections said (`Connection refused`) was only in another cell's
/// attempts and log. Now every reason quotes it.
#[test]
fn a_pool_whose_machines_are_all_unreachable_says_why_in_the_cell_s_error() {
    let (m, mut m1, mut m2) = setup(
        r#"  (axes (executor "host-initiated") (kernconf "GENERIC" "MINIMAL"))
  (max-parallel 1)
  (retries 1)
  (fail-fast #f)"#,
        1,
    );
    m1.kill();
    m2.kill();
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    let report = m.report();
    let set_aside = report["machines_set_aside"].as_array().unwrap();
    assert_eq!(set_aside.len(), 2, "{report:#}");
    for (s, n) in set_aside.iter().zip([1, 2]) {
        let reason = s["reason"].as_str().unwrap();
        let shown = format!("unreachable after attempt {n} of cell host-initiated-GENERIC: ");
        assert!(reason.starts_with(&shown), "{reason}");
        assert!(reason.contains("Connection refused"), "{reason}");
    }
    let never = cell(&report, "host-initiated-MINIMAL");
    assert_eq!(never["status"], "system-failure", "{never:#}");
    assert_eq!(never["attempts"], serde_json::json!([]), "{never:#}");
    let error = never["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot run: every machine that could build it was set aside: m1 (unreachable after attempt 1 of cell host-initiated-GENERIC: "),
        "{error}"
    );
    assert_eq!(error.matches("Connection refused").count(), 2, "{error}");
}
