//! Regressions from an attacker's review of `store copy --from` and the
//! import behind it: the other side must send exactly the objects asked
//! for, and name only store objects in a closure; an archive of more
//! objects than the open-file limit imports; a bundle's artifacts must be
//! the objects its metadata says they are.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use fruix_core::testing::edit_header;
use fruix_promote::archive::export;
use fruix_promote::object::object_hash;
use fruix_promote::source::{add_source, SourceFacts};
use fruix_promote::source_identity::SourceIdentity;
use fruix_promote::Store;

use crate::sshd::{script, Sshd};
use crate::util::{
    failed_with, object_names, promoted_store, run_ok, run_with_deadline, snapshot, ssh_store_copy,
    store_export, store_import,
};

/// A sample result root promoted into `dir/store` (unsigned), whose world
/// and kernel artifacts are exported alone and whose bundle is exported
/// with its closure; the store is then moved to `dir/original`, and a new,
/// empty store made at `dir/store`, so that the archives import there.
struct Exported {
    dir: tempfile::TempDir,
    world: String,
    kernel: String,
    /// The archives of the world artifact, of the kernel artifact, and of
    /// the bundle's closure.
    of_world: Vec<u8>,
    of_kernel: Vec<u8>,
    of_bundle: Vec<u8>,
}

impl Exported {
    fn new() -> Exported {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = promoted_store(dir.path());
        let path = |a: &str| report["artifacts"][a]["store_path"].as_str().unwrap();
        let archive = |object: &str, flags: &[&str]| {
            let file = dir.path().join("exported");
            run_ok(&mut store_export(&store, &file, flags, object));
            let archive = std::fs::read(&file).unwrap();
            std::fs::remove_file(&file).unwrap();
            archive
        };
        let of_world = archive(path("world"), &[]);
        let of_kernel = archive(path("kernel"), &[]);
        let of_bundle = archive(report["result_store"].as_str().unwrap(), &["--recursive"]);
        let name = |a: &str| Path::new(path(a)).file_name().unwrap().to_str().unwrap();
        let (world, kernel) = (name("world").to_string(), name("kernel").to_string());
        std::fs::rename(&store, dir.path().join("original")).unwrap();
        let t = Exported {
            dir,
            world,
            kernel,
            of_world,
            of_kernel,
            of_bundle,
        };
        let made = t.import(&t.empty());
        assert!(made.status.success(), "{made:?}");
        t
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// An archive of no object.
    fn empty(&self) -> Vec<u8> {
        format!(
            "fruix-archive 1\nstore {}\nend-archive\n",
            self.store().display()
        )
        .into_bytes()
    }

    /// `fruix store import --no-check-sigs` of `archive` into the store,
    /// within a minute.
    fn import(&self, archive: &[u8]) -> Output {
        let file = self.dir.path().join("to-import");
        std::fs::write(&file, archive).unwrap();
        run_with_deadline(
            &mut store_import(&self.store(), &file, &["--no-check-sigs"]),
            Duration::from_secs(60),
        )
    }
}

/// A peer speaking the `store serve` protocol as it likes: it answers its
/// `n`th request with the bytes of the `n`th of `answers`.
fn hostile_peer(dir: &Path, answers: &[Vec<u8>]) -> PathBuf {
    let answers_dir = dir.join("answers");
    let _ = std::fs::remove_dir_all(&answers_dir);
    std::fs::create_dir(&answers_dir).unwrap();
    for (n, answer) in answers.iter().enumerate() {
        std::fs::write(answers_dir.join((n + 1).to_string()), answer).unwrap();
    }
    let program = dir.join("hostile-serve");
    script(
        &program,
        &format!(
            "#!/bin/sh\nn=0\nwhile IFS= read -r request; do\n  n=$((n + 1))\n  cat {}/$n || exit 1\ndone\n",
            answers_dir.display()
        ),
    );
    program
}

/// A JSON answer line.
fn answer(json: serde_json::Value) -> Vec<u8> {
    format!("{json}\n").into_bytes()
}

/// What a hostile peer answers a `copy --from` (`--recursive`: a closure
/// too), and what the copy says refusing it.
struct Case {
    what: &'static str,
    recursive: bool,
    answers: Vec<Vec<u8>>,
    says: String,
}

/// Regression: a peer that answered an export with an empty archive, or
/// with an object not asked for, made `copy --from` succeed (exit 0),
/// without the object asked for, or with the other one in the store; the
/// names of a `--recursive` copy's closure were not checked. Each is
/// refused now (exit 4), the store unchanged.
#[test]
fn a_copy_from_takes_exactly_the_objects_asked_for() {
    let t = Exported::new();
    let sshd = Sshd::trusted();
    let store = t.store();
    let hello = answer(serde_json::json!({"ok": {"version": 1, "store": store}}));
    let exported =
        |archive: &[u8]| [answer(serde_json::json!({"ok": {}})), archive.to_vec()].concat();
    let closure = |names: &[&str]| answer(serde_json::json!({"ok": {"names": names}}));
    let long = format!("{}{}", &t.world[..47], "x".repeat(1000));
    let cases = [
        Case {
            what: "an empty archive",
            recursive: false,
            answers: vec![hello.clone(), exported(&t.empty())],
            says: "the object was asked for, but the archive ends without it".into(),
        },
        Case {
            what: "another object",
            recursive: false,
            answers: vec![hello.clone(), exported(&t.of_kernel)],
            says: format!("at object {}: the object was not asked for", t.kernel),
        },
        Case {
            what: "a path in a closure",
            recursive: true,
            answers: vec![
                hello.clone(),
                closure(&["../../etc/passwd", &t.world]),
                exported(&t.of_world),
            ],
            says: "the other store's closure answer names \"../../etc/passwd\", which is not a store object name".into(),
        },
        Case {
            what: "a long name in a closure",
            recursive: true,
            answers: vec![
                hello.clone(),
                closure(&[&long, &t.world]),
                exported(&t.of_world),
            ],
            // Shown cut short.
            says: "more bytes cut], which is not a store object name".into(),
        },
    ];
    let copy = |program: &Path, recursive: bool| {
        let flags: &[&str] = match recursive {
            true => &["--no-check-sigs", "--recursive"],
            false => &["--no-check-sigs"],
        };
        let mut cmd = ssh_store_copy(&sshd, flags, "--from", program, &store, &store);
        cmd.arg(store.join(&t.world));
        run_with_deadline(&mut cmd, Duration::from_secs(60))
    };
    let before = snapshot(&store);
    for case in cases {
        let what = case.what;
        let out = copy(&hostile_peer(t.dir.path(), &case.answers), case.recursive);
        failed_with(what, &out, 4, &[&case.says, "the store was not changed"]);
        assert_eq!(snapshot(&store), before, "{what} changed the store");
    }
    // The peer's answers as they should be: the object comes.
    let honest = [hello, exported(&t.of_world)];
    let out = copy(&hostile_peer(t.dir.path(), &honest), false);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(object_names(&store), std::slice::from_ref(&t.world));
}

/// Regression: an import held one lock descriptor per object it
/// published, all at once: an archive of more objects than the open-file
/// limit failed (exit 3, "Too many open files").
#[test]
fn an_archive_of_more_objects_than_the_open_file_limit_imports() {
    const OBJECTS: usize = 1100;
    const LIMIT: libc::rlim_t = 1024;
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("file"), "tiny\n").unwrap();
    let store = Store::open(&store_path).unwrap();
    let facts = SourceFacts::without_checkout("default", "15.0-STABLE", "stable/15");
    let added = add_source(&store, &tree, &facts, &|_: &[u8]| false, None, None).unwrap();
    let name = added.store_path.file_name().unwrap().to_str().unwrap();
    let mut one = Vec::new();
    export(&store, &[name.to_string()], &mut one, None).unwrap();
    drop(store);
    std::fs::rename(&store_path, dir.path().join("original")).unwrap();
    // The one object under OBJECTS names: its metadata names a commit.
    let body_start = one.iter().position(|&b| b == b'\n').unwrap() + 1;
    let body_start = body_start + one[body_start..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let end = one.len() - "end-archive\n".len();
    let mut archive = one[..body_start].to_vec();
    for i in 0..OBJECTS {
        let object = edit_header(&one[..end], "-freebsd-source-", |h| {
            let mut identity =
                SourceIdentity::from_text(Path::new("m"), h["metadata"].as_str().unwrap()).unwrap();
            identity.facts.commit = Some(format!("{i:040x}"));
            h["name"] = identity.store_name().into();
            h["metadata"] = identity.to_scheme().into();
        });
        archive.extend_from_slice(&object[body_start..]);
    }
    archive.extend_from_slice(b"end-archive\n");
    let file = dir.path().join("many");
    std::fs::write(&file, &archive).unwrap();
    let mut import = store_import(&store_path, &file, &["--no-check-sigs", "--json"]);
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
    unsafe {
        import.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let out = run_with_deadline(&mut import, Duration::from_secs(300));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(object_names(&store_path).len(), OBJECTS);
    crate::util::verify_store(&store_path);
}

/// Regression: a bundle whose metadata swapped two artifacts' store paths,
/// or renamed one, imported (and verified): it then showed one artifact's
/// tree signature for another's object. Each artifact must be the object
/// at its store path, by name and tree signature.
#[test]
fn a_bundle_whose_artifacts_are_not_the_objects_it_names_is_refused() {
    let t = Exported::new();
    let world = t.store().join(&t.world).display().to_string();
    let kernel = t.store().join(&t.kernel).display().to_string();
    let edited = |edit: &dyn Fn(&str) -> String| {
        edit_header(&t.of_bundle, "-native-build-result-", |h| {
            let text = edit(h["metadata"].as_str().unwrap());
            let name = h["name"].as_str().unwrap();
            h["name"] = format!("{}{}", object_hash(&text), &name[40..]).into();
            h["metadata"] = text.into();
            h["signatures"] = serde_json::json!([]);
        })
    };
    let swapped = edited(&|text| {
        text.replace(&world, "WORLD")
            .replace(&kernel, &world)
            .replace("WORLD", &kernel)
    });
    let renamed = edited(&|text| text.replace("(name world)", "(name world2)"));
    assert_ne!(renamed, t.of_bundle, "no artifact named world");
    let before = snapshot(&t.store());
    for (what, archive, says) in [
        (
            "swapped store paths",
            &swapped,
            "the object there is the artifact \"kernel\"",
        ),
        (
            "a renamed artifact",
            &renamed,
            "the object there is the artifact \"world\"",
        ),
    ] {
        let out = t.import(archive);
        failed_with(what, &out, 4, &["is not what its metadata claims", says]);
        assert_eq!(snapshot(&t.store()), before, "{what} changed the store");
    }
    let out = t.import(&t.of_bundle);
    assert!(out.status.success(), "{out:?}");
    crate::util::verify_store(&t.store());
}
