//! The `vm` executor, run by the `fruix` binary, before it boots: the sweep
//! of the work directories that runs whose fruix was killed left beside
//! the result root (only this user's own, naming guests as fruix names
//! them), and the base image checked to be qcow2. Neither needs a guest
//! to boot: the guest's kernel here is an empty file.

use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::util::{dir_for_root_and_others, fixture_build, fruix, run, run_failing};

/// A machines file in `dir` of one QEMU machine `m`, its kernel and private
/// key empty files there, its base image `image` if given.
fn machines(dir: &Path, image: Option<&Path>) -> PathBuf {
    let (kernel, key) = (dir.join("vmlinuz"), dir.join("id_ed25519"));
    std::fs::write(&kernel, "").unwrap();
    std::fs::write(&key, "").unwrap();
    let image = image.map_or(String::new(), |image| format!(" (image {image:?})"));
    let path = dir.join("machines.scm");
    std::fs::write(
        &path,
        format!(
            "(fruix-machines (machine (name \"m\") (user \"root\") (private-key {key:?})\n  (vm (driver qemu) (kernel {kernel:?}){image} (boot-timeout 5) (host-key {:?}))))\n",
            fruix_core::testing::PINNED_HOST_KEY
        ),
    )
    .unwrap();
    path
}

/// `fruix build --executor vm` of the miniature tree on machine `m` of
/// `machines`, its result root `dir/root`.
fn vm_build(dir: &Path, machines: &Path) -> std::process::Command {
    let mut cmd = fixture_build(fruix(), "vm", dir, "root");
    cmd.arg("--machines").arg(machines).args(["--machine", "m"]);
    cmd
}

/// Makes the directory `dir/name` holding a `.lock`, a `precious` file and
/// a `guest` file of text `guest`, all of `owner` (this user's when
/// `None`), as a killed run would leave its work directory.
fn plant(dir: &Path, name: &str, guest: &str, owner: Option<u32>) -> PathBuf {
    let work = dir.join(name);
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (file, text) in [(".lock", ""), ("precious", "x"), ("guest", guest)] {
        std::fs::write(work.join(file), text).unwrap();
        lchown(work.join(file), owner, owner).unwrap();
    }
    lchown(&work, owner, owner).unwrap();
    work
}

/// Regression: run as root with its result root in a directory any user
/// may write to (mode 1777), a VM build took the directories `nobody`
/// planted there for work directories of killed runs: it said it stopped
/// and destroyed guest `not-a-fruix-guest`, removed them, and would have
/// torn down a bhyve guest `prod-db`. It leaves them alone now, and still
/// sweeps a work directory of its own user's killed run.
#[test]
fn a_vm_build_sweeps_only_its_own_user_s_work_directories() {
    let dir = dir_for_root_and_others("leaves another user's directories alone");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let nobody = Some(65534);
    let planted = [
        plant(&shared, ".other.vm", "m\nqemu\nnot-a-fruix-guest\n", nobody),
        plant(
            &shared,
            ".planted.vm",
            "m\nqemu\nfruix-r1-00000000000000e1\n",
            nobody,
        ),
    ];
    let misnamed = plant(&shared, ".misnamed.vm", "m\nqemu\nprod-db\n", None);
    let ours = plant(
        &shared,
        ".ours.vm",
        "m\nqemu\nfruix-r2-00000000000000e2\n",
        None,
    );
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).unwrap();
    let machines = machines(dir.path(), None);
    // The empty kernel boots nothing (and there may be no QEMU at all):
    // the machine's failure, after the sweep.
    let out = run(&mut vm_build(&shared, &machines));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for work in planted.iter().chain([&misnamed]) {
        assert!(
            work.join("precious").is_file(),
            "{}: {stderr}",
            work.display()
        );
    }
    assert!(!ours.exists(), "{stderr}");
    assert!(
        stderr.contains("stopped and destroyed guest fruix-r2-00000000000000e2,"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}, named like the work directory of a VM run, is left alone: its guest file names guest \"prod-db\", not a name fruix gives a guest",
            misnamed.display()
        )),
        "{stderr}"
    );
    for never in [
        "not-a-fruix-guest",
        "fruix-r1-00000000000000e1",
        ".other.vm",
        ".planted.vm",
    ] {
        assert!(!stderr.contains(never), "{never}: {stderr}");
    }
}

/// Regression: a raw base image failed only once `qemu-img` could not make
/// an overlay of it (exit 3, the machine's failure, which a matrix sets the
/// machine aside for). It is a configuration error now (exit 2), naming
/// the field and the file, before anything boots.
#[test]
fn a_base_image_that_is_not_qcow2_is_refused_before_booting() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("raw.img");
    std::fs::write(&image, vec![0u8; 1 << 16]).unwrap();
    let machines = machines(dir.path(), Some(&image));
    let expected = format!(
        "invalid configuration: the `image` of machine \"m\" {} is not a qcow2 image",
        image.display()
    );
    let stderr = run_failing(&mut vm_build(dir.path(), &machines), 2, &[&expected]);
    assert!(!stderr.contains("vm-prepare"), "nothing booted: {stderr}");
    assert!(!dir.path().join(".root.vm").exists());
}
