//! What a review of `fruix matrix plan` as a configuration check found: a
//! machine's misspelt `private-key` is refused by `plan` and by `run`
//! before any cell starts (exit 2, naming the machine and the path), not
//! found hours into a run when a cell reaches that machine.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::matrix::{describe, Matrix};
use crate::util::{fruix, run, run_failing};

const USAGE: i32 = 2;

/// A matrix of a local cell and a host-initiated one, on a machines file
/// of one machine, `builder-1`, whose `private-key` is `key` (never
/// connected to: nothing here reaches it).
fn matrix_with_key(key: &str) -> Matrix {
    let m = Matrix::new(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"local\" \"host-initiated\"))\n  (fail-fast #f)",
    );
    std::fs::write(
        m.path("machines.scm"),
        format!(
            "(fruix-machines\n  (machine (name \"builder-1\") (host \"127.0.0.1\") (port 9) (user \"root\")\n    (private-key \"{key}\")\n    (host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\")))\n"
        ),
    )
    .unwrap();
    m
}

/// The key a user meant, `id_ed25519` in `dir` (a symlink to a regular
/// file, as a mounted secret may be), and the path they wrote instead:
/// the same with an invisible U+202E at its end.
fn keys(dir: &Path) -> (PathBuf, String) {
    std::fs::write(dir.join("secret"), "never shown\n").unwrap();
    let key = dir.join("id_ed25519");
    std::os::unix::fs::symlink("secret", &key).unwrap();
    let misspelt = format!("{}\u{202e}", key.display());
    (key, misspelt)
}

/// What the refusal of the misspelt key says: the machine, its field,
/// and the path escaped.
fn names_the_machine_and_key(message: &str, key: &Path) {
    assert!(
        message.contains(&format!(
            "field `machine[0].private-key` (line 3): machine \"builder-1\": {}\\342\\200\\256 does not exist",
            key.display()
        )),
        "{message}"
    );
    assert!(!message.contains('\u{202e}'), "{message}");
    assert!(!message.contains("never shown"), "{message}");
}

/// `matrix plan` of `m`, refused as the caller's input (exit 2, nothing
/// on stdout): its stderr, then its JSON error under `--json`.
fn refused_plan(m: &Matrix) -> (String, Value) {
    let plan = |json: &[&str]| {
        run(fruix()
            .args(["matrix", "plan"])
            .args(json)
            .arg(m.path("matrix.scm")))
    };
    let out = plan(&[]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (stderr, usage_error(&plan(&["--json"])))
}

/// The JSON error of `out`, which must have exited with the usage status.
fn usage_error(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(out));
    let json: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)));
    assert_eq!(json["error"]["kind"], "usage", "{json:#}");
    assert_eq!(json["error"]["exit_status"], USAGE, "{json:#}");
    json["error"].clone()
}

/// Regression: `matrix plan` of a matrix whose machine's `private-key`
/// was misspelt succeeded; the key was found missing only when a cell ran
/// on the machine. The plan refuses it (exit 2), naming the machine and
/// the path, as a JSON error with `--json`; the key spelt right plans.
#[test]
fn plan_refuses_a_misspelt_private_key_and_names_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (key, misspelt) = keys(dir.path());
    let (stderr, error) = refused_plan(&matrix_with_key(&misspelt));
    names_the_machine_and_key(&stderr, &key);
    names_the_machine_and_key(error["message"].as_str().unwrap(), &key);

    let good = matrix_with_key(&key.display().to_string());
    let plan = good.plan(&mut fruix());
    assert_eq!(plan["cells"][1]["runs_on"], "machine builder-1", "{plan:#}");
}

/// Regression: `matrix run` with that misspelt key built the local cell
/// first, and failed only the cell that reached the machine. It refuses
/// the matrix before any cell starts: no report directory, no store, no
/// cell log.
#[test]
fn run_refuses_a_misspelt_private_key_before_building_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (key, misspelt) = keys(dir.path());
    let m = matrix_with_key(&misspelt);
    let error = usage_error(&m.run(&["--json"]));
    names_the_machine_and_key(error["message"].as_str().unwrap(), &key);
    for made in ["report", "store", "state"] {
        assert!(!m.path(made).exists(), "{made} was made: {error:#}");
    }
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
    names_the_machine_and_key(&String::from_utf8_lossy(&out.stderr), &key);
    assert!(!m.path("report/logs/local.log").exists());
}

/// Regression: the plan of one cell said "1 cells", and `--max-parallel 0`
/// was refused by fruix after clap took it, unlike `build --jobs 0` (clap's
/// "invalid value", as every out-of-range count is).
#[test]
fn one_cell_is_said_as_one_and_max_parallel_0_is_refused_by_the_parser() {
    let m = Matrix::new("  (axes (executor \"local\"))");
    let out = run(fruix().args(["matrix", "plan"]).arg(m.path("matrix.scm")));
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\n1 cell; max-parallel"), "{text}");
    run_failing(
        fruix()
            .args(["matrix", "run", "--max-parallel", "0"])
            .arg(m.path("matrix.scm")),
        USAGE,
        &["invalid value '0' for '--max-parallel <N>'"],
    );
}

/// Regression: `matrix plan` of a machines file whose machine's pinned
/// `host-key` is no key (`"ssh-ed25519 notakey"`) succeeded; the key was
/// refused only when a build connected, after other cells ran. The
/// machines file is refused when read (exit 2), naming the field and its
/// line.
#[test]
fn plan_refuses_a_host_key_that_is_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keys(dir.path());
    let m = matrix_with_key(&key.display().to_string());
    let machines = m.path("machines.scm");
    let text = std::fs::read_to_string(&machines).unwrap();
    let real = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    std::fs::write(&machines, text.replace(real, "notakey")).unwrap();
    let (stderr, error) = refused_plan(&m);
    assert!(
        stderr.contains("field `machine[0].host-key` (line 4)")
            && stderr.contains("\"ssh-ed25519 notakey\" is not a public key"),
        "{stderr}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("field `machine[0].host-key` (line 4)"),
        "{error:#}"
    );
}

/// A matrix of a local cell and a `vm` one, on a machines file of one VM
/// machine, `vm1`, whose `(vm ...)` record pins `host_key` on line 4
/// (its kernel an empty file: no guest is ever booted here).
fn matrix_with_vm_host_key(host_key: &str) -> Matrix {
    let m = Matrix::new(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"local\" \"vm\"))\n  (fail-fast #f)",
    );
    let kernel = m.path("vmlinuz");
    std::fs::write(&kernel, "").unwrap();
    std::fs::write(
        m.path("machines.scm"),
        format!(
            "(fruix-machines\n  (machine (name \"vm1\") (user \"root\")\n    (vm (driver qemu) (kernel {:?})\n        (host-key {host_key:?}))))\n",
            kernel.display().to_string()
        ),
    )
    .unwrap();
    m
}

/// Regression: `matrix plan` of a machines file whose VM machine's
/// pinned `host-key` is no key (`"ssh-ed25519 notakey"`) succeeded: a
/// `(vm ...)` record's key was only checked to be two words, and refused
/// when fruix connected to the guest it had booted. It is parsed as a
/// machine's `host-key` is, and refused when the file is read (exit 2),
/// naming the field and its line; `matrix run` makes nothing. The same
/// file with a well-formed key plans.
#[test]
fn plan_refuses_a_vm_host_key_that_is_no_key() {
    let m = matrix_with_vm_host_key("ssh-ed25519 notakey");
    let (stderr, error) = refused_plan(&m);
    let says = "field `machine[0].vm.host-key` (line 4): pinned host-key \"ssh-ed25519 notakey\" is not a public key";
    assert!(stderr.contains(says), "{stderr}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(says), "{error:#}");

    let error = usage_error(&m.run(&["--json"]));
    assert!(
        error["message"].as_str().unwrap().contains(says),
        "{error:#}"
    );
    for made in ["report", "store", "state"] {
        assert!(!m.path(made).exists(), "{made} was made: {error:#}");
    }

    let good = matrix_with_vm_host_key(fruix_core::testing::PINNED_HOST_KEY);
    let plan = good.plan(&mut fruix());
    assert_eq!(plan["cells"][1]["runs_on"], "machine vm1", "{plan:#}");
}
