//! `fruix native-build promote` and `fruix store verify|list` as users run them.

use std::fs;
use std::path::{Path, PathBuf};

use fruix_core::testing::write_sample_result_root;
use fruix_core::PromotionMetadata;

use crate::util::{
    fruix, key_values, promote_command, run, run_json, run_ok, sample_root, spawn_piped,
    spawn_silenced, verify_store, PopulatedStore, SmallFilesystem,
};

#[test]
fn summary_and_json_agree() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    let store = dir.path().join("store");
    let kv = key_values(&run_ok(&mut promote_command(&store, &root, &[])));
    let keys: Vec<&str> = kv.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "artifact_store_count",
            "bootloader_store",
            "headers_store",
            "kernel_store",
            "out_link",
            "result_store",
            "run_id",
            "sha_kernel",
            "sha_loader",
            "sha_param",
            "world_store"
        ]
    );
    assert!(
        kv["result_store"].ends_with("-fruix-native-build-result-15.0-STABLE-guest-self-hosted")
    );
    assert!(kv["world_store"].starts_with(&store.canonicalize().unwrap().display().to_string()));
    let json = run_json(&mut promote_command(&store, &root, &["--json"]));
    assert_eq!(json["run_id"], "20260405T213444Z");
    assert_eq!(json["result_store"], kv["result_store"].as_str());
    for name in ["world", "kernel", "headers", "bootloader"] {
        let a = &json["artifacts"][name];
        assert_eq!(a["store_path"], kv[&format!("{name}_store")].as_str());
        assert!(a["tree_signature"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(a["new"], false, "second promotion finds {name} present");
    }
    assert_eq!(json["sha_kernel"], kv["sha_kernel"].as_str());
    // Plain output says what was already there, on stderr.
    let fresh = run(&mut promote_command(&dir.path().join("fresh"), &root, &[]));
    assert_eq!(String::from_utf8_lossy(&fresh.stderr), "");
    let again = run(&mut promote_command(&store, &root, &[]));
    let stderr = String::from_utf8_lossy(&again.stderr);
    for name in ["world", "kernel", "headers", "bootloader", "result bundle"] {
        assert!(
            stderr.contains(&format!("fruix: {name}: already in the store: ")),
            "{stderr}"
        );
    }
    assert_eq!(key_values(&String::from_utf8_lossy(&again.stdout)), kv);
}

/// Each bad input exits 4, names the culprit, and leaves the store as it was.
#[test]
fn bad_inputs_change_nothing() {
    let s = PopulatedStore::new();
    type Breaker = (&'static str, fn(&Path), &'static str);
    let cases: [Breaker; 7] = [
        (
            "malformed promotion.scm",
            |r| {
                fs::write(
                    r.join("promotion.scm"),
                    "(fruix-native-build-promotion\n (format-version 1\n",
                )
                .unwrap()
            },
            "promotion.scm",
        ),
        (
            "missing probe",
            |r| fs::remove_file(r.join("artifacts/kernel/boot/kernel/kernel")).unwrap(),
            "boot/kernel/kernel",
        ),
        (
            "missing artifact",
            |r| fs::remove_dir_all(r.join("artifacts/headers")).unwrap(),
            "artifacts/headers",
        ),
        (
            "artifact path escaping the root",
            |r| {
                let text = fs::read_to_string(r.join("promotion.scm"))
                    .unwrap()
                    .replace("\"artifacts/world\"", "\"../../etc\"");
                fs::write(r.join("promotion.scm"), text).unwrap();
            },
            "..",
        ),
        (
            "artifact reached through a symlink loop",
            |r| {
                fs::remove_dir_all(r.join("artifacts/bootloader")).unwrap();
                std::os::unix::fs::symlink("bootloader", r.join("artifacts/bootloader")).unwrap();
            },
            "artifacts/bootloader",
        ),
        (
            "tree changed after signing",
            |r| fs::write(r.join("artifacts/world/etc/motd"), "changed").unwrap(),
            "tree signature mismatch",
        ),
        (
            "device-like file (FIFO)",
            |r| {
                fruix_core::testing::mkfifo(&r.join("artifacts/world/etc/fifo")).unwrap();
                let mut m = PromotionMetadata::read(&r.join("promotion.scm")).unwrap();
                m.artifacts[0].tree_signature = None;
                m.write_to(r).unwrap();
            },
            "etc/fifo",
        ),
    ];
    for (i, (what, breaker, expected)) in cases.into_iter().enumerate() {
        s.refuses_changed(what, &format!("bad{i}"), breaker, &[expected]);
    }
}

#[test]
fn store_verify_exits_non_zero_on_corruption_and_list_shows_objects() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let kv = key_values(&run_ok(&mut promote_command(
        &store,
        &sample_root(dir.path(), "r"),
        &["--quiet"],
    )));
    run_ok(fruix().args(["store", "verify", "--store"]).arg(&store));
    let list = run_json(
        fruix()
            .args(["store", "list", "--json", "--store"])
            .arg(&store),
    );
    assert_eq!(list.as_array().unwrap().len(), 5);
    let kernel = Path::new(&kv["kernel_store"]);
    fs::set_permissions(
        kernel.join("boot/kernel"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::write(kernel.join("boot/kernel/extra.ko"), b"x").unwrap();
    let out = run(fruix()
        .args(["store", "verify", "--json", "--store"])
        .arg(&store));
    assert_eq!(out.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["corrupt"], 1);
    let bad = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["ok"] == false)
        .unwrap();
    assert_eq!(bad["path"], kv["kernel_store"].as_str());
    assert_eq!(bad["differences"][0]["change"], "extra");
    assert_eq!(bad["differences"][0]["path"], "./boot/kernel/extra.ko");
}

/// A temporary directory holding a result root big enough that promotion
/// takes a while; the root's path.
fn big_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("big");
    write_sample_result_root(&root, "local", "20260405T213444Z", false).unwrap();
    for i in 0..1500 {
        let p = root.join(format!(
            "artifacts/world/usr/share/data/{:02}/file{i}",
            i % 40
        ));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, vec![(i % 251) as u8; 20_000 + (i * 37) % 50_000]).unwrap();
    }
    (dir, root)
}

/// Where in a promotion [`promotion_killed_at_any_point_leaves_no_partial_object`]
/// kills it: right away, or when inotify reports the store reaching a stage.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    Start,
    FirstPoolEntry,
    FirstTemporaryObject,
    FirstPublishedObject,
}

#[test]
fn promotion_killed_at_any_point_leaves_no_partial_object() {
    use crate::race::Inotify;
    let (dir, root) = big_root();
    let mut last_store = None;
    for (n, at) in [
        KillAt::Start,
        KillAt::FirstPoolEntry,
        KillAt::FirstTemporaryObject,
        KillAt::FirstPublishedObject,
    ]
    .into_iter()
    .enumerate()
    {
        let store = dir.path().join(format!("store-{n}"));
        fs::create_dir_all(store.join(".links")).unwrap();
        let inotify = Inotify::new();
        let store_wd = inotify.watch(&store, libc::IN_CREATE | libc::IN_MOVED_TO);
        let links_wd = inotify.watch(&store.join(".links"), libc::IN_MOVED_TO);
        let mut child = spawn_silenced(&mut promote_command(&store, &root, &["--quiet"]));
        let reached = |e: &crate::race::Event| match at {
            KillAt::Start => true,
            KillAt::FirstPoolEntry => e.wd == links_wd,
            KillAt::FirstTemporaryObject => {
                e.wd == store_wd
                    && e.mask & libc::IN_CREATE != 0
                    && e.name.starts_with(b".tmp-")
                    && !e.name.starts_with(b".tmp-promote-")
            }
            KillAt::FirstPublishedObject => {
                e.wd == store_wd && e.mask & libc::IN_MOVED_TO != 0 && !e.name.starts_with(b".")
            }
        };
        if !matches!(at, KillAt::Start) {
            inotify.wait(reached);
        }
        child.kill().unwrap();
        let _ = child.wait();
        // Every visible object is complete: verify finds nothing wrong.
        // Killed at its start, the promotion may leave a store it had only
        // begun to make (no registry): verify refuses that as incomplete
        // (exit 2) and writes nothing into it.
        let out = run(fruix()
            .args(["store", "verify", "--quiet", "--store"])
            .arg(&store));
        let incomplete_at_start = matches!(at, KillAt::Start)
            && out.status.code() == Some(2)
            && !store.join(".fruix/db.sqlite").exists();
        assert!(
            out.status.success() || incomplete_at_start,
            "after SIGKILL at {at:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last_store = Some(store);
    }
    let store = last_store.unwrap();
    let kv = key_values(&run_ok(&mut promote_command(&store, &root, &[])));
    assert_eq!(kv["artifact_store_count"], "4");
    verify_store(&store);
    let leftovers: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
    let pool_leftovers: Vec<_> = fs::read_dir(store.join(".links"))
        .unwrap()
        .flatten()
        .filter(|e| {
            use std::os::unix::fs::MetadataExt;
            e.file_name().to_string_lossy().starts_with(".tmp-")
                || e.metadata().unwrap().nlink() < 2
        })
        .map(|e| e.file_name())
        .collect();
    assert!(
        pool_leftovers.is_empty(),
        "pool temporaries or unlinked entries left: {pool_leftovers:?}"
    );
}

#[test]
fn concurrent_promote_processes_end_with_one_correct_store() {
    let (dir, root) = big_root();
    let store = dir.path().join("store");
    let children: Vec<_> = (0..3)
        .map(|_| spawn_piped(&mut promote_command(&store, &root, &["--json"])))
        .collect();
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    assert!(reports
        .windows(2)
        .all(|w| w[0]["result_store"] == w[1]["result_store"]));
    assert!(reports
        .windows(2)
        .all(|w| w[0]["artifacts"]["world"]["store_path"]
            == w[1]["artifacts"]["world"]["store_path"]));
    let created = reports
        .iter()
        .filter(|r| r["artifacts"]["world"]["new"] == true)
        .count();
    assert_eq!(created, 1, "exactly one process creates the world object");
    verify_store(&store);
}

#[test]
fn disk_full_midway_removes_temporaries_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write_sample_result_root(&root, "local", "20260405T213444Z", false).unwrap();
    for i in 0..8u8 {
        fs::write(
            root.join(format!("artifacts/world/usr/blob{i}")),
            vec![i; 1 << 20],
        )
        .unwrap();
    }
    let small = SmallFilesystem::mount(dir.path().join("small"), "4m");
    let store = small.path.join("store");
    // An existing store: what a failed promotion made in it must go, and
    // the store stays (a store the promotion made would go too).
    fruix_promote::Store::open(&store).unwrap();
    let out = run(&mut promote_command(&store, &root, &["--quiet"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "disk full is a system failure: {stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let visible: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') || n.starts_with(".tmp-"))
        .collect();
    assert!(
        visible.is_empty(),
        "no object and no temporary may remain: {visible:?}"
    );
    let pool_temps = fs::read_dir(store.join(".links"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .count();
    assert_eq!(pool_temps, 0);
}

#[test]
fn unreadable_file_is_named_and_changes_nothing() {
    // Root reads every file whatever its mode, so the promotion runs as `nobody`.
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    let secret = root.join("artifacts/world/etc/motd");
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    for d in [dir.path().to_path_buf(), root.clone()] {
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = crate::util::promote_as_nobody(dir.path(), &store, &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("etc/motd") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(stderr.contains("check the permissions"), "{stderr}");
    let objects: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}

/// A stdout for a child whose first write waits until the test reads: a
/// pipe already full. Returns its reading end and its writing end.
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let fd = writer.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; results checked.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0);
    assert_eq!(
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) },
        0
    );
    loop {
        match writer.write(&[b' '; 4096]) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the pipe: {e}"),
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }, 0);
    (reader, writer)
}

#[test]
fn a_signal_once_the_promotion_has_committed_says_it_is_too_late_and_the_command_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    for command in ["native-build promote", "build"] {
        let at = dir.path().join(command.replace(' ', "-"));
        fs::create_dir(&at).unwrap();
        let (store, state, link) = (at.join("store"), at.join("state"), at.join("result"));
        let mut cmd = match command {
            "build" => {
                let mut cmd = crate::util::fixture_build(fruix(), "local", &at, "build-root");
                cmd.arg("--out-link").arg(&link);
                cmd
            }
            _ => crate::util::promote_linked(&store, &state, &link, &root, &[]),
        };
        cmd.arg("--json");
        signalled_once_committed(command, cmd, &at, &link);
        verify_store(&store);
    }
}

/// Runs `cmd`, a promoting command that makes the out-link `link` in
/// `dir`, and sends it SIGTERM once the link is there (its objects
/// published): it says it is too late, and succeeds.
fn signalled_once_committed(what: &str, mut cmd: std::process::Command, dir: &Path, link: &Path) {
    use crate::race::Inotify;
    use std::io::{BufRead, Read};
    // The out-link is made once the objects are published; the report is
    // printed after it, into a full pipe: the command waits there,
    // committed, until the test reads.
    let inotify = Inotify::new();
    let dir_wd = inotify.watch(dir, libc::IN_CREATE | libc::IN_MOVED_TO);
    let (mut stdout, full) = full_pipe();
    cmd.stdout(full).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let name = link.file_name().unwrap().as_encoded_bytes();
    inotify.wait(|e| e.wd == dir_wd && e.name == name);
    // SAFETY: signalling our own child, not yet reaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    crate::util::wait_for_line(&lines, "fruix: too late to cancel");
    let reading = std::thread::spawn(move || {
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).unwrap();
        all
    });
    let out = crate::util::wait_with_deadline(child, std::time::Duration::from_secs(60), what);
    let after: Vec<String> = lines.try_iter().collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stderr after the signal: {after:?}"
    );
    let report: serde_json::Value = serde_json::from_slice(&reading.join().unwrap()).unwrap();
    let result = report["result_store"].as_str().unwrap();
    assert_eq!(fs::read_link(link).unwrap(), Path::new(result), "{what}");
}
