//! Every report that holds a path serialises to JSON when the path is not
//! UTF-8, the path shown as fruix prints paths (the byte 0xff as `\377`,
//! [`fruix_core::escape::path_text`]). serde refused such paths: `--json`
//! exited 3, and `store serve` panicked greeting its client.
//!
//! A store's path, and so each of its objects' paths, is UTF-8: a store
//! elsewhere is refused before anything is made
//! ([`fruix_promote::Error::StorePathNotText`]). What is still read from
//! the file system here, in `TMP/dir\xff`: the out-link, the state
//! directory (its roots, its promoted result roots), the result root
//! promoted and the source tree added, a root reaching the store through
//! that directory, and an entry of the store that is not fruix's. The
//! reports that name store objects only are checked through values built
//! with paths in `TMP/dir\xff/store`, as a store there would name them;
//! `store serve`'s greeting, which names the store alone (its type is
//! private), is not checked here any more.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fruix_core::testing::{sorted_strings, write_sample_result_root, TestDir};
use fruix_core::ExitStatus;
use fruix_promote::archive::{ExportReport, ImportReport};
use fruix_promote::db::Filter;
use fruix_promote::gc::{collect, GcOptions};
use fruix_promote::pool::PoolProblem;
use fruix_promote::query::{info, list_store};
use fruix_promote::roots;
use fruix_promote::source::SourceReport;
use fruix_promote::verify::{
    check_registry, object_paths, verify_objects, ReferenceFault, ReferenceProblem, RegistryCheck,
    Repair,
};
use fruix_promote::{
    promote_native_build_result, Error, OutLink, PromoteOptions, PromotionReport, Store,
};
use serde_json::{json, Value};

mod common;

/// The run id of the result root promoted.
const RUN_ID: &str = "20260405T213444Z";

/// A store in `TMP/store`, into which the sample result root in the state
/// directory `TMP/dir\xff/state` (`native-builds/RUN_ID`) was promoted,
/// its out-link `TMP/dir\xff/result`, and to which the small source tree
/// `TMP/dir\xff/src` was added.
struct OddDir {
    /// The temporary directory, removed with the fixture.
    _dir: TestDir,
    store: Store,
    /// `TMP/dir\xff`.
    odd: PathBuf,
    /// How JSON shows `TMP/dir\xff`: `TMP/dir\377`.
    shown: String,
    /// The state directory, `TMP/dir\xff/state`.
    state: PathBuf,
    promotion: PromotionReport,
    source: SourceReport,
}

impl OddDir {
    fn new() -> OddDir {
        let dir = TestDir::new();
        let odd = dir.join(OsStr::from_bytes(b"dir\xff"));
        std::fs::create_dir(&odd).unwrap();
        let shown = format!("{}/dir\\377", text(dir.path()));
        let store = Store::open(&dir.store()).unwrap();
        let state = odd.join("state");
        let root = state.join("native-builds").join(RUN_ID);
        write_sample_result_root(&root, "local", RUN_ID, true).unwrap();
        let promotion = promote_native_build_result(
            &root,
            &store,
            &PromoteOptions {
                progress: None,
                out_link: Some(OutLink {
                    state_dir: &state,
                    link: &odd.join("result"),
                }),
            },
        )
        .unwrap();
        let source = common::add_sample_source(
            &store,
            &odd.join("src"),
            &[("Makefile", b"all:\n".as_slice(), 0o644)],
        );
        OddDir {
            _dir: dir,
            store,
            odd,
            shown,
            state,
            promotion,
            source,
        }
    }

    /// How JSON shows `path`, a path in `TMP/dir\xff`.
    fn shown(&self, path: &Path) -> String {
        let rest = path.strip_prefix(&self.odd).unwrap();
        format!("{}/{}", self.shown, text(rest))
    }

    /// Asserts that `value`, a part of the JSON report `report`, is how
    /// JSON shows `path`, a path in `TMP/dir\xff`.
    #[track_caller]
    fn assert_shown(&self, value: &Value, path: &Path, report: &Value) {
        assert_eq!(*value, self.shown(path), "{report:#}");
    }

    /// How JSON shows each of `paths`.
    fn shown_all(&self, paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| self.shown(p)).collect()
    }

    /// The path that the object at `path` would have in a store at
    /// `TMP/dir\xff/store`, for reports built by hand.
    fn elsewhere(&self, path: &Path) -> PathBuf {
        self.odd.join("store").join(path.file_name().unwrap())
    }

    /// [`OddDir::elsewhere`] of each of `paths`.
    fn elsewhere_all(&self, paths: &[PathBuf]) -> Vec<PathBuf> {
        paths.iter().map(|p| self.elsewhere(p)).collect()
    }

    /// Checks the `path`s of `reports`, one for each of the store's
    /// `objects`, as JSON shows them: as text; and, each moved to
    /// [`OddDir::elsewhere`] through `path`, escaped.
    #[track_caller]
    fn check_object_paths<T: serde::Serialize>(
        &self,
        objects: &[PathBuf],
        reports: Vec<T>,
        path: fn(&mut T) -> &mut PathBuf,
    ) {
        assert_eq!(
            sorted_strings(&each(&json_of(&reports), "path")),
            texts(objects)
        );
        let elsewhere: Vec<T> = reports
            .into_iter()
            .map(|mut report| {
                let at = path(&mut report);
                *at = self.elsewhere(at);
                report
            })
            .collect();
        assert_eq!(
            sorted_strings(&each(&json_of(&elsewhere), "path")),
            self.shown_all(&self.elsewhere_all(objects))
        );
    }

    /// The paths of the store's objects, sorted.
    fn objects(&self) -> Vec<PathBuf> {
        let mut paths = object_paths(&self.store).unwrap();
        paths.sort();
        paths
    }
}

/// `path`, which is UTF-8, as text.
fn text(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("not UTF-8: {path:?}"))
}

/// Each of `paths`, which are UTF-8, as text.
fn texts(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| text(p).to_string()).collect()
}

/// `value` as JSON, which must not fail.
fn json_of(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| panic!("cannot serialise: {e}"))
}

/// The `key` of each element of the JSON array `array`.
fn each(array: &Value, key: &str) -> Value {
    let array = array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"));
    Value::Array(array.iter().map(|e| e[key].clone()).collect())
}

#[test]
fn a_store_whose_path_is_not_utf8_is_refused_naming_it_escaped_and_nothing_made() {
    let dir = TestDir::new();
    let odd = dir.join(OsStr::from_bytes(b"dir\xff"));
    let root = odd.join("store");
    let shown = format!("{}/dir\\377/store", text(dir.path()));
    let refused = |e: Option<Error>| {
        let e = e.expect("the store is refused");
        assert!(
            matches!(&e, Error::StorePathNotText { path } if *path == root),
            "{e:?}"
        );
        assert_eq!(e.exit_status(), ExitStatus::Usage);
        assert!(e.to_string().contains(&shown), "{e}");
    };
    refused(Store::open(&root).err());
    refused(Store::open_tentatively(&root).err());
    assert!(!odd.exists(), "made {odd:?}");
    std::fs::create_dir_all(&root).unwrap();
    let opens: [fn(&Path) -> fruix_promote::Result<Store>; 3] = [
        Store::open_existing,
        Store::open_directory,
        Store::open_for_reading,
    ];
    for open in opens {
        refused(open(&root).err());
    }
    let made: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made, Vec::<PathBuf>::new());
}

#[test]
fn promotion_and_source_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddDir::new();
    let promoted = json_of(&s.promotion);
    assert_eq!(
        promoted["out_link"],
        format!("{}/result", s.shown),
        "{promoted:#}"
    );
    assert_eq!(
        promoted["result_store"],
        text(&s.promotion.result_store),
        "{promoted:#}"
    );
    assert!(!s.promotion.artifacts.is_empty());
    for (name, artifact) in &s.promotion.artifacts {
        assert_eq!(
            promoted["artifacts"][name]["store_path"],
            text(&artifact.store_path),
            "{promoted:#}"
        );
    }
    // Store paths, by hand.
    let mut elsewhere = s.promotion.clone();
    elsewhere.result_store = s.elsewhere(&elsewhere.result_store);
    for artifact in elsewhere.artifacts.values_mut() {
        artifact.store_path = s.elsewhere(&artifact.store_path);
    }
    let shown = json_of(&elsewhere);
    s.assert_shown(&shown["result_store"], &elsewhere.result_store, &shown);
    for (name, artifact) in &elsewhere.artifacts {
        let at = &shown["artifacts"][name]["store_path"];
        s.assert_shown(at, &artifact.store_path, &shown);
    }

    let added = json_of(&s.source);
    assert_eq!(added["store_path"], text(&s.source.store_path), "{added:#}");
    assert_eq!(added["new"], true, "{added:#}");
    let mut elsewhere = s.source.clone();
    elsewhere.store_path = s.elsewhere(&elsewhere.store_path);
    let shown = json_of(&elsewhere);
    s.assert_shown(&shown["store_path"], &elsewhere.store_path, &shown);
}

#[test]
fn list_info_verify_and_registry_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddDir::new();
    let objects = s.objects();
    let listed = list_store(&s.store, &Filter::default()).unwrap();
    s.check_object_paths(&objects, listed, |l| &mut l.path);

    let bundle = s.promotion.result_store.file_name().unwrap();
    let mut bundle_info = info(&s.store, text(Path::new(bundle))).unwrap();
    assert!(!bundle_info.references.is_empty());
    bundle_info.path = s.elsewhere(&bundle_info.path);
    bundle_info.references = s.elsewhere_all(&bundle_info.references);
    let shown = json_of(&bundle_info);
    s.assert_shown(&shown["path"], &bundle_info.path, &shown);
    assert_eq!(
        shown["references"],
        json!(s.shown_all(&bundle_info.references)),
        "{shown:#}"
    );

    let verified = verify_objects(&objects, None, None).unwrap();
    s.check_object_paths(&objects, verified, |v| &mut v.path);

    // A file someone put in the store, whose name is not UTF-8: foreign.
    let foreign = s.store.path().join(OsStr::from_bytes(b"junk\xff"));
    std::fs::write(&foreign, "").unwrap();
    let registry = check_registry(&s.store).unwrap();
    assert_eq!(
        json_of(&registry),
        json!({
            "missing": [],
            "unregistered": [],
            "foreign": [format!("{}/junk\\377", text(s.store.path()))],
            "references": []
        })
    );
    // Store paths, by hand.
    let elsewhere = s.elsewhere_all(&objects);
    let registry = RegistryCheck {
        missing: vec![elsewhere[0].clone()],
        unregistered: vec![elsewhere[1].clone()],
        foreign: Vec::new(),
        references: vec![ReferenceProblem {
            object: s.elsewhere(&s.promotion.result_store),
            reference: elsewhere[0].clone(),
            problem: ReferenceFault::NotRegistered,
        }],
    };
    assert_eq!(
        json_of(&registry),
        json!({
            "missing": [s.shown(&elsewhere[0])],
            "unregistered": [s.shown(&elsewhere[1])],
            "foreign": [],
            "references": [{
                "object": s.shown(&s.elsewhere(&s.promotion.result_store)),
                "reference": s.shown(&elsewhere[0]),
                "problem": "not-registered",
            }],
        })
    );
}

#[test]
fn repair_and_pool_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddDir::new();
    let objects = s.elsewhere_all(&s.objects());
    let bundle = s.elsewhere(&s.promotion.result_store);
    let entry = s.odd.join("store").join(".links").join("0".repeat(64));
    let reference = ReferenceProblem {
        object: bundle.clone(),
        reference: objects[0].clone(),
        problem: ReferenceFault::NotRecorded,
    };
    let repair = Repair {
        removed_objects: objects.clone(),
        removed_pool_entries: vec![entry.clone()],
        removed_bundles: vec![bundle.clone()],
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
            "removed_bundles": [s.shown(&bundle)],
            "removed_referrers": each,
            "unregistered": each,
            "recorded_references": [{
                "object": s.shown(&bundle),
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
fn roots_and_gc_reports_show_links_and_result_roots_that_are_not_utf8_escaped() {
    let s = OddDir::new();
    let link = s.odd.join("result");
    let bundle = s.promotion.result_store.file_name().unwrap();
    // A direct root reaching the bundle through `TMP/dir\xff/alias`, a
    // link to the store.
    let alias = s.odd.join("alias");
    std::os::unix::fs::symlink(s.store.path(), &alias).unwrap();
    let direct = s.state.join("gcroots").join("by-alias");
    std::os::unix::fs::symlink(alias.join(bundle), &direct).unwrap();
    let listed = roots::list(&s.state, s.store.path()).unwrap();
    assert_eq!(
        json_of(&listed),
        json!([
            {
                "link": s.shown(&link),
                "indirect": true,
                "target": text(&s.promotion.result_store),
                "object": text(Path::new(bundle)),
                "dead": false,
                "leads_nowhere": false,
            },
            {
                "link": s.shown(&direct),
                "indirect": false,
                "target": s.shown(&alias.join(bundle)),
                "object": text(Path::new(bundle)),
                "dead": false,
                "leads_nowhere": false,
            },
        ])
    );
    // With both links gone, the out-link's root is dead, nothing keeps the
    // objects, and the promoted result root goes.
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&direct).unwrap();
    let report = collect(
        &s.store,
        &GcOptions {
            state_dir: s.state.clone(),
            dry_run: true,
            max_freed: None,
            keep_result_roots: false,
            older_than: Duration::ZERO,
            progress: None,
        },
    )
    .unwrap();
    let shown = json_of(&report);
    assert_eq!(shown["dead_roots"], json!([s.shown(&link)]), "{shown:#}");
    let result_root = s.state.join("native-builds").join(RUN_ID);
    assert_eq!(
        shown["result_roots"],
        json!([s.shown(&result_root)]),
        "{shown:#}"
    );
    let objects = s.objects();
    assert_eq!(
        sorted_strings(&each(&shown["objects"], "path")),
        texts(&objects)
    );
    // Store paths, by hand.
    let mut elsewhere = report.clone();
    for removed in &mut elsewhere.objects {
        removed.path = s.elsewhere(&removed.path);
    }
    assert_eq!(
        sorted_strings(&each(&json_of(&elsewhere)["objects"], "path")),
        s.shown_all(&s.elsewhere_all(&objects))
    );
}

#[test]
fn archive_reports_show_a_path_that_is_not_utf8_escaped() {
    let s = OddDir::new();
    let objects = s.elsewhere_all(&s.objects());
    let exported = ExportReport {
        objects: objects.clone(),
        bytes: 1,
    };
    assert_eq!(
        json_of(&exported),
        json!({ "objects": s.shown_all(&objects), "bytes": 1 })
    );
    let imported = ImportReport {
        imported: vec![objects[0].clone()],
        present: objects[1..].to_vec(),
        bytes: 2,
    };
    assert_eq!(
        json_of(&imported),
        json!({
            "imported": [s.shown(&objects[0])],
            "present": s.shown_all(&objects[1..]),
            "bytes": 2,
        })
    );
}
