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
        std::fs::read_dir(m.path("report/logs"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let log = std::fs::read_to_string(e.path()).unwrap_or_default();
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
