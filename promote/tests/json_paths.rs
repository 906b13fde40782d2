//! Every report that holds a path serialises to JSON when the path is not
//! UTF-8, the path shown as fruix prints paths (the byte 0xff as `\377`,
//! [`fruix_core::escape::path_text`]). serde refused such paths: `--json`
//! exited 3, and `store serve` panicked greeting its client.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fruix_core::testing::{sorted_strings, TestDir};
use fruix_promote::archive::{export, import, ArchiveLimits, ImportOptions, Trust};
use fruix_promote::db::Filter;
use fruix_promote::gc::{collect, GcOptions};
use fruix_promote::pool::PoolProblem;
use fruix_promote::query::{info, list_store};
use fruix_promote::roots;
use fruix_promote::serve::serve;
use fruix_promote::verify::{
    check_registry, object_paths, verify_objects, ReferenceFault, ReferenceProblem, Repair,
};
use fruix_promote::{promote_native_build_result, OutLink, PromoteOptions, Store};
use serde_json::{json, Value};

mod common;

/// A store in `TMP/dir\xff`, with the sample result root promoted into it
/// (its out-link in `TMP/dir\xff` too) and a small source tree added.
struct OddStore {
    dir: TestDir,
    store: Store,
    /// `TMP/dir\xff`.
    odd: PathBuf,
    /// How JSON shows `TMP/dir\xff`: `TMP/dir\377`.
    shown: String,
    promotion: fruix_promote::PromotionReport,
    source: fruix_promote::source::SourceReport,
}

impl OddStore {
    fn new() -> OddStore {
        let dir = TestDir::new();
        let odd = dir.join(OsStr::from_bytes(b"dir\xff"));
        std::fs::create_dir(&odd).unwrap();
        let base = dir.path().to_str().expect("a UTF-8 temporary directory");
        let shown = format!("{base}/dir\\377");
        let store = Store::open(&odd.join("store")).unwrap();
        let root = dir.root("root", "local", "20260405T213444Z", true);
        let promotion = promote_native_build_result(
            &root,
            &store,
            &PromoteOptions {
                progress: None,
                out_link: Some(OutLink {
                    state_dir: &dir.join("state"),
                    link: &odd.join("result"),
                }),
            },
        )
        .unwrap();
        let source = common::add_sample_source(
            &store,
            &dir.join("src"),
            &[("Makefile", b"all:\n".as_slice(), 0o644)],
        );
        OddStore {
            dir,
            store,
            odd,
            shown,
            promotion,
            source,
        }
    }

    /// How JSON shows `path`, a path in `TMP/dir\xff`.
    fn shown(&self, path: &Path) -> String {
        let rest = path.strip_prefix(&self.odd).unwrap();
        format!("{}/{}", self.shown, rest.to_str().unwrap())
    }

    /// How JSON shows each of `paths`.
    fn shown_all(&self, paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| self.shown(p)).collect()
    }

    /// The names of the store's objects, sorted.
    fn objects(&self) -> Vec<PathBuf> {
        let mut paths = object_paths(&self.store).unwrap();
        paths.sort();
        paths
    }
}

/// `value` as JSON, which must not fail.
fn json_of(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| panic!("cannot serialise: {e}"))
}

#[test]
fn promotion_and_source_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddStore::new();
    let promoted = json_of(&s.promotion);
    assert_eq!(
        promoted["result_store"],
        s.shown(&s.promotion.result_store),
        "{promoted:#}"
    );
    assert_eq!(
        promoted["out_link"],
        format!("{}/result", s.shown),
        "{promoted:#}"
    );
    assert!(!s.promotion.artifacts.is_empty());
    for (name, artifact) in &s.promotion.artifacts {
        assert_eq!(
            promoted["artifacts"][name]["store_path"],
            s.shown(&artifact.store_path),
            "{promoted:#}"
        );
    }
    let added = json_of(&s.source);
    assert_eq!(
        added["store_path"],
        s.shown(&s.source.store_path),
        "{added:#}"
    );
}

#[test]
fn list_info_and_verify_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddStore::new();
    let objects = s.objects();
    let listed = json_of(&list_store(&s.store, &Filter::default()).unwrap());
    let paths: Vec<Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].clone())
        .collect();
    assert_eq!(sorted_strings(&Value::Array(paths)), s.shown_all(&objects));

    let bundle = s
        .promotion
        .result_store
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let bundle_info = info(&s.store, bundle).unwrap();
    let shown = json_of(&bundle_info);
    assert_eq!(shown["path"], s.shown(&bundle_info.path), "{shown:#}");
    assert!(!bundle_info.references.is_empty());
    assert_eq!(
        shown["references"],
        json!(s.shown_all(&bundle_info.references)),
        "{shown:#}"
    );

    let verified = verify_objects(&objects, None, None).unwrap();
    let shown = json_of(&verified);
    for (i, v) in verified.iter().enumerate() {
        assert_eq!(shown[i]["path"], s.shown(&v.path), "{shown:#}");
    }
    // A directory that looks like an object but is not registered.
    let stray = s
        .store
        .path()
        .join(format!("{}-fruix-native-x-1-local", "0".repeat(40)));
    std::fs::create_dir(&stray).unwrap();
    let registry = check_registry(&s.store).unwrap();
    assert_eq!(
        json_of(&registry),
        json!({
            "missing": [],
            "unregistered": [s.shown(&stray)],
            "foreign": [],
            "references": []
        })
    );
}

#[test]
fn repair_and_pool_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddStore::new();
    let objects = s.objects();
    let entry = s.store.path().join(".links").join("0".repeat(64));
    let reference = ReferenceProblem {
        object: s.promotion.result_store.clone(),
        reference: objects[0].clone(),
        problem: ReferenceFault::NotRecorded,
    };
    let repair = Repair {
        removed_objects: objects.clone(),
        removed_pool_entries: vec![entry.clone()],
        removed_bundles: vec![s.promotion.result_store.clone()],
        removed_referrers: objects.clone(),
        unregistered: objects.clone(),
        recorded_references: vec![reference],
    };
    let each = s.shown_all(&objects);
    assert_eq!(
        json_of(&repair),
        json!({
            "removed_objects": each,
            "removed_pool_entries": [s.shown(&entry)],
            "removed_bundles": [s.shown(&s.promotion.result_store)],
            "removed_referrers": each,
            "unregistered": each,
            "recorded_references": [{
                "object": s.shown(&s.promotion.result_store),
                "reference": s.shown(&objects[0]),
                "problem": "not-recorded",
            }],
        })
    );
    let problem = PoolProblem {
        path: entry.clone(),
        message: "m".into(),
    };
    assert_eq!(
        json_of(&problem),
        json!({ "path": s.shown(&entry), "message": "m" })
    );
}

#[test]
fn roots_and_gc_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddStore::new();
    let state = s.dir.join("state");
    let link = s.odd.join("result");
    let listed = roots::list(&state, s.store.path()).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let root = json_of(&listed[0]);
    assert_eq!(root["link"], s.shown(&link), "{root:#}");
    assert_eq!(
        root["target"],
        s.shown(&s.promotion.result_store),
        "{root:#}"
    );
    // With its link gone, the root is dead; nothing keeps the objects.
    std::fs::remove_file(&link).unwrap();
    let report = collect(
        &s.store,
        &GcOptions {
            state_dir: state,
            dry_run: true,
            max_freed: None,
            keep_result_roots: true,
            older_than: Duration::from_secs(3600),
            progress: None,
        },
    )
    .unwrap();
    let shown = json_of(&report);
    assert_eq!(shown["dead_roots"], json!([s.shown(&link)]), "{shown:#}");
    let removed: Vec<Value> = shown["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].clone())
        .collect();
    assert_eq!(
        sorted_strings(&Value::Array(removed)),
        s.shown_all(&s.objects())
    );
}

#[test]
fn archive_reports_and_serve_show_a_path_that_is_not_utf8_escaped() {
    let s = OddStore::new();
    let objects = s.objects();
    let names: Vec<String> = objects
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut archive = Vec::new();
    let exported = export(&s.store, &names, &mut archive, None).unwrap();
    let shown = json_of(&exported);
    assert_eq!(sorted_strings(&shown["objects"]), s.shown_all(&objects));
    let trust = Trust {
        keys: Vec::new(),
        check_signatures: false,
    };
    let options = ImportOptions {
        trust: &trust,
        limits: ArchiveLimits::default(),
        progress: None,
        whole_input: true,
    };
    // Into the store it came from: every object is there already.
    let imported = import(&s.store, archive.as_slice(), &options).unwrap();
    let shown = json_of(&imported);
    assert_eq!(sorted_strings(&shown["present"]), s.shown_all(&objects));
    // `store serve` greets its client with the store's path.
    let mut answer = Vec::new();
    serve(
        &s.store,
        b"{\"op\":\"hello\",\"version\":1}\n".as_slice(),
        &mut answer,
        &options,
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        answer,
        json!({ "ok": { "version": 1, "store": format!("{}/store", s.shown) } })
    );
}
