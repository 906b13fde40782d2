//! Regressions from a review of `store copy` against a peer that misbehaves
//! once its work is done (bytes after the archive or after its last answer,
//! an exit status other than 0, a kill), or whose closure answer names what
//! is no store object; and of an archive's file line whose size is over the
//! archive's byte cap.
//!
//! The peer is the real `fruix store serve` (in a mount namespace of its
//! own, as in `store_copy`), run by a shell script that misbehaves once it
//! has ended.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::sshd::{bind_mounted_fruix, script, Sshd};
use crate::util::{
    failed_with, listing, object_names, promoted_store, require_tool, run_with_deadline,
    spawn_writing_stdin, ssh_store_copy, store_export, wait_with_deadline,
};

/// A store at `dir/store` and another machine's at `dir/NAME` (seen at the
/// same path by its `store serve`): the sample objects are in one of them.
struct Peer {
    dir: tempfile::TempDir,
    sshd: Sshd,
    /// The sample world artifact's path.
    world: PathBuf,
}

impl Peer {
    /// The sample objects in this store (`there` is `None`) or in the other
    /// store `dir/there`, the other one empty.
    fn new(there: Option<&str>) -> Peer {
        require_tool("unshare", "util-linux");
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = promoted_store(dir.path());
        let world = PathBuf::from(report["artifacts"]["world"]["store_path"].as_str().unwrap());
        if let Some(there) = there {
            std::fs::rename(&store, dir.path().join(there)).unwrap();
            std::fs::create_dir(&store).unwrap();
        }
        Peer {
            dir,
            sshd: Sshd::trusted(),
            world,
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A `--remote-program` that serves the store `dir/there` (made empty
    /// when missing) with the real fruix, without signature checks, then
    /// runs the shell snippet `after`.
    fn serving(&self, name: &str, there: &str, after: &str) -> PathBuf {
        let there = self.dir.path().join(there);
        if !there.exists() {
            std::fs::create_dir(&there).unwrap();
        }
        let fruix = self.dir.path().join(format!("{name}-fruix"));
        bind_mounted_fruix(&fruix, "", &there, &self.store());
        let program = self.dir.path().join(name);
        script(
            &program,
            &format!(
                "#!/bin/sh\n{} \"$@\" --no-check-sigs\n{after}\n",
                fruix.display()
            ),
        );
        program
    }

    /// `fruix store copy FLAGS DIRECTION` of the world artifact with
    /// `program` serving the other store, within two minutes.
    fn copy(&self, direction: &str, program: &Path, flags: &[&str]) -> Output {
        let store = self.store();
        let mut cmd = ssh_store_copy(&self.sshd, flags, direction, program, &store, &store);
        cmd.arg(&self.world);
        run_with_deadline(&mut cmd, Duration::from_secs(120))
    }

    /// What is in `dir/store`: nothing, after a failed `copy --from` into
    /// it (no store left behind, nothing imported).
    fn left_empty(&self) -> Vec<PathBuf> {
        listing(&self.store())
    }
}

/// Regression: a `store serve` that sent the archive asked for, then more
/// bytes, or that then exited 9 or was killed, made `copy --from` succeed
/// (exit 0) and import. Trailing bytes refuse the archive as a local
/// import of the same bytes does (exit 4); a failing other side fails the
/// copy (exit 3) with its exit status and its stderr; either way before
/// anything is published, and the store the copy made is taken back.
#[test]
fn a_copy_from_a_peer_that_does_not_end_cleanly_after_the_archive_imports_nothing() {
    let t = Peer::new(Some("there"));
    let cases: [(&str, &str, i32, &[&str]); 3] = [
        (
            "bytes after the archive",
            "printf 'EXTRA BYTES\\n'",
            4,
            // The bytes are shown (a remote shell's goodbye shows as itself).
            &["data follows the archive's last line (end-archive): \"EXTRA BYTES\\n\""],
        ),
        (
            "exit status 9 after the archive",
            "echo 'remote crashed after sending' >&2; exit 9",
            3,
            &[
                "did not end cleanly",
                "ended with exit status 9",
                "remote crashed after sending",
            ],
        ),
        (
            "killed after the archive",
            // The remote command's shell too: the one whose end SSH reports.
            "kill -KILL $PPID $$",
            3,
            &["did not end cleanly", "was killed by signal KILL"],
        ),
    ];
    for (n, (what, after, status, says)) in cases.into_iter().enumerate() {
        let program = t.serving(&format!("misbehaving-{n}"), "there", after);
        let out = t.copy("--from", &program, &["--no-check-sigs"]);
        let stderr = failed_with(what, &out, status, says);
        assert!(stderr.contains("was not changed"), "{what}: {stderr}");
        assert_eq!(t.left_empty(), Vec::<PathBuf>::new(), "{what}");
    }
    let honest = t.serving("honest", "there", "");
    let out = t.copy("--from", &honest, &["--no-check-sigs"]);
    assert!(out.status.success(), "{out:?}");
    let name = t.world.file_name().unwrap().to_str().unwrap();
    assert_eq!(object_names(&t.store()), [name]);
    // With nothing to fetch, the closure answer is the last: bytes after
    // it fail the copy as well.
    let program = t.serving("more-after-closure", "there", "printf 'EXTRA\\n'");
    let out = t.copy("--from", &program, &["--no-check-sigs", "--recursive"]);
    failed_with(
        "bytes after the closure answer",
        &out,
        3,
        &["the other side sent more after its last answer: \"EXTRA\\n\""],
    );
}

/// Regression: a `store serve` that imported what `copy --to` sent, then
/// sent more bytes or exited 9, made the copy succeed (exit 0). The copy
/// fails now (exit 3), saying that the other store had answered that it
/// imported the objects.
#[test]
fn a_copy_to_a_peer_that_does_not_end_cleanly_after_its_answer_fails() {
    let t = Peer::new(None);
    let cases: [(&str, &str, &[&str]); 2] = [
        (
            "bytes after the answer",
            "printf 'EXTRA\\n'",
            &["the other side sent more after its last answer: \"EXTRA\\n\""],
        ),
        (
            "exit status 9 after the answer",
            "echo 'remote crashed after importing' >&2; exit 9",
            &[
                "did not end cleanly",
                "ended with exit status 9",
                "remote crashed after importing",
            ],
        ),
    ];
    for (n, (what, after, says)) in cases.into_iter().enumerate() {
        let there = format!("there-{n}");
        let program = t.serving(&format!("misbehaving-{n}"), &there, after);
        let out = t.copy("--to", &program, &[]);
        let stderr = failed_with(what, &out, 3, says);
        assert!(
            stderr.contains("the other store had answered that it imported 1 object(s)"),
            "{what}: {stderr}"
        );
        // What it imported stays there: said, not hidden.
        let name = t.world.file_name().unwrap().to_str().unwrap();
        assert_eq!(object_names(&t.dir.path().join(&there)), [name], "{what}");
    }
    // Regression: one slow to exit, past the idle timeout, failed the copy
    // without saying that the other store keeps what it imported.
    let program = t.serving("slow", "there-slow", "sleep 60");
    let out = t.copy("--to", &program, &["--idle-timeout", "2"]);
    let stderr = failed_with("slow to exit", &out, 3, &["timed out"]);
    assert!(
        stderr
            .contains("the other store had answered that it imported 1 object(s), which it keeps"),
        "{stderr}"
    );
    let honest = t.serving("honest", "there-honest", "");
    let out = t.copy("--to", &honest, &[]);
    assert!(out.status.success(), "{out:?}");
}

/// Regression: a name in the other store's closure answer that is no
/// store object name was reported as one the user "was asked for"; the
/// refusal names the closure answer now (exit 4), and nothing is made.
#[test]
fn a_bad_name_in_the_closure_answer_is_blamed_on_that_answer() {
    let t = Peer::new(Some("there"));
    let store = t.store();
    let world = t.world.file_name().unwrap().to_str().unwrap();
    let answers = [
        serde_json::json!({"ok": {"version": 1, "store": store}}),
        serde_json::json!({"ok": {"names": ["../../etc/passwd", world]}}),
    ];
    let answers_file = t.dir.path().join("answers");
    std::fs::write(&answers_file, format!("{}\n{}\n", answers[0], answers[1])).unwrap();
    let program = t.dir.path().join("hostile-serve");
    script(
        &program,
        &format!(
            "#!/bin/sh\nexec 3<{}\nwhile IFS= read -r request; do\n  IFS= read -r answer <&3 || exit 1\n  printf '%s\\n' \"$answer\"\ndone\n",
            answers_file.display()
        ),
    );
    let out = t.copy("--from", &program, &["--no-check-sigs", "--recursive"]);
    let stderr = failed_with(
        "a path in the closure answer",
        &out,
        4,
        &["the other store's closure answer names \"../../etc/passwd\", which is not a store object name"],
    );
    assert!(!stderr.contains("was asked for, which"), "{stderr}");
    assert_eq!(t.left_empty(), Vec::<PathBuf>::new());
}

/// Regression: a file line whose size is over the archive's byte cap was
/// read until the input ended, then reported as an archive cut short. It
/// is refused as over the cap (exit 4) as soon as the line is read, while
/// the input is still open.
#[test]
fn a_file_line_over_the_byte_cap_is_refused_as_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let archive_file = dir.path().join("archive");
    let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
    crate::util::run_ok(&mut store_export(&store, &archive_file, &[], world));
    let archive = std::fs::read(&archive_file).unwrap();
    std::fs::rename(&store, dir.path().join("exported")).unwrap();
    // The first file line, claiming 10^14 bytes, and a few of its bytes.
    let text = String::from_utf8_lossy(&archive);
    let line_start = text
        .find(" type=file ")
        .map(|i| text[..i].rfind('\n').unwrap() + 1);
    let line_end = line_start.map(|s| s + text[s..].find('\n').unwrap() + 1);
    let (line_start, line_end) = (line_start.unwrap(), line_end.unwrap());
    let line = &text[line_start..line_end];
    let size = line.split(' ').find(|w| w.starts_with("size=")).unwrap();
    let huge = line.replace(size, "size=100000000000000");
    let sent = [
        &archive[..line_start],
        huge.as_bytes(),
        &archive[line_end..line_end + 3],
    ]
    .concat();
    let mut import = crate::util::store_import(&store, Path::new("-"), &["--no-check-sigs"]);
    let (child, mut stdin) = spawn_writing_stdin(&mut import);
    stdin.write_all(&sent).unwrap();
    stdin.flush().unwrap();
    // The input stays open: the refusal cannot wait for its end.
    let out = wait_with_deadline(child, Duration::from_secs(60), "store import");
    drop(stdin);
    failed_with(
        "a file line over the byte cap",
        &out,
        4,
        &["100000000000000 bytes", "over the archive's", "byte cap"],
    );
}
