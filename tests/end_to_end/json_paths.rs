//! `--json` output, and `store serve`'s answers, for a store whose path is
//! not UTF-8: every path shows as fruix prints paths (the byte 0xff as
//! `\377`), and the command succeeds. These exited 3 ("cannot show the
//! result as JSON"), and `store serve` panicked.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use fruix_core::testing::sorted_strings;
use serde_json::Value;

use crate::util::{
    fruix, object_names, promote_linked, run_json, sample_root, source_add, spawn_piped,
    store_export, store_import, wait_with_deadline,
};

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
        let base = tmp.path().to_str().expect("a UTF-8 temporary directory");
        let shown = format!("{base}/dir\\377");
        OddDir { tmp, path, shown }
    }

    /// The store, `dir\xff/store`.
    fn store(&self) -> PathBuf {
        self.path.join("store")
    }

    /// The path of the store object named `name`, as JSON shows it.
    fn shown_object(&self, name: &str) -> String {
        format!("{}/store/{name}", self.shown)
    }
}

/// `fruix store SUBCOMMAND --json --store STORE ARGS`, which must succeed
/// and print JSON.
fn store_json(subcommand: &str, store: &Path, args: &[&OsStr]) -> Value {
    run_json(
        fruix()
            .args(["store", subcommand, "--json", "--store"])
            .arg(store)
            .args(args),
    )
}

#[test]
fn source_add_list_info_verify_and_gc_show_a_store_path_that_is_not_utf8_escaped() {
    let odd = OddDir::new();
    let store = odd.store();
    let added = run_json(&mut source_add(&store, &["--json"]));
    let names = object_names(&store);
    assert_eq!(names.len(), 1, "{names:?}");
    let source = odd.shown_object(&names[0]);
    assert_eq!(added["store_path"], source, "{added:#}");
    assert_eq!(added["new"], true, "{added:#}");

    let listed = store_json("list", &store, &[]);
    assert_eq!(listed[0]["path"], source, "{listed:#}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");

    let object = store.join(&names[0]);
    let info = store_json("info", &store, &[object.as_os_str()]);
    assert_eq!(info[0]["path"], source, "{info:#}");

    let verified = store_json("verify", &store, &[]);
    assert_eq!(verified["objects"][0]["path"], source, "{verified:#}");
    assert_eq!(verified["corrupt"], 0, "{verified:#}");

    // Nothing roots the source object: a collection would remove it.
    let state = odd.tmp.path().join("state");
    let collected = store_json(
        "gc",
        &store,
        &[
            "--dry-run".as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ],
    );
    assert_eq!(collected["objects"][0]["path"], source, "{collected:#}");
    assert_eq!(collected["dry_run"], true, "{collected:#}");
}

#[test]
fn promote_export_and_import_show_a_store_path_that_is_not_utf8_escaped() {
    let odd = OddDir::new();
    let store = odd.store();
    let root = sample_root(odd.tmp.path(), "root");
    let link = odd.path.join("result");
    let promoted = run_json(&mut promote_linked(
        &store,
        &odd.tmp.path().join("state"),
        &link,
        &root,
        &["--json"],
    ));
    let names = object_names(&store);
    let shown: Vec<String> = names.iter().map(|n| odd.shown_object(n)).collect();
    let bundle = names
        .iter()
        .find(|n| n.contains("-fruix-native-build-result-"))
        .unwrap_or_else(|| panic!("no result bundle in {names:?}"));
    assert_eq!(
        promoted["result_store"],
        odd.shown_object(bundle),
        "{promoted:#}"
    );
    assert_eq!(
        promoted["out_link"],
        format!("{}/result", odd.shown),
        "{promoted:#}"
    );
    let artifacts = promoted["artifacts"].as_object().unwrap();
    assert!(!artifacts.is_empty(), "{promoted:#}");
    for (name, artifact) in artifacts {
        let path = artifact["store_path"].as_str().unwrap();
        assert!(
            shown.iter().any(|s| s == path),
            "{name}: {path} in {shown:?}"
        );
    }

    let archive = odd.tmp.path().join("archive");
    let exported = run_json(&mut store_export(
        &store,
        &archive,
        &["--json", "--recursive"],
        store.join(bundle),
    ));
    assert_eq!(sorted_strings(&exported["objects"]), shown, "{exported:#}");

    // Into the store it came from: every object is already there.
    let imported = run_json(&mut store_import(
        &store,
        &archive,
        &["--json", "--no-check-sigs"],
    ));
    assert_eq!(sorted_strings(&imported["present"]), shown, "{imported:#}");
    assert_eq!(
        imported["imported"],
        Value::Array(Vec::new()),
        "{imported:#}"
    );
}

#[test]
fn store_serve_greets_with_a_store_path_that_is_not_utf8_escaped() {
    let odd = OddDir::new();
    let store = odd.store();
    std::fs::create_dir(&store).unwrap();
    let mut serve = spawn_piped(
        fruix()
            .args(["store", "serve", "--store"])
            .arg(&store)
            .stdin(Stdio::piped()),
    );
    // The hello request, then the end of the session.
    let mut input = serve.stdin.take().unwrap();
    input
        .write_all(b"{\"op\":\"hello\",\"version\":1}\n")
        .unwrap();
    drop(input);
    let out = wait_with_deadline(serve, std::time::Duration::from_secs(60), "store serve");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON answer ({e}): {out:?}"));
    assert_eq!(
        answer,
        serde_json::json!({ "ok": { "version": 1, "store": format!("{}/store", odd.shown) } })
    );
}
