//! `--json` output where paths are not UTF-8: every path shows as fruix
//! prints paths (the byte 0xff as `\377`), and the command succeeds. These
//! exited 3 ("cannot show the result as JSON").
//!
//! A store's path must be UTF-8 (result bundles and build requests name
//! store paths as text): every command refuses a store in `dir\xff` (exit
//! 2, its JSON error object naming the path escaped) and makes nothing, so
//! `store serve`, which panicked greeting its client with such a store's
//! path, no longer serves one. What is still shown from `dir\xff`: out-links
//! and other roots' links, a root's target reaching the store through it,
//! the state directory's promoted result roots, and a file in the store
//! whose name is not UTF-8; the result root promoted and the source tree
//! added lie there too. The reports that name store objects only (`store
//! list`, `info`, `export`, `import`) are checked with values built by hand
//! in `promote/tests/json_paths.rs`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fruix_core::testing::sorted_strings;
use serde_json::{json, Value};

use crate::util::{
    failed_with, fixture_build_into, fixture_source, fruix, object_names, on_store,
    promote_command, promote_linked, run_json, run_ok, run_with_deadline, sample_root, source_add,
    store_import,
};

/// The run id of the sample result root.
const RUN_ID: &str = "20260405T213444Z";

/// A temporary directory holding `dir\xff`, and how JSON shows that
/// directory's path.
struct OddDir {
    tmp: tempfile::TempDir,
    /// `TMP/dir\xff`.
    path: PathBuf,
    /// `TMP/dir\377`, as text.
    shown: String,
}

impl OddDir {
    fn new() -> OddDir {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(OsStr::from_bytes(b"dir\xff"));
        std::fs::create_dir(&path).unwrap();
        let shown = format!("{}/dir\\377", text(tmp.path()));
        OddDir { tmp, path, shown }
    }

    /// How JSON shows `path`, a path in `TMP/dir\xff`.
    fn shown(&self, path: &Path) -> String {
        let rest = path.strip_prefix(&self.path).unwrap();
        format!("{}/{}", self.shown, text(rest))
    }

    /// `TMP/store`, whose path is UTF-8.
    fn store(&self) -> PathBuf {
        self.tmp.path().join("store")
    }
}

/// `path`, which is UTF-8, as text.
fn text(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("not UTF-8: {path:?}"))
}

/// The path of the object `name` of `store`, as text.
fn object(store: &Path, name: &str) -> String {
    format!("{}/{name}", text(store))
}

/// `fruix store SUBCOMMAND --json --store STORE ARGS`.
fn store_json(subcommand: &str, store: &Path, args: &[&OsStr]) -> Command {
    let mut cmd = on_store(&["store", subcommand], &["--json"], store);
    cmd.args(args);
    cmd
}

/// Runs `cmd` (with `--json`), which must refuse the store whose path
/// shows as `shown`: exit status 2, and its JSON error object, a usage
/// error, naming the path escaped.
fn refuses_store(cmd: &mut Command, shown: &str) {
    let out = run_with_deadline(cmd, Duration::from_secs(60));
    let what = format!("{cmd:?}");
    failed_with(&what, &out, 2, &[shown]);
    let error: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: no JSON error ({e}): {out:?}"));
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("the store's path {shown} is not UTF-8")),
        "{what}: {error:#}"
    );
    assert_eq!(
        error,
        json!({ "error": { "kind": "usage", "exit_status": 2, "message": message } }),
        "{what}"
    );
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found
}

#[test]
fn every_command_refuses_a_store_whose_path_is_not_utf8_and_makes_nothing() {
    let odd = OddDir::new();
    let store = odd.path.join("store");
    let shown = odd.shown(&store);
    let state = odd.tmp.path().join("state");
    let state_dir = ["--state-dir".as_ref(), state.as_os_str()];
    // Those that make a store that does not exist yet.
    let root = sample_root(odd.tmp.path(), "root");
    let archive = odd.tmp.path().join("archive");
    std::fs::write(&archive, "").unwrap();
    refuses_store(&mut source_add(&store, &["--json"]), &shown);
    refuses_store(&mut promote_command(&store, &root, &["--json"]), &shown);
    // A build says nothing was built, and no more: the store is not one
    // to make writable (it said so, as if it were).
    let mut build = fixture_build_into(fruix(), "local", &store, &state);
    refuses_store(build.arg("--json"), &shown);
    let out = run_with_deadline(&mut build, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("choose a store path that is UTF-8; nothing was built\n"),
        "{stderr}"
    );
    refuses_store(
        &mut store_import(&store, &archive, &["--json", "--no-check-sigs"]),
        &shown,
    );
    assert_eq!(entries(&odd.path), Vec::<PathBuf>::new());
    // Those that read, repair or serve a store that exists: its directory
    // is there, empty, and stays so (`store serve` would make it a store).
    std::fs::create_dir(&store).unwrap();
    refuses_store(&mut store_json("list", &store, &[]), &shown);
    refuses_store(&mut store_json("verify", &store, &[]), &shown);
    refuses_store(
        &mut store_json("verify", &store, &["--repair".as_ref()]),
        &shown,
    );
    refuses_store(&mut store_json("roots", &store, &state_dir), &shown);
    refuses_store(
        &mut store_json(
            "gc",
            &store,
            &[&state_dir[..], &["--dry-run".as_ref()]].concat(),
        ),
        &shown,
    );
    // `store serve` has no `--json`: its failure is said on stderr.
    let mut serve = fruix();
    serve.args(["store", "serve", "--store"]).arg(&store);
    let out = run_with_deadline(&mut serve, Duration::from_secs(60));
    failed_with("store serve", &out, 2, &[&shown]);
    assert!(out.stdout.is_empty(), "{out:?}");
    // Through a link whose path is UTF-8 (to the empty directory, which
    // these would make a store), the store it resolves to.
    let link = odd.tmp.path().join("link");
    std::os::unix::fs::symlink(&store, &link).unwrap();
    let resolved = std::fs::canonicalize(&store).unwrap();
    let resolved_shown = format!(
        "{}/dir\\377/store",
        text(resolved.parent().unwrap().parent().unwrap())
    );
    refuses_store(&mut source_add(&link, &["--json"]), &resolved_shown);
    refuses_store(
        &mut promote_command(&link, &root, &["--json"]),
        &resolved_shown,
    );
    assert_eq!(entries(&store), Vec::<PathBuf>::new());
    assert!(!state.exists(), "made {state:?}");
}

#[test]
fn promote_roots_query_and_gc_show_links_and_result_roots_that_are_not_utf8_escaped() {
    let odd = OddDir::new();
    let store = odd.store();
    let state = odd.path.join("state");
    let state_dir = ["--state-dir".as_ref(), state.as_os_str()];
    // The result root promoted from the state directory, as a build left it.
    let root = sample_root(&state.join("native-builds"), RUN_ID);
    let link = odd.path.join("result");
    let promoted = run_json(&mut promote_linked(
        &store,
        &state,
        &link,
        &root,
        &["--json"],
    ));
    let names = object_names(&store);
    let paths: Vec<String> = names.iter().map(|n| object(&store, n)).collect();
    let bundle = names
        .iter()
        .find(|n| n.contains("-fruix-native-build-result-"))
        .unwrap_or_else(|| panic!("no result bundle in {names:?}"));
    let bundle_path = object(&store, bundle);
    assert_eq!(promoted["out_link"], odd.shown(&link), "{promoted:#}");
    assert_eq!(promoted["result_store"], bundle_path, "{promoted:#}");
    let artifacts = promoted["artifacts"].as_object().unwrap();
    assert!(!artifacts.is_empty(), "{promoted:#}");
    for (name, artifact) in artifacts {
        let path = artifact["store_path"].as_str().unwrap();
        assert!(
            paths.iter().any(|p| p == path),
            "{name}: {path} in {paths:?}"
        );
    }

    let extra = odd.path.join("extra");
    let added = run_json(&mut store_json(
        "add-root",
        &store,
        &[&state_dir[..], &[bundle_path.as_ref(), extra.as_os_str()]].concat(),
    ));
    assert_eq!(
        added,
        json!({ "link": odd.shown(&extra), "object": bundle_path })
    );
    // A direct root reaching the bundle through `dir\xff/alias`, a link to
    // the store.
    let alias = odd.path.join("alias");
    std::os::unix::fs::symlink(&store, &alias).unwrap();
    let direct = state.join("gcroots").join("by-alias");
    std::os::unix::fs::symlink(alias.join(bundle), &direct).unwrap();
    let roots = run_json(&mut store_json("roots", &store, &state_dir));
    let indirect = |link: &Path| {
        json!({
            "link": odd.shown(link),
            "indirect": true,
            "target": bundle_path,
            "object": bundle_path,
            "dead": false,
            "leads_nowhere": false,
        })
    };
    let by_alias = json!({
        "link": odd.shown(&direct),
        "indirect": false,
        "target": odd.shown(&alias.join(bundle)),
        "object": bundle_path,
        "dead": false,
        "leads_nowhere": false,
    });
    assert_eq!(
        roots,
        json!([indirect(&extra), indirect(&link), by_alias]),
        "{roots:#}"
    );
    let keeping = run_json(&mut store_json(
        "query",
        &store,
        &[&state_dir[..], &["--roots".as_ref(), bundle_path.as_ref()]].concat(),
    ));
    assert_eq!(
        keeping,
        json!([odd.shown(&extra), odd.shown(&link), odd.shown(&direct)]),
        "{keeping:#}"
    );

    // With the links gone, the two indirect roots are dead, nothing keeps
    // the objects, and the promoted result root goes.
    for gone in [&extra, &link, &direct] {
        std::fs::remove_file(gone).unwrap();
    }
    let collected = run_json(&mut store_json(
        "gc",
        &store,
        &[
            &state_dir[..],
            &["--dry-run".as_ref(), "--older-than".as_ref(), "0s".as_ref()],
        ]
        .concat(),
    ));
    assert_eq!(collected["dry_run"], true, "{collected:#}");
    assert_eq!(
        collected["dead_roots"],
        json!([odd.shown(&extra), odd.shown(&link)]),
        "{collected:#}"
    );
    assert_eq!(
        collected["result_roots"],
        json!([odd.shown(&root)]),
        "{collected:#}"
    );
    let removed: Vec<Value> = collected["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].clone())
        .collect();
    assert_eq!(
        sorted_strings(&Value::Array(removed)),
        paths,
        "{collected:#}"
    );
}

#[test]
fn source_add_and_verify_show_a_tree_and_a_foreign_file_that_are_not_utf8_escaped() {
    let odd = OddDir::new();
    let store = odd.store();
    // The miniature tree, copied into `dir\xff`.
    let tree = odd.path.join("src");
    run_ok(
        Command::new("cp")
            .arg("-R")
            .arg(fixture_source())
            .arg(&tree),
    );
    let mut add = on_store(&["source", "add"], &["--json"], &store);
    let added = run_json(add.arg(&tree));
    let names = object_names(&store);
    assert_eq!(names.len(), 1, "{names:?}");
    let source = object(&store, &names[0]);
    assert_eq!(added["store_path"], source, "{added:#}");
    assert_eq!(added["new"], true, "{added:#}");

    // A file someone put in the store, whose name is not UTF-8: foreign,
    // left alone.
    let foreign = store.join(OsStr::from_bytes(b"junk\xff"));
    std::fs::write(&foreign, "").unwrap();
    let verified = run_json(&mut store_json("verify", &store, &[]));
    assert_eq!(
        verified["foreign"],
        json!([format!("{}/junk\\377", text(&store))]),
        "{verified:#}"
    );
    assert_eq!(verified["objects"][0]["path"], source, "{verified:#}");
    assert_eq!(verified["corrupt"], 0, "{verified:#}");
    assert!(foreign.exists());
}
