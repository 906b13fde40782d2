//! `fruix store copy` between two stores over a real loopback `sshd`, the
//! other side running `fruix store serve`.
//!
//! Objects only move between stores at the same path (their names and
//! references name it), so the "other machine's" store is a directory
//! bind-mounted over this test's store path in a private mount namespace
//! (`unshare --mount`), in which the served fruix runs: both sides see one
//! path and two stores, as two machines would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::signing::{info, key, signed_by};
use crate::sshd::{bind_mounted_fruix, script, Sshd};
use crate::util::{
    failed_with, fixture_source, fruix, json_error, object_names, promote_report, require_tool,
    run, run_json, run_ok, run_with_deadline, sample_root, sample_root_of, snapshot,
    spawn_silenced, wait_until, wait_with_deadline,
};
use fruix_core::testing::conformance::processes_mentioning;

/// Two stores at one path: `dir/store` here, `dir/remote` over there.
struct TwoStores {
    dir: tempfile::TempDir,
    sshd: Sshd,
    /// The serving side's fruix (see the module docs).
    remote_program: PathBuf,
    secret: PathBuf,
    public: String,
}

impl TwoStores {
    fn new() -> TwoStores {
        require_tool("unshare", "util-linux");
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = key(dir.path(), "builder-1");
        std::fs::write(dir.path().join("trusted-keys"), &public).unwrap();
        std::fs::create_dir(dir.path().join("store")).unwrap();
        std::fs::create_dir(dir.path().join("remote")).unwrap();
        let remote_program = dir.path().join("remote-fruix");
        let keys = dir.path().join("trusted-keys");
        bind_mounted_fruix(
            &remote_program,
            &format!("FRUIX_TRUSTED_KEYS_FILE={} ", keys.display()),
            &dir.path().join("remote"),
            &dir.path().join("store"),
        );
        TwoStores {
            dir,
            sshd: Sshd::trusted(),
            remote_program,
            secret,
            public,
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `fruix store copy --json --to|--from ... ARGS` with this server.
    fn copy(&self, direction: &str, args: &[&str]) -> Command {
        let mut cmd = self.copy_plain(direction, args);
        cmd.arg("--json");
        cmd
    }

    /// [`TwoStores::copy`] without `--json`.
    fn copy_plain(&self, direction: &str, args: &[&str]) -> Command {
        let mut cmd = fruix();
        cmd.args(["store", "copy", direction])
            .arg(format!("ssh://{}", self.sshd.guest()))
            .arg("--identity")
            .arg(self.sshd.identity())
            .arg("--known-hosts")
            .arg(self.sshd.known_hosts())
            .arg("--remote-program")
            .arg(&self.remote_program)
            .arg("--store")
            .arg(self.store())
            .args(args);
        cmd
    }

    fn copy_ok(&self, direction: &str, args: &[&str]) -> Value {
        serde_json::from_str(&run_ok(&mut self.copy(direction, args))).unwrap()
    }

    /// A fruix command run on the other side's store.
    fn remote(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.remote_program);
        cmd.args(args).arg("--store").arg(self.store());
        run_ok(&mut cmd)
    }

    /// The other side's objects, by name.
    fn remote_objects(&self) -> Vec<String> {
        object_names(&self.dir.path().join("remote"))
    }

    /// Promotes a sample result root here, signed: its bundle and its four
    /// artifacts. Returns the bundle's and the artifacts' paths.
    fn promoted(&self, root: &Path) -> (String, Vec<String>) {
        let report = promote_report(
            &self.store(),
            root,
            &["--sign-with", self.secret.to_str().unwrap()],
        );
        let artifacts = report["artifacts"]
            .as_object()
            .unwrap()
            .values()
            .map(|a| a["store_path"].as_str().unwrap().to_string())
            .collect();
        (
            report["result_store"].as_str().unwrap().to_string(),
            artifacts,
        )
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_copy_sends_only_what_the_other_store_lacks_and_a_second_sends_nothing() {
    let t = TwoStores::new();
    let (bundle, artifacts) = t.promoted(&sample_root(t.dir.path(), "root"));
    assert_eq!(artifacts.len(), 4);
    // The other side gets the four artifacts first.
    let mut args: Vec<&str> = artifacts.iter().map(String::as_str).collect();
    let first = t.copy_ok("--to", &args);
    assert_eq!(strings(&first["sent"]).len(), 4, "{first:#}");
    assert_eq!(t.remote_objects().len(), 4);
    // The closure of five: only the bundle is missing there, and only its
    // archive crosses the connection.
    let exported = t.dir.path().join("bundle-alone");
    run_ok(
        fruix()
            .args(["store", "export", "--store"])
            .arg(t.store())
            .arg("--output")
            .arg(&exported)
            .arg(&bundle),
    );
    args = vec!["--recursive", &bundle];
    let second = t.copy_ok("--to", &args);
    assert_eq!(second["objects"], 5, "{second:#}");
    assert_eq!(
        strings(&second["sent"]),
        std::slice::from_ref(&bundle),
        "{second:#}"
    );
    assert_eq!(
        second["bytes"].as_u64(),
        Some(std::fs::metadata(&exported).unwrap().len()),
        "{second:#}"
    );
    assert_eq!(t.remote_objects().len(), 5);
    // Everything is there now: nothing is sent.
    let third = t.copy_ok("--to", &args);
    assert_eq!(strings(&third["sent"]).len(), 0, "{third:#}");
    assert_eq!(third["bytes"], 0, "{third:#}");
    // The other store verifies, and holds builder-1's signatures.
    let verify: Value = serde_json::from_str(&t.remote(&["store", "verify", "--json"])).unwrap();
    assert_eq!(verify["objects"].as_array().unwrap().len(), 5, "{verify:#}");
    assert!(verify["objects"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["ok"] == true));
    let remote_info: Value =
        serde_json::from_str(&t.remote(&["store", "info", "--json", &bundle])).unwrap();
    assert!(signed_by(&remote_info[0], &t.public), "{remote_info:#}");

    // Back the other way, into an empty store here.
    std::fs::rename(t.store(), t.dir.path().join("store-before")).unwrap();
    std::fs::create_dir(t.store()).unwrap();
    let fetched = t.copy_ok(
        "--from",
        &["--recursive", "--trusted-key", t.public.trim(), &bundle],
    );
    assert_eq!(strings(&fetched["sent"]).len(), 5, "{fetched:#}");
    assert!(signed_by(&info(&t.store(), &bundle), &t.public));
    // Its summary says the bytes came (it said "sent").
    let mut again = t.copy_plain("--from", &["--recursive", "--no-check-sigs", &bundle]);
    let out = run(&mut again);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("copied 0 of 5 object(s) from"), "{said}");
    assert!(said.ends_with(", 0 bytes received\n"), "{said}");
    // Without trusting builder-1, nothing comes.
    std::fs::remove_dir_all(t.store()).unwrap();
    std::fs::create_dir(t.store()).unwrap();
    let (_, stranger) = key(t.dir.path(), "stranger");
    let refused = run(&mut t.copy(
        "--from",
        &["--recursive", "--trusted-key", stranger.trim(), &bundle],
    ));
    json_error(&refused, 4, "does not trust (builder-1)");
    assert!(std::fs::read_dir(t.store())
        .unwrap()
        .flatten()
        .all(|e| e.file_name().to_string_lossy().starts_with('.')));
}

#[test]
fn a_killed_copy_leaves_no_partial_object_on_the_other_side() {
    let t = TwoStores::new();
    // A result root whose world holds one 128 MiB file: far more than every
    // buffer between the two sides (the pipe, the SSH window, the sockets),
    // so the copy is still sending it when the other side starts writing it.
    let root = t.dir.path().join("root");
    fruix_core::testing::write_sample_result_root(&root, "local", "20260405T213444Z", false)
        .unwrap();
    let big = std::fs::File::create(root.join("artifacts/world/bin/big")).unwrap();
    let mut writer = std::io::BufWriter::new(big);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..(128 << 20) / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::io::Write::write_all(&mut writer, &x.to_le_bytes()).unwrap();
    }
    drop(writer);
    let (bundle, _) = t.promoted(&root);
    let mut child = spawn_silenced(&mut t.copy("--to", &["--recursive", &bundle]));
    // Once the other side is writing more than a mebibyte into its pool,
    // it is receiving the big file: kill the copy there.
    let pool = t.dir.path().join("remote/.links");
    wait_until("the other side writes the big file", || {
        pool_temporaries(&pool).1 > 1 << 20
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // The other side sees the connection end in the middle of the archive,
    // and removes everything it had written; having imported nothing into
    // the store it made in the empty directory, it takes that back too: no
    // object, pool entry or temporary is left, nor any store.
    let remote = t.dir.path().join("remote");
    wait_until("the other side cleans up", || {
        std::fs::read_dir(&remote).is_ok_and(|mut d| d.next().is_none())
    });
}

/// How many `.tmp-*` files the pool holds, and their bytes.
fn pool_temporaries(pool: &Path) -> (usize, u64) {
    fruix_core::testing::entries_starting_with(pool, ".tmp-")
        .iter()
        .fold((0, 0), |(n, bytes), e| {
            (n + 1, bytes + e.metadata().map(|m| m.len()).unwrap_or(0))
        })
}

#[test]
fn a_copy_to_an_unknown_host_is_refused_before_anything_is_sent() {
    let t = TwoStores::new();
    let (bundle, _) = t.promoted(&sample_root(t.dir.path(), "root"));
    std::fs::write(t.sshd.known_hosts(), "").unwrap();
    let out = run(&mut t.copy("--to", &["--recursive", &bundle]));
    // The caller's known_hosts to fix (2), not a system failure (3).
    json_error(&out, 2, "SHA256:");
    assert!(t.remote_objects().is_empty());
}

/// The other side's command line is text: a store path that is not UTF-8
/// cannot be named on it exactly. It was sent altered (lossy); it is refused
/// now, before connecting, shown escaped once.
#[test]
fn a_remote_store_path_that_is_not_utf8_is_refused_before_connecting() {
    use std::os::unix::ffi::OsStrExt;
    let t = TwoStores::new();
    let (bundle, _) = t.promoted(&sample_root(t.dir.path(), "root"));
    let odd = t
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"store-\xff"));
    let out = run(t
        .copy("--to", &["--recursive", &bundle])
        .arg("--remote-store")
        .arg(&odd));
    json_error(&out, 2, "store-\\377 is not UTF-8");
    assert!(!odd.exists());
    assert!(t.remote_objects().is_empty());
}

#[test]
fn a_failing_remote_s_own_session_shaped_line_is_shown_not_taken() {
    // Only the wrapper's first stderr line is its `fruix-session PID`; the
    // same shape later is what the remote program said, and the error
    // shows it.
    let t = TwoStores::new();
    let (bundle, _) = t.promoted(&sample_root(t.dir.path(), "root"));
    script(
        &t.remote_program,
        "#!/bin/sh\necho 'fruix-session 1 is not my session' >&2\necho 'serve refused' >&2\nexit 1\n",
    );
    let out = run(&mut t.copy("--to", &["--recursive", &bundle]));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.ends_with(
            "ended with exit status 1:\n  fruix-session 1 is not my session\n  serve refused"
        ),
        "{message}"
    );
}

/// Copies a bundle each way, with `flags`, to a remote program that runs
/// `body` (sh) deaf to closed streams (it ends only when it is stopped),
/// its command line naming a marker: each copy must fail as a timeout
/// (system failure, exit 3) saying `says`, well before the 30 s a copy
/// gives a finished `store serve` to end, the other side's program (its
/// whole remote session) stopped before it returned, neither store changed.
fn stopped_by_a_limit(marker: &str, body: &str, flags: &[&str], says: &str) {
    let t = TwoStores::new();
    let (bundle, _) = t.promoted(&sample_root(t.dir.path(), "root"));
    let marker = t.dir.path().join(marker);
    script(
        &t.remote_program,
        &format!(
            "#!/bin/sh\nexec sh -c 'trap \"\" PIPE HUP; {body}' {}\n",
            marker.display()
        ),
    );
    let here = snapshot(&t.store());
    for direction in ["--to", "--from"] {
        let mut args = flags.to_vec();
        args.extend(["--recursive", &bundle]);
        let out = run_with_deadline(&mut t.copy(direction, &args), Duration::from_secs(20));
        json_error(&out, 3, says);
        let error: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(error["error"]["kind"], "system-failure", "{error:#}");
        let left = processes_mentioning(&marker);
        assert!(
            left.is_empty(),
            "{direction}: still running there: {left:?}"
        );
    }
    assert!(t.remote_objects().is_empty(), "{:?}", t.remote_objects());
    assert_eq!(snapshot(&t.store()), here);
}

/// Regression: a copy whose other side never answered (a hung `store
/// serve`, alive for SSH keepalives) waited forever. It stops once nothing
/// came for `--idle-timeout`.
#[test]
fn a_copy_whose_other_side_never_answers_stops_at_its_idle_timeout() {
    let silent = "while :; do sleep 1; done";
    stopped_by_a_limit(
        "hung-serve",
        silent,
        &["--idle-timeout", "1"],
        "timed out after 1s",
    );
}

/// Regression: a copy whose other side trickles (a byte every 0.2 s, never
/// a whole answer) is never idle, so `--idle-timeout` never stopped it: it
/// ran as long as the other side pleased. `--timeout` bounds the whole
/// copy, naming it.
#[test]
fn a_copy_whose_other_side_trickles_stops_at_its_timeout() {
    let trickle = r#"printf "{\"ok\":{\"store\":\""; while :; do printf x; sleep 0.2; done"#;
    let flags = ["--idle-timeout", "2", "--timeout", "3"];
    stopped_by_a_limit(
        "trickling-serve",
        trickle,
        &flags,
        "(--timeout) timed out after 3s",
    );
}

#[test]
fn an_idle_timeout_of_0_is_refused() {
    let out = run(fruix().args([
        "store",
        "copy",
        "--json",
        "--to",
        "ssh://nobody@127.0.0.1",
        "--idle-timeout",
        "0",
        "/nowhere",
    ]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "usage", "{error:#}");
}

/// A store holding one source object of the fixture tree plus 8 MiB (more
/// than every buffer between `store serve` and a client that does not
/// read), and that object's archive.
fn store_with_a_large_object(dir: &Path) -> (PathBuf, String, Vec<u8>) {
    let source = dir.join("source");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(fixture_source())
            .arg(&source),
    );
    std::fs::write(source.join("large"), vec![7u8; 8 << 20]).unwrap();
    let store = dir.join("store");
    let added = run_json(
        fruix()
            .args(["source", "add", "--json", "--store"])
            .arg(&store)
            .arg(&source),
    );
    let path = added["store_path"].as_str().unwrap().to_string();
    let archive = run(fruix()
        .args(["store", "export", "--store"])
        .arg(&store)
        .arg(&path));
    assert!(archive.status.success(), "{archive:?}");
    (store, path, archive.stdout)
}

/// `fruix store serve --idle-timeout 1` on `store`, whose stdin holds
/// `requests` (at most 32 KiB, in the pipe before the server starts) and
/// stays open, and whose stdout is not read until it ended: how it ended,
/// and what it had written.
fn serve_a_hung_client(store: &Path, requests: &[u8]) -> (std::process::Output, Vec<u8>) {
    use std::io::{Read, Write};
    assert!(requests.len() <= 32 << 10, "more than a pipe holds");
    let (stdin, mut client) = std::io::pipe().unwrap();
    client.write_all(requests).unwrap();
    let mut child = fruix()
        .args([
            "store",
            "serve",
            "--no-check-sigs",
            "--idle-timeout",
            "1",
            "--store",
        ])
        .arg(store)
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Without the limit, this waits forever: the test fails here.
    let out = wait_with_deadline(child, Duration::from_secs(60), "store serve");
    drop(client);
    let mut written = Vec::new();
    stdout.read_to_end(&mut written).unwrap();
    (out, written)
}

/// Regression: a `store serve` whose client stopped reading mid-export, or
/// sending mid-import (alive for SSH keepalives, but hung), waited forever,
/// holding the store's garbage collector lock: `store gc` on that machine
/// waited with it. It stops once nothing moved for `--idle-timeout`, a
/// typed timeout (exit 3), and a half-read import leaves nothing behind.
#[test]
fn a_serve_whose_client_hangs_stops_at_its_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, archive) = store_with_a_large_object(dir.path());
    let name = Path::new(&path).file_name().unwrap().to_str().unwrap();
    let hello = "{\"op\":\"hello\",\"version\":1}\n";

    let export = format!("{hello}{{\"op\":\"export\",\"names\":[\"{name}\"]}}\n");
    let (out, written) = serve_a_hung_client(&store, export.as_bytes());
    failed_with(
        "an export nobody reads",
        &out,
        3,
        &[
            "waiting for the client of `store serve`",
            "timed out after 1s",
        ],
    );
    assert!(written.len() < archive.len(), "{} bytes", written.len());
    // The lock is free: the collector runs (and takes the unrooted object).
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut gc = fruix();
    gc.args(["store", "gc", "--quiet", "--store"])
        .arg(&store)
        .arg("--state-dir")
        .arg(&state);
    let gc = run_with_deadline(&mut gc, Duration::from_secs(60));
    assert!(gc.status.success(), "{gc:?}");
    assert!(
        object_names(&store).is_empty(),
        "{:?}",
        object_names(&store)
    );

    let before = snapshot(&store);
    // The archive's first 30 KiB: its header and first files.
    let mut import = format!("{hello}{{\"op\":\"import\"}}\n").into_bytes();
    import.extend_from_slice(&archive[..30 << 10]);
    let (out, written) = serve_a_hung_client(&store, &import);
    failed_with(
        "part of an archive, then silence",
        &out,
        3,
        &[
            "waiting for the client of `store serve`",
            "an import under way keeps nothing",
        ],
    );
    let answers = String::from_utf8(written).unwrap();
    assert!(answers.starts_with("{\"ok\":{\"version\":1,"), "{answers}");
    assert_eq!(snapshot(&store), before);
    assert!(
        object_names(&store).is_empty(),
        "{:?}",
        object_names(&store)
    );
}

/// Regression: a copy whose `--remote-store` names no store over there
/// failed as a system failure (exit 3), "the other side closed the
/// connection without answering (is fruix installed there...)", then the
/// other side's "check --store". The other side answers its hello with a
/// typed error now: a usage error (exit 2) naming the path on the other
/// machine and `--remote-store`, whichever way the copy goes.
#[test]
fn a_remote_store_that_is_not_there_is_a_usage_error_naming_remote_store() {
    let t = TwoStores::new();
    let (bundle, _) = t.promoted(&sample_root(t.dir.path(), "root"));
    let file = t.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let here = snapshot(&t.store());
    // Not there, or a regular file where it is named.
    for (missing, direction) in [
        (t.dir.path().join("nonexistent"), "--to"),
        (t.dir.path().join("nonexistent"), "--from"),
        (file.clone(), "--to"),
        (file.join("store"), "--from"),
    ] {
        let out = run_with_deadline(
            t.copy(direction, &[&bundle])
                .arg("--remote-store")
                .arg(&missing),
            Duration::from_secs(60),
        );
        let says = format!(
            "no store at {} on the other machine ({}); check --remote-store",
            missing.display(),
            t.sshd.guest()
        );
        json_error(&out, 2, &says);
        let error: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(error["error"]["kind"], "usage", "{direction}: {error:#}");
        let message = error["error"]["message"].as_str().unwrap();
        for wrong in ["without answering", "check --store"] {
            assert!(!message.contains(wrong), "{direction}: {message}");
        }
        assert!(!missing.exists() || missing == file, "{direction}");
    }
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
    assert!(t.remote_objects().is_empty(), "{:?}", t.remote_objects());
    assert_eq!(snapshot(&t.store()), here);
}

/// Regression: a `copy --to` the other side refused for want of a
/// signature it trusts said "sign it where it was built, or import with
/// --no-check-sigs", which `copy --to` refuses (exit 2). It points at the
/// other machine's trusted keys now, which decide what it accepts.
#[test]
fn a_copy_to_refused_for_its_signatures_points_at_the_other_machine_s_trusted_keys() {
    let t = TwoStores::new();
    let root = sample_root(t.dir.path(), "root");
    let unsigned = promote_report(&t.store(), &root, &[])["result_store"]
        .as_str()
        .unwrap()
        .to_string();
    let (stranger, _) = key(t.dir.path(), "stranger");
    let root = sample_root_of(t.dir.path(), "other-root", "local");
    let strangers = promote_report(
        &t.store(),
        &root,
        &["--sign-with", stranger.to_str().unwrap()],
    )["result_store"]
        .as_str()
        .unwrap()
        .to_string();
    let cases = [
        ("unsigned", &unsigned, "it is not signed"),
        (
            "signed by a stranger",
            &strangers,
            "signed only by keys the other machine does not trust (stranger)",
        ),
    ];
    for (what, bundle, says) in cases {
        let out = run_with_deadline(
            &mut t.copy("--to", &["--recursive", bundle]),
            Duration::from_secs(60),
        );
        json_error(&out, 4, says);
        let error: Value = serde_json::from_slice(&out.stdout).unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("the other machine's trusted keys"),
            "{what}: {message}"
        );
        assert!(!message.contains("--no-check-sigs"), "{what}: {message}");
        assert!(!message.contains("--trusted-key"), "{what}: {message}");
        assert!(t.remote_objects().is_empty(), "{what}");
    }
}
