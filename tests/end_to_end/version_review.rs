//! Regressions from a review of two fruix versions on one store: a store
//! protocol, archive format or registry schema of another version is said
//! to be one, naming both versions, and exits 2 (it exited 3 as a "system
//! failure", or 4 as malformed input).
//!
//! The peer is the real `fruix store serve` fed another version's hello,
//! or a shell script answering the hello as another version would; the
//! registry's version is set with SQLite.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::sshd::{script, Sshd};
use crate::util::{
    failed_with, fruix, json_error, listing, on_store, promoted_store, run, run_with_deadline,
    ssh_store_copy, store_export,
};

/// The version of the store protocol (and archive format) that no fruix
/// speaks yet.
const NEXT: u32 = 2;

/// `fruix store serve --store STORE` given `input` on its stdin: its exit
/// code, stdout and stderr.
fn serve(store: &Path, input: &str) -> (Option<i32>, String, String) {
    let mut child = fruix()
        .args(["store", "serve", "--store"])
        .arg(store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Regression: `store serve` answered a hello of another version with
/// `store protocol: the client speaks version 2, this fruix version 1`,
/// and exited 3 (a system failure, which a retry may get past). It answers
/// with its own version, typed (`"version":1`), says which side spoke
/// which, and exits 2.
#[test]
fn store_serve_answers_another_version_s_hello_with_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let hello = format!("{{\"op\":\"hello\",\"version\":{NEXT}}}\n");
    let (code, stdout, stderr) = serve(&store, &hello);
    assert_eq!(code, Some(2), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(answer["error"]["version"], 1, "{answer}");
    for said in [
        format!("the client (a `fruix store copy` on the other machine) speaks store protocol version {NEXT}, this fruix"),
        "version 1".to_string(),
    ] {
        assert!(stderr.contains(&said), "{said:?}: {stderr}");
    }
    assert!(!stderr.contains("system failure"), "{stderr}");
    // This version's hello is answered as before.
    let (code, stdout, stderr) = serve(&store, "{\"op\":\"hello\",\"version\":1}\n");
    assert_eq!(code, Some(0), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(answer["ok"]["version"], 1, "{answer}");
}

/// Regression: a `store copy` whose other side speaks another protocol
/// version failed as `the other store: system failure: store protocol:
/// …` (exit 3), naming neither side nor `--remote-program`; and one that
/// answered the hello in another version was spoken to. Both exit 2 now,
/// saying the other side's version and this one's, text and `--json`, and
/// nothing is sent after the hello.
#[test]
fn a_copy_with_a_peer_of_another_protocol_version_is_refused_at_the_hello() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let world = report["artifacts"]["world"]["store_path"]
        .as_str()
        .unwrap()
        .to_string();
    let sshd = Sshd::trusted();
    let answers = [
        format!("{{\"ok\":{{\"version\":{NEXT},\"store\":\"{}\"}}}}", store.display()),
        format!("{{\"error\":{{\"problem\":null,\"version\":{NEXT},\"message\":\"the client speaks version 1\"}}}}"),
    ];
    for (i, hello) in answers.iter().enumerate() {
        let program = dir.path().join(format!("serve-{i}"));
        let received = dir.path().join(format!("received-{i}"));
        script(
            &program,
            &format!(
                "#!/bin/sh\nIFS= read -r hello\nprintf '%s\\n' '{hello}'\ncat > {}\n",
                received.display()
            ),
        );
        for json in [false, true] {
            let flags: &[&str] = if json { &["--json"] } else { &[] };
            let mut cmd = ssh_store_copy(&sshd, flags, "--to", &program, &store, &store);
            cmd.arg(&world);
            let out = run_with_deadline(&mut cmd, Duration::from_secs(120));
            let said = format!(
                "the `fruix store serve` on the other machine speaks store protocol version {NEXT}, this fruix"
            );
            let stderr = failed_with(hello, &out, 2, &[&said, "--remote-program"]);
            assert!(!stderr.contains("system failure"), "{stderr}");
            if json {
                json_error(&out, 2, &said);
                let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(error["error"]["kind"], "usage", "{error}");
            }
            assert_eq!(std::fs::read(&received).unwrap(), b"", "{hello}");
        }
    }
}

/// Regression: an archive of another format version was refused as
/// malformed input (exit 4, "not a fruix archive, or another version"). It
/// is said to be one (exit 2), and the store is not changed.
#[test]
fn an_archive_of_another_format_version_is_refused_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
    let archive = dir.path().join("world.arc");
    let out = run(&mut store_export(&store, &archive, &[], world));
    assert!(out.status.success(), "{out:?}");
    let bytes = std::fs::read(&archive).unwrap();
    let first = b"fruix-archive 1\n";
    assert!(bytes.starts_with(first));
    let next = format!("fruix-archive {NEXT}\n");
    std::fs::write(&archive, [next.as_bytes(), &bytes[first.len()..]].concat()).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut cmd = on_store(&["store", "import", "--no-check-sigs"], &[], &empty);
    let out = run(cmd.arg(&archive));
    let said = format!("archive: format version {NEXT}, this fruix");
    failed_with(
        "another archive version",
        &out,
        2,
        &[&said, "the store was not changed"],
    );
    let objects: Vec<_> = listing(&empty)
        .into_iter()
        .filter(|p| {
            !p.strip_prefix(&empty).unwrap().starts_with(".fruix")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}

/// Regression: a registry of a newer schema was refused clearly, but as a
/// system failure (exit 3), which the README did not list. It exits 2,
/// naming both versions, for a command that reads the store and for one
/// that writes it, and the registry is left as it was.
#[test]
fn a_registry_of_a_newer_schema_is_refused_as_another_version() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let registry = store.join(".fruix/db.sqlite");
    let conn = rusqlite::Connection::open(&registry).unwrap();
    conn.pragma_update(None, "user_version", 3).unwrap();
    drop(conn);
    let before = std::fs::read(&registry).unwrap();
    for words in [
        &["store", "list"][..],
        &["store", "verify"],
        &["store", "gc"],
    ] {
        let out = run(&mut on_store(words, &[], &store));
        let stderr = failed_with(
            &words.join(" "),
            &out,
            2,
            &["its schema version 3 is newer than this fruix", "version 2"],
        );
        assert!(stderr.contains("db.sqlite"), "{stderr}");
    }
    assert!(std::fs::read(&registry).unwrap() == before);
}
