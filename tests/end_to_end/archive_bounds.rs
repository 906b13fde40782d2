//! Regressions from a review of archives and the `store serve` protocol:
//! a tampered body of an object the importing store already has is
//! refused, and one protocol line of short names is refused promptly, in
//! bounded memory, by `store serve` and by `store copy`'s client alike.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fruix_core::testing::find_bytes;
use sha2::{Digest, Sha256};

use crate::sshd::{script, Sshd};
use crate::util::{
    fruix, promoted_store, run_failing, run_ok, ssh_store_copy, store_export, store_import,
};

/// Every entry under `dir`, the store's own (`.fruix`, `.links`, `.locks`)
/// included, with its type, mode, size, link count, and a regular file's
/// content hash; sorted. SQLite's shared-memory index (`-shm`), which
/// readers write, counts by its size only.
fn listing(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            let m = path.symlink_metadata().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let content = if m.is_file() && !name.ends_with("-shm") {
                hex::encode(Sha256::digest(std::fs::read(&path).unwrap()))
            } else {
                String::new()
            };
            if m.is_dir() {
                stack.push(path.clone());
            }
            out.push(format!(
                "{} {:o} {} {} {content}",
                path.display(),
                m.mode(),
                m.len(),
                m.nlink()
            ));
        }
    }
    out.sort();
    out
}

/// Regression: an archive whose file body was tampered with was imported
/// (exit 0) when the store already had that object: the body was read and
/// dropped unhashed, and the line's own digest taken as what it hashed to.
/// It is refused now (exit 4), as for an object the store lacks, and the
/// store (its registry and pool included) is not changed.
#[test]
fn a_tampered_body_of_an_object_the_store_has_is_refused_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let bundle = report["result_store"].as_str().unwrap();
    let file = dir.path().join("archive");
    run_ok(&mut store_export(&store, &file, &["--recursive"], bundle));
    let archive = std::fs::read(&file).unwrap();
    // The archive as exported imports: every object is already there.
    let out = run_ok(&mut store_import(
        &store,
        &file,
        &["--json", "--no-check-sigs"],
    ));
    let imported: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(imported["imported"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(imported["present"].as_array().unwrap().len(), 5, "{out}");
    // One byte of a file's body flipped: its line, and so the tree
    // signature the metadata commits to, are unchanged.
    let body = find_bytes(&archive, b"\x7fELF").expect("a file's body");
    let mut tampered = archive.clone();
    tampered[body + 10] ^= 1;
    std::fs::write(&file, &tampered).unwrap();
    let before = listing(&store);
    for flags in [&["--no-check-sigs"][..], &[]] {
        run_failing(
            &mut store_import(&store, &file, flags),
            4,
            &[
                "does not hash to what its line says",
                "the store was not changed",
            ],
        );
        assert_eq!(listing(&store), before, "{flags:?}");
    }
}

/// A request line, or an answer line, of `""` names: as many as fit just
/// under the protocol's 64 MiB line cap (some 22 million), each costing
/// the reader far more than its three bytes once parsed.
fn line_of_empty_names(start: &str, end: &str) -> Vec<u8> {
    let room = (64 << 20) - start.len() - end.len() - 16;
    let mut line = Vec::with_capacity(64 << 20);
    line.extend_from_slice(start.as_bytes());
    line.extend_from_slice(b"\"\"");
    while line.len() < room {
        line.extend_from_slice(b",\"\"");
    }
    line.extend_from_slice(end.as_bytes());
    line.push(b'\n');
    line
}

/// How a child ended, and the most memory it held.
struct Ended {
    code: Option<i32>,
    /// Peak resident set size, in KiB (`ru_maxrss`).
    max_rss_kib: i64,
}

/// Runs `cmd` with `stdin` on its standard input and its standard output
/// and error in files of `dir` (returned with how it ended), failing when
/// it outlives `deadline`. Reaped with `wait4`, for its peak memory.
fn run_measured(
    cmd: &mut Command,
    stdin: Stdio,
    dir: &Path,
    deadline: Duration,
) -> (Ended, String, String) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let child = cmd
        .stdin(stdin)
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: plain out-parameters; `pid` is our child, reaped here only.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let _ = tx.send(Ended {
            code,
            max_rss_kib: usage.ru_maxrss,
        });
    });
    let ended = match rx.recv_timeout(deadline) {
        Ok(ended) => ended,
        Err(_) => {
            // SAFETY: our child, not yet reaped (the waiting thread has
            // not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{cmd:?} did not end within {deadline:?}");
        }
    };
    drop(child);
    let read = |p: &PathBuf| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    (ended, read(&out), read(&err))
}

/// Well over what a refused line needs (the line itself, and at most a
/// million names), well under what one of 22 million names took.
const MAX_RSS_KIB: i64 = 256 << 10;

/// Checks that `what` ended refusing a message of too many names (exit 3),
/// its peak memory under [`MAX_RSS_KIB`].
fn refused_in_bounds(what: &str, ended: &Ended, stderr: &str) {
    assert!(
        ended.max_rss_kib < MAX_RSS_KIB,
        "{what} held {} KiB: {stderr}",
        ended.max_rss_kib
    );
    assert_eq!(ended.code, Some(3), "{stderr}");
    assert!(
        stderr.contains("more than 1000000 names in one message"),
        "{stderr}"
    );
}

/// Regression: one `valid` request of some 22 million `""` names, within
/// the 64 MiB line cap, took `store serve` about 1.3 GB and minutes of CPU
/// (each name parsed into serde's buffer, then a vector, then looked up).
/// A request lists at most 1,000,000 names now (an archive's object cap),
/// refused as it is parsed, with an answer that says so.
#[test]
fn a_request_of_millions_of_names_is_refused_promptly_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let mut requests = b"{\"op\":\"hello\",\"version\":1}\n".to_vec();
    requests.extend(line_of_empty_names("{\"op\":\"valid\",\"names\":[", "]}"));
    let file = dir.path().join("requests");
    std::fs::write(&file, &requests).unwrap();
    drop(requests);
    let mut serve = fruix();
    serve
        .args(["store", "serve", "--no-check-sigs", "--store"])
        .arg(&store);
    let stdin = Stdio::from(File::open(&file).unwrap());
    let (ended, stdout, stderr) =
        run_measured(&mut serve, stdin, dir.path(), Duration::from_secs(60));
    refused_in_bounds("store serve", &ended, &stderr);
    // The hello answered, then the refusal, as an answer.
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{stdout}");
    assert_eq!(answers[0]["ok"]["version"], 1, "{stdout}");
    let refused = answers[1]["error"]["message"].as_str().unwrap();
    assert!(refused.contains("more than 1000000 names"), "{refused}");
}

/// Regression: the client side likewise: a `closure` answer of some 22
/// million `""` names took `store copy --from --recursive` some 600 MB. An
/// answer lists at most 1,000,000 names now, refused as it is parsed
/// (a system failure: the other side broke the protocol).
#[test]
fn a_closure_answer_of_millions_of_names_is_refused_promptly_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // A peer answering the hello, then the closure asked for.
    let answers = dir.path().join("answers");
    std::fs::create_dir(&answers).unwrap();
    let hello = serde_json::json!({"ok": {"version": 1, "store": store}});
    std::fs::write(answers.join("1"), format!("{hello}\n")).unwrap();
    std::fs::write(
        answers.join("2"),
        line_of_empty_names("{\"ok\":{\"names\":[", "]}}"),
    )
    .unwrap();
    let peer = dir.path().join("peer");
    script(
        &peer,
        &format!(
            "#!/bin/sh\nn=0\nwhile IFS= read -r request; do\n  n=$((n + 1))\n  cat {}/$n || exit 1\ndone\n",
            answers.display()
        ),
    );
    let sshd = Sshd::trusted();
    let name = format!("{}-fruix-native-world-15.0-STABLE-local", "0".repeat(40));
    let mut copy = ssh_store_copy(
        &sshd,
        &["--recursive", "--no-check-sigs"],
        "--from",
        &peer,
        &store,
        &store,
    );
    copy.arg(store.join(name));
    let (ended, _, stderr) = run_measured(
        &mut copy,
        Stdio::null(),
        dir.path(),
        Duration::from_secs(120),
    );
    refused_in_bounds("store copy", &ended, &stderr);
}
