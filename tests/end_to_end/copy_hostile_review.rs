//! Regressions from a review of `store export` and `store copy` against a
//! store whose objects changed or went since they were stored, and against
//! a peer that serves another store, names its store with control
//! characters, or ends its session in the middle.
//!
//! The peer is the real `fruix store serve` (in a mount namespace of its
//! own, as in `store_copy`), or a shell script answering the hello.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::signing::key;
use crate::sshd::{bind_mounted_fruix, script, Sshd};
use crate::util::{
    failed_with, fixture_source, listing, object_names, on_store, promoted_store, require_tool,
    run_json, run_ok, run_with_deadline, ssh_store_copy, store_export,
};
use fruix_core::testing::conformance::processes_mentioning;

/// A store at `dir/store` holding the sample objects, and an SSH server to
/// copy them through.
struct Peer {
    dir: tempfile::TempDir,
    sshd: Sshd,
    /// The sample world artifact's path.
    world: PathBuf,
    /// The sample result bundle's path.
    bundle: PathBuf,
}

impl Peer {
    fn new() -> Peer {
        require_tool("unshare", "util-linux");
        let dir = tempfile::tempdir().unwrap();
        let (_, report) = promoted_store(dir.path());
        let path = |v: &serde_json::Value| PathBuf::from(v.as_str().unwrap());
        Peer {
            world: path(&report["artifacts"]["world"]["store_path"]),
            bundle: path(&report["result_store"]),
            dir,
            sshd: Sshd::trusted(),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A `--remote-program` serving the store `dir/there` (made empty when
    /// missing) at this store's path, without signature checks.
    fn serving(&self, there: &str) -> PathBuf {
        self.serving_with(there, "--no-check-sigs")
    }

    /// [`Peer::serving`], `store serve` given `flags` (shell words).
    fn serving_with(&self, there: &str, flags: &str) -> PathBuf {
        let there = self.dir.path().join(there);
        std::fs::create_dir_all(&there).unwrap();
        let fruix = self.dir.path().join(format!("{}-fruix", there.display()));
        bind_mounted_fruix(&fruix, "", &there, &self.store());
        let program = self.dir.path().join(format!("{}-serve", there.display()));
        script(
            &program,
            &format!("#!/bin/sh\n{} \"$@\" {flags}\n", fruix.display()),
        );
        program
    }

    /// A `--remote-program` that answers the hello with `hello` (a JSON
    /// line), then keeps what else it is sent in `dir/NAME-received`.
    fn answering(&self, name: &str, hello: &serde_json::Value) -> (PathBuf, PathBuf) {
        let program = self.dir.path().join(name);
        let received = self.dir.path().join(format!("{name}-received"));
        script(
            &program,
            &format!(
                "#!/bin/sh\nIFS= read -r hello\nprintf '%s\\n' '{hello}'\ncat > {}\n",
                received.display()
            ),
        );
        (program, received)
    }

    /// `fruix store copy FLAGS DIRECTION OBJECT`, `program` serving
    /// `remote_store` there, within two minutes.
    fn copy(
        &self,
        direction: &str,
        program: &Path,
        remote_store: &Path,
        flags: &[&str],
        object: &Path,
    ) -> Output {
        let store = self.store();
        let mut cmd = ssh_store_copy(&self.sshd, flags, direction, program, remote_store, &store);
        cmd.arg(object);
        run_with_deadline(&mut cmd, Duration::from_secs(120))
    }

    /// `fruix store export FLAGS -o dir/out/x.arc OBJECT`: its output and
    /// what it left in `dir/out`.
    fn export(&self, flags: &[&str], object: &Path) -> (Output, Vec<PathBuf>) {
        let out = self.dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let mut cmd = store_export(&self.store(), &out.join("x.arc"), flags, object);
        let output = run_with_deadline(&mut cmd, Duration::from_secs(120));
        (output, listing(&out))
    }
}

/// The first regular file in a directory of `object`'s tree (none of its
/// metadata files, which lie at its top).
fn a_file(object: &Path) -> PathBuf {
    listing(object)
        .into_iter()
        .find(|p| {
            p.parent() != Some(object)
                && p.symlink_metadata().is_ok_and(|m| m.file_type().is_file())
        })
        .expect("a file in the object's tree")
}

/// Rewrites `file` (read-only in the store) as `change` says, in place.
fn tamper(file: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(file).unwrap();
    change(&mut bytes);
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(file, &bytes).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
}

/// Regression: a file grown since it was stored was exported cut to its
/// recorded size, and one changed in place with its new bytes under its
/// old digest, by `store export` and by `copy --to` alike (exit 0). Both
/// fail now as on a corrupt object (exit 4), naming the object and the
/// file, with no archive left and nothing kept by the other store.
#[test]
fn an_export_or_copy_of_a_file_changed_since_it_was_stored_fails_as_corrupt() {
    let t = Peer::new();
    let file = a_file(&t.world);
    let name = file.file_name().unwrap().to_str().unwrap();
    let original = std::fs::read(&file).unwrap();
    type Change = fn(&mut Vec<u8>);
    let changes: [(&str, Change); 2] = [
        ("grown", |b| b.extend_from_slice(b"appended")),
        ("changed in place", |b| b[0] ^= 1),
    ];
    for (n, (what, change)) in changes.into_iter().enumerate() {
        tamper(&file, |b| {
            *b = original.clone();
            change(b)
        });
        let says = [
            "store object is corrupt",
            name,
            "fruix store verify --repair",
        ];
        let (out, left) = t.export(&[], &t.world);
        failed_with(what, &out, 4, &says);
        assert_eq!(left, Vec::<PathBuf>::new(), "{what}");
        let there = format!("there-{n}");
        let program = t.serving(&there);
        let out = t.copy("--to", &program, &t.store(), &[], &t.world);
        failed_with(what, &out, 4, &says);
        let kept = object_names(&t.dir.path().join(&there));
        assert_eq!(kept, Vec::<String>::new(), "{what}");
    }
}

/// Regression: an object registered but whose directory is gone failed
/// `export -r` as an I/O error (exit 3), `copy -r --to` after sending the
/// objects before it (exit 3), and `copy --from` a store missing it as an
/// archive cut short (exit 4). Each finds it before anything is written,
/// as `store verify` does: registered, its directory gone (exit 4).
#[test]
fn a_registered_object_whose_directory_is_gone_fails_before_anything_is_written() {
    let t = Peer::new();
    let away = t.dir.path().join("away");
    std::fs::rename(&t.world, &away).unwrap();
    let says = ["its directory is gone", "fruix store verify --repair"];
    let (out, left) = t.export(&["--recursive"], &t.bundle);
    failed_with("export -r", &out, 4, &says);
    assert_eq!(left, Vec::<PathBuf>::new());
    let program = t.serving("there");
    let out = t.copy("--to", &program, &t.store(), &["--recursive"], &t.bundle);
    failed_with("copy -r --to", &out, 4, &says);
    assert_eq!(
        object_names(&t.dir.path().join("there")),
        Vec::<String>::new()
    );
    // The other way: this store empty, the other one missing the object.
    std::fs::rename(t.store(), t.dir.path().join("other")).unwrap();
    std::fs::create_dir(t.store()).unwrap();
    let program = t.serving("other");
    let flags = ["--no-check-sigs"];
    let out = t.copy("--from", &program, &t.store(), &flags, &t.world);
    failed_with("copy --from", &out, 4, &[says[0], "on the other machine"]);
    assert_eq!(object_names(&t.store()), Vec::<String>::new());
}

/// Regression: `copy --to` a store at another path (`--remote-store`)
/// sent the whole archive before that store refused it, and a peer
/// naming its store with an escape sequence was sent the objects. The
/// copy compares the path the hello answers with this store's, and
/// refuses (exit 2) before it sends anything, the path escaped.
#[test]
fn a_copy_to_a_store_at_another_path_is_refused_before_anything_is_sent() {
    let t = Peer::new();
    // Empty, as a store is made only there.
    let other = t.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let program = t.dir.path().join("plain-serve");
    script(
        &program,
        &format!(
            "#!/bin/sh\nexec {} \"$@\" --no-check-sigs\n",
            env!("CARGO_BIN_EXE_fruix")
        ),
    );
    let out = t.copy("--to", &program, &other, &[], &t.world);
    failed_with(
        "another store",
        &out,
        2,
        &["serves the store at", "nothing was copied"],
    );
    assert_eq!(object_names(&other), Vec::<String>::new());
    // Nor is a store left in the empty directory (`store serve` made one
    // there to answer the hello, and takes it back once it imported
    // nothing); the serving side may end just after the copy did.
    fruix_core::testing::wait_until("the empty remote directory is empty again", || {
        std::fs::read_dir(&other).unwrap().next().is_none()
    });
    let hello = serde_json::json!({"ok": {"version": 1, "store": "/s/\u{1b}[31mred"}});
    let (program, received) = t.answering("escape-serve", &hello);
    let flags = ["--idle-timeout", "10"];
    let out = t.copy("--to", &program, &t.store(), &flags, &t.world);
    let stderr = failed_with("an escape", &out, 2, &["/s/\\033[31mred"]);
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert_eq!(std::fs::read(&received).unwrap(), b"");
}

/// Regression: a `--remote-store` holding a line break failed as the
/// other side's error (exit 3), escaped twice (`nl\\nx`). It is refused
/// here (exit 2), as a local `--store` is, escaped once.
#[test]
fn a_remote_store_path_with_a_control_character_is_refused_here() {
    let t = Peer::new();
    let program = t.serving("there");
    let out = t.copy("--to", &program, Path::new("/tmp/nl\nx"), &[], &t.world);
    let stderr = failed_with(
        "a line break",
        &out,
        2,
        &["/tmp/nl\\nx", "control character"],
    );
    assert!(!stderr.contains("nl\\\\nx"), "{stderr}");
}

/// Regression: a peer that answered the hello, then ended, was asked
/// whether fruix was installed there. The copy says now that the session
/// ended in its middle, at the request it was answering.
#[test]
fn a_peer_that_ends_after_the_hello_ends_the_session_in_its_middle() {
    let t = Peer::new();
    let hello = serde_json::json!({"ok": {"version": 1, "store": t.store()}});
    let program = t.dir.path().join("ending-serve");
    script(
        &program,
        &format!("#!/bin/sh\nIFS= read -r hello\nprintf '%s\\n' '{hello}'\n"),
    );
    let out = t.copy("--to", &program, &t.store(), &[], &t.world);
    let stderr = failed_with(
        "ended after the hello",
        &out,
        3,
        &["the other side closed the connection in the middle of the session (valid)"],
    );
    assert!(!stderr.contains("is fruix installed"), "{stderr}");
}

/// `bytes` bytes no compression shrinks (xorshift64, seeded by `seed`).
fn incompressible(bytes: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(bytes + 8);
    while data.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(bytes);
    data
}

/// Regression: `copy --to` a store that refused a large archive (an
/// unsigned object, the other side checking signatures) waited for the
/// whole idle timeout, then failed as a timeout (exit 3): the other side
/// had ended, but what was still to be sent waited for SSH window space
/// it would never give. The copy fails now as refused (exit 4), the
/// other side's words shown once, as soon as that side has ended, and
/// nothing is left there.
#[test]
fn a_copy_to_refused_in_the_middle_of_a_large_archive_fails_at_once() {
    let t = Peer::new();
    // A source object whose archive outgrows what the connection and the
    // other side's pipes hold unread (SSH windows of a few MiB).
    let tree = t.dir.path().join("large-source");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(fixture_source())
            .arg(&tree),
    );
    std::fs::write(tree.join("large"), incompressible(4 << 20, 7)).unwrap();
    let flags = ["--json", "--name", "large"];
    let added = run_json(on_store(&["source", "add"], &flags, &t.store()).arg(&tree));
    let large = PathBuf::from(added["store_path"].as_str().unwrap());
    let (_, public) = key(t.dir.path(), "builder-1");
    let flags = format!("--trusted-key {}", public.trim());
    let program = t.serving_with("there", &flags);
    let idle = Duration::from_secs(30);
    let started = Instant::now();
    let out = t.copy(
        "--to",
        &program,
        &t.store(),
        &["--idle-timeout", "30s"],
        &large,
    );
    let took = started.elapsed();
    let stderr = failed_with("refused", &out, 4, &["archive refused", "it is not signed"]);
    assert!(took < idle / 2, "took {took:?}: {stderr}");
    assert_eq!(stderr.matches("it is not signed").count(), 1, "{stderr}");
    assert!(!stderr.contains("timed out"), "{stderr}");
    let there = t.dir.path().join("there");
    assert_eq!(object_names(&there), Vec::<String>::new());
    fruix_core::testing::wait_until("no process serving the other store", || {
        processes_mentioning(&there).is_empty()
    });
}
