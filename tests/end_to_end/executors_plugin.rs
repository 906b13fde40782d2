//! The example compiled plugin, `jail` (crate fruix-executor-jail, linked
//! into `fruix` by its default `jail` feature), through `fruix build`.
//!
//! Jails need FreeBSD and root: here the plugin runs its direct runner (the
//! same make steps on the host, no jail) to build the miniature tree and
//! promote it. Its jail commands are checked by the crate's unit tests.

use fruix_core::testing::{TestDir, BASE_STEPS};

use crate::executors_external::ExecutorBuild;
use crate::util::{failed_with, key_values, run_failing, run_ok};

#[test]
fn jail_plugin_builds_and_promotes_the_miniature_tree() {
    let b = ExecutorBuild::new("jail");
    let kv = key_values(&run_ok(
        &mut b.command("r1", &["--config", "runner=direct"]),
    ));
    assert_eq!(kv["artifact_store_count"], "4", "{kv:?}");
    for (artifact, probe) in [
        ("world", "bin/sh"),
        ("kernel", "boot/kernel/kernel"),
        ("headers", "usr/include/sys/param.h"),
        ("bootloader", "boot/loader"),
    ] {
        let store = &kv[&format!("{artifact}_store")];
        assert!(
            store.ends_with(&format!("-fruix-native-{artifact}-15.0-STABLE-jail")),
            "{store}"
        );
        assert!(
            std::path::Path::new(store).join(probe).is_file(),
            "{store} has {probe}"
        );
    }
    let promotion = std::fs::read_to_string(b.root("r1/promotion.scm")).unwrap();
    assert!(promotion.contains("(executor \"jail\")"), "{promotion}");
    for step in BASE_STEPS {
        assert!(
            b.root(&format!("r1/logs/{step}.log")).is_file(),
            "log of {step}"
        );
    }
    assert!(
        !b.root("r1.work").exists(),
        "cleanup removed the work directory"
    );
    run_ok(
        b.fruix()
            .args(["store", "verify", "--quiet", "--store"])
            .arg(b.store()),
    );
}

#[test]
fn jail_plugin_without_a_jail_userland_is_a_system_failure_naming_the_fix() {
    let b = ExecutorBuild::new("jail");
    let empty = b.dir.path().join("empty-jail");
    std::fs::create_dir(&empty).unwrap();
    let root = format!("jail_root={}", empty.display());
    run_failing(
        &mut b.command("r1", &["--config", &root]),
        3,
        &["has no usr/bin/make", "runner=direct"],
    );
    run_failing(
        &mut b.command("r2", &["--config", "runner=vm"]),
        2,
        &["executor `jail`: invalid configuration: unknown variant `vm`"],
    );
}

#[test]
fn jail_plugin_and_local_render_one_plan_and_agree_on_signatures() {
    let signatures = |executor: &str, extra: &[&str]| {
        let b = ExecutorBuild::new(executor);
        let mut cmd = b.command("r1", extra);
        cmd.arg("--json");
        let report: serde_json::Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
        ["world", "kernel", "headers", "bootloader"].map(|a| {
            let signature = report["artifacts"][a]["tree_signature"].as_str();
            let signature = signature.unwrap_or_else(|| panic!("{executor}: no {a}: {report}"));
            (a, signature.to_string())
        })
    };
    assert_eq!(
        signatures("jail", &["--config", "runner=direct"]),
        signatures("local", &[]),
        "the jail plugin slices the installed trees as the local executor does"
    );
}

#[test]
fn the_vm_executor_needs_a_machine_that_is_a_virtual_machine() {
    let dir = TestDir::new();
    // The guest's files exist: a missing one is refused before the rest.
    let (kernel, initrd) = (dir.write("vmlinuz", ""), dir.write("initrd", ""));
    let machines = dir.write(
        "machines.scm",
        format!("(fruix-machines\n  (machine (name \"plain\") (host \"127.0.0.1\") (user \"root\"))\n  (machine (name \"vm1\") (user \"root\")\n    (vm (driver qemu) (kernel {:?}) (initrd {:?}) (host-key \"{}\"))))\n", kernel.display().to_string(), initrd.display().to_string(), fruix_core::testing::PINNED_HOST_KEY),
    );
    let build = |machine: &str, extra: &[&str]| {
        let mut cmd = crate::util::fixture_build(crate::util::fruix(), "vm", dir.path(), "root");
        cmd.arg("--machines")
            .arg(&machines)
            .args(["--machine", machine]);
        cmd.args(extra);
        crate::util::run(&mut cmd)
    };
    failed_with(
        "a machine that is no VM",
        &build("plain", &[]),
        2,
        &["machine plain of", "is not a virtual machine"],
    );
    failed_with(
        "inner=chroot",
        &build("vm1", &["--config", "inner=chroot"]),
        2,
        &["`inner` \"chroot\" is not guest-self-hosted or host-initiated"],
    );
    // A guest key of the SSH executors is not one of vm's.
    failed_with(
        "--known-hosts",
        &build("vm1", &["--known-hosts", "/k"]),
        2,
        &["--known-hosts: executor `vm` takes no `known_hosts` (its keys: "],
    );
    assert!(crate::util::nothing_promoted(&dir.store()));
}
