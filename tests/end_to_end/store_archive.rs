//! `fruix store export` and `fruix store import` as users run them: a
//! signed build's closure moves into an empty store with its content and
//! signatures, and every kind of bad archive is refused, changing nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fruix_core::testing::{edit_header, find_bytes};
use serde_json::Value;

use crate::signing::{info, key, signed_by};
use crate::util::{
    fixture_build, fruix, run, run_failing, run_json, run_ok, snapshot, spawn_reading_stderr,
    store_export, store_import,
};

/// Builds the miniature tree into `dir/store`, signed by a new key
/// `builder-1`, exports the bundle's closure to `dir/archive`, and moves the
/// store to `dir/original`. Returns the bundle path and the public key.
fn exported(dir: &Path) -> (PathBuf, String, Vec<String>) {
    let (secret, public) = key(dir, "builder-1");
    let out = run_ok(
        fixture_build(fruix(), "local", dir, "root")
            .args(["--json", "--no-out-link", "--sign-with"])
            .arg(&secret),
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    let bundle = PathBuf::from(report["result_store"].as_str().unwrap());
    let store = dir.join("store");
    let exported = run_json(&mut store_export(
        &store,
        &dir.join("archive"),
        &["--recursive", "--json"],
        &bundle,
    ));
    let objects: Vec<String> = exported["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    // The bundle, its four artifacts and the source they were built from,
    // every reference before its referrer.
    assert_eq!(objects.len(), 6, "{exported:#}");
    assert_eq!(objects.last().unwrap(), bundle.to_str().unwrap());
    assert!(objects[0].contains("-freebsd-source-"), "{objects:?}");
    std::fs::rename(&store, dir.join("original")).unwrap();
    (bundle, public, objects)
}

#[test]
fn an_exported_closure_imports_into_an_empty_store_with_its_content_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public, objects) = exported(dir.path());
    let store = dir.path().join("store");
    let report: Value = serde_json::from_str(&run_ok(&mut store_import(
        &store,
        &dir.path().join("archive"),
        &["--json", "--trusted-key", public.trim()],
    )))
    .unwrap();
    assert_eq!(
        report["imported"].as_array().unwrap().len(),
        6,
        "{report:#}"
    );
    assert_eq!(
        report["bytes"].as_u64(),
        Some(std::fs::metadata(dir.path().join("archive")).unwrap().len())
    );
    // Every object re-hashes to its manifest and name.
    let verify: Value = serde_json::from_str(&run_ok(
        fruix()
            .args(["store", "verify", "--json", "--store"])
            .arg(&store),
    ))
    .unwrap();
    assert_eq!(verify["objects"].as_array().unwrap().len(), 6, "{verify:#}");
    assert!(
        verify["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["ok"] == true),
        "{verify:#}"
    );
    // Each carries builder-1's signature, valid over its fingerprint here.
    for object in &objects {
        let i = info(&store, object);
        assert!(signed_by(&i, &public), "{i:#}");
    }
    // The same files, modes and links as in the store they came from.
    let diff = run(std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(
            dir.path()
                .join("original")
                .join(bundle.file_name().unwrap()),
        )
        .arg(&bundle));
    assert!(diff.status.success(), "{diff:?}");
    // From standard input, into a store that has it all: nothing new.
    let again = run_ok(
        store_import(&store, Path::new("-"), &["--trusted-key", public.trim()])
            .stdin(std::fs::File::open(dir.path().join("archive")).unwrap()),
    );
    assert!(again.is_empty(), "nothing imported: {again}");
}

/// Regression: `store export -o FILE` printed its summary on stdout, and
/// `store import` on stderr. Both, as `store copy`, print the store paths
/// they moved on stdout, one a line, and their summary on stderr.
#[test]
fn import_and_export_print_the_paths_moved_and_their_summary_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public, objects) = exported(dir.path());
    let store = dir.path().join("store");
    let imported = run(&mut store_import(
        &store,
        &dir.path().join("archive"),
        &["--trusted-key", public.trim()],
    ));
    assert!(imported.status.success(), "{imported:?}");
    let mut sorted = objects.clone();
    sorted.sort();
    let mut lines: Vec<String> = String::from_utf8(imported.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, sorted);
    let stderr = String::from_utf8(imported.stderr).unwrap();
    assert!(
        stderr.contains("imported 6 object(s), 0 already present"),
        "{stderr}"
    );
    let bundle = objects.last().unwrap();
    let again = dir.path().join("again");
    let out = run(&mut store_export(
        &store,
        &again,
        &["--recursive"],
        Path::new(bundle),
    ));
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines, objects, "in archive order");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let bytes = std::fs::metadata(&again).unwrap().len();
    assert!(
        stderr.contains(&format!("exported 6 object(s), {bytes} bytes")),
        "{stderr}"
    );
}

/// Without a terminal, a long import says how far it is every
/// `--progress-every`: here it waits on its standard input, half of the
/// archive sent, until that line comes; then the rest is sent, and it ends.
#[test]
fn a_long_import_without_a_terminal_says_how_far_it_is() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (_, public, objects) = exported(dir.path());
    let archive = std::fs::read(dir.path().join("archive")).unwrap();
    let store = dir.path().join("store");
    // (Not --json, which is quiet.)
    let args = ["--trusted-key", public.trim(), "--progress-every", "1s"];
    let mut import =
        spawn_reading_stderr(store_import(&store, Path::new("-"), &args).stdin(Stdio::piped()));
    let mut stdin = import.child().stdin.take().unwrap();
    let half = archive.len() / 2;
    stdin.write_all(&archive[..half]).unwrap();
    let line = import.wait_for_line("==> import: ");
    assert!(
        line.contains(" files, ") && line.contains(" so far (") && line.contains("/s), after "),
        "{line}"
    );
    stdin.write_all(&archive[half..]).unwrap();
    drop(stdin);
    let out = import.finish(Duration::from_secs(60), "the import");
    assert!(out.status.success(), "{out:?}");
    // One line an object imported.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), objects.len(), "{stdout}");
}

/// A bad archive: what it is, its bytes, the import's options, and what
/// the refusal says.
type Case<'a> = (&'a str, Vec<u8>, &'a [&'a str], &'a [&'a str]);

#[test]
fn tampered_forged_untrusted_reordered_and_cut_short_archives_are_refused_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public, _) = exported(dir.path());
    let (_, stranger) = key(dir.path(), "stranger");
    let archive = std::fs::read(dir.path().join("archive")).unwrap();
    let store = dir.path().join("store");
    let trusted = ["--trusted-key", public.trim()];
    // A file of the kernel, one byte changed.
    let kernel = find_bytes(&archive, b"\x7fELF").expect("an ELF file in the archive");
    let mut tampered = archive.clone();
    tampered[kernel + 10] ^= 1;
    let forged = edit_header(&archive, "native-world", |h| {
        let s = h["signatures"][0].as_str().unwrap().to_string();
        let (name, data) = s.split_once(':').unwrap();
        let flipped = if data.starts_with('A') { "B" } else { "A" };
        h["signatures"][0] = format!("{name}:{flipped}{}", &data[1..]).into();
    });
    let reordered = edit_header(&archive, "native-build-result", |h| {
        let mut lines: Vec<&str> = h["references"].as_str().unwrap().lines().collect();
        lines.reverse();
        h["references"] = format!("{}\n", lines.join("\n")).into();
    });
    let cut = archive[..archive.len() / 2].to_vec();
    // Metadata that does not read was refused naming a file in the store
    // (where nothing of the object is), without "archive refused".
    let unreadable = edit_header(&archive, "native-world", |h| {
        h["metadata"] = "(fruix-native-build-object (format-version 1) (bogus 1))\n".into();
    });
    let cases: [Case; 6] = [
        (
            "a tampered byte",
            tampered,
            &trusted,
            &["does not hash to what its line says"],
        ),
        (
            "a forged signature",
            forged,
            &trusted,
            &["signature by builder-1 does not verify"],
        ),
        (
            "an unknown key",
            archive.clone(),
            &["--trusted-key", stranger.trim()],
            &["signed only by keys this store does not trust (builder-1)"],
        ),
        (
            "a reordered reference list",
            reordered,
            &trusted,
            &["references are not sorted and unique"],
        ),
        ("an archive cut short", cut, &trusted, &["the archive ends"]),
        (
            "metadata that does not read",
            unreadable,
            &trusted,
            &["archive refused at object", "its metadata is refused: "],
        ),
    ];
    // An empty store (snapshots leave out what opening a store creates). A
    // refused import into a store path that does not exist leaves nothing
    // (see bad_input), so the directory is there first.
    std::fs::create_dir(&store).unwrap();
    let before = snapshot(&store);
    assert!(before.is_empty());
    for (what, bytes, args, expected) in cases {
        let file = dir.path().join("bad-archive");
        std::fs::write(&file, &bytes).unwrap();
        let mut expected = expected.to_vec();
        expected.push("the store was not changed");
        let stderr = run_failing(&mut store_import(&store, &file, args), 4, &expected);
        assert!(
            !stderr.contains(&format!("{}/", store.display())),
            "{stderr}"
        );
        assert_eq!(snapshot(&store), before, "{what} changed the store");
        let leftovers: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{what} left {leftovers:?}");
    }
    // Refused under --json too, as one error object.
    let out = run(&mut store_import(
        &store,
        &dir.path().join("bad-archive"),
        &["--json", trusted[0], trusted[1]],
    ));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["exit_status"], 4, "{error:#}");
    // Unsigned objects pass only with --no-check-sigs.
    let unsigned = edit_header(&archive, "native-kernel", |h| {
        h["signatures"] = serde_json::json!([]);
    });
    let file = dir.path().join("unsigned");
    std::fs::write(&file, unsigned).unwrap();
    run_failing(
        &mut store_import(&store, &file, &trusted),
        4,
        &["it is not signed"],
    );
    run_ok(&mut store_import(&store, &file, &["--no-check-sigs"]));
}

/// Regression: an object holding a directory whose name is not UTF-8
/// promoted and verified, but its export failed (exit 3, "failed to open
/// …/d\u{fffd}": the directory was looked for under a lossy name), and so
/// did `store verify` where a file in such a directory was not its pool
/// entry's own inode. Both read it now; the export imports whole.
#[test]
fn an_object_with_a_directory_not_named_in_utf8_verifies_exports_and_imports() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fruix_core::testing::write_sample_result_root(
        &root,
        "guest-self-hosted",
        "20260405T213444Z",
        false,
    )
    .unwrap();
    let odd = OsStr::from_bytes(b"d\xff");
    std::fs::create_dir(root.join("artifacts/world").join(odd)).unwrap();
    std::fs::write(root.join("artifacts/world").join(odd).join("f"), "odd\n").unwrap();
    let store = dir.path().join("store");
    let report = crate::util::promote_report(&store, &root, &[]);
    let world = PathBuf::from(report["artifacts"]["world"]["store_path"].as_str().unwrap());
    // The file a private copy, not the pool entry's inode: verify reads it.
    let (in_store, copy) = (world.join(odd), dir.path().join("copy"));
    let file = in_store.join("f");
    std::fs::copy(&file, &copy).unwrap();
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let was = std::fs::symlink_metadata(&in_store)
        .unwrap()
        .permissions()
        .mode();
    let modified = std::fs::symlink_metadata(&file)
        .unwrap()
        .modified()
        .unwrap();
    mode(&in_store, 0o755);
    std::fs::rename(&copy, &file).unwrap();
    mode(&file, 0o444);
    std::fs::File::open(&file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    mode(&in_store, was);
    let dir_modified = std::fs::symlink_metadata(&world)
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::open(&in_store)
        .unwrap()
        .set_modified(dir_modified)
        .unwrap();
    crate::util::verify_store(&store);
    let archive = dir.path().join("archive");
    run_ok(&mut store_export(
        &store,
        &archive,
        &["--recursive"],
        &world,
    ));
    let bytes = std::fs::read(&archive).unwrap();
    assert!(
        find_bytes(&bytes, b"./d\\377/f ").is_some(),
        "the file's line"
    );
    std::fs::rename(&store, dir.path().join("original")).unwrap();
    run_ok(&mut store_import(&store, &archive, &["--no-check-sigs"]));
    assert_eq!(std::fs::read(world.join(odd).join("f")).unwrap(), b"odd\n");
    crate::util::verify_store(&store);
}
