//! Roots and what is not fruix's in a store, from a review: a root's link
//! is never made in the store, a `gcroots/auto` that is a symlink is
//! refused rather than written through, and `store gc` and `store verify
//! --repair` leave alone the entries of a store that are not named as
//! objects (reported by `store verify` as foreign), and a link made in
//! `gcroots/` is a direct root, listed once.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::util::{
    fruix, object_names, promote_linked, promote_report, promoted_store, run, run_failing,
    run_json, run_ok, sample_root, store_verify, strings_of,
};

/// `fruix store ARGS --store STORE --state-dir STATE`.
fn store_command(store: &Path, state: &Path, args: &[&str]) -> Command {
    let mut cmd = fruix();
    cmd.arg("store")
        .args(args)
        .arg("--store")
        .arg(store)
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// The strings of the JSON array `array`.
fn texts(array: &Value) -> Vec<&str> {
    let array = array
        .as_array()
        .unwrap_or_else(|| panic!("no array: {array}"));
    array.iter().map(|v| v.as_str().unwrap()).collect()
}

/// `store add-root OBJECT LINK`.
fn add_root(store: &Path, state: &Path, object: &Path, link: &Path) -> Command {
    let mut cmd = store_command(store, state, &["add-root"]);
    cmd.arg(object).arg(link);
    cmd
}

/// Promotes the sample result root, written at `dir/NAME`, into `store`,
/// kept by the root `link` registered in `state`.
fn promote_sample_linked(dir: &Path, name: &str, store: &Path, state: &Path, link: &Path) {
    run_ok(&mut promote_linked(
        store,
        state,
        link,
        &sample_root(dir, name),
        &[],
    ));
}

/// [`promote_sample_linked`] `dir/root` into `dir/store`, kept by the root
/// `dir/result` registered in `dir/state`; returns the store, the state
/// directory and the link.
fn linked_sample(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (store, state) = (dir.join("store"), dir.join("state"));
    let link = dir.join("result");
    promote_sample_linked(dir, "root", &store, &state, &link);
    (store, state, link)
}

/// [`promoted_store`]: the sample result root `dir/root` promoted into
/// `dir/store`, no root keeping it; returns the store, the state directory
/// `dir/state` (not made) and the result bundle's path.
fn unrooted_sample(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (store, report) = promoted_store(dir);
    let bundle = PathBuf::from(report["result_store"].as_str().unwrap());
    (store, dir.join("state"), bundle)
}

/// Regression: `--out-link` and `store add-root` made their link in the
/// store when asked to; `store gc` then removed it as an object, and the
/// next collection what it kept. `add-root` over a plain file, or into a
/// missing directory, exited 3 (naming a temporary) where the rule for
/// output paths is 2. Each is refused, exit 2, before anything is done.
#[test]
fn a_root_s_link_is_never_made_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = (dir.path().join("store"), dir.path().join("state"));
    let root = sample_root(dir.path(), "root");
    let report = promote_report(&store, &root, &[]);
    let bundle = PathBuf::from(report["result_store"].as_str().unwrap());
    let before = object_names(&store);

    let in_store = store.join("myresult");
    run_failing(
        &mut promote_linked(&store, &state, &in_store, &root, &[]),
        2,
        &["--out-link", "lies in the store", "--no-out-link"],
    );
    let in_object = bundle.join("link");
    for link in [&in_store, &in_object] {
        run_failing(
            &mut add_root(&store, &state, &bundle, link),
            2,
            &["lies in the store"],
        );
        assert!(link.symlink_metadata().is_err(), "{}", link.display());
    }
    let file = dir.path().join("file");
    fs::write(&file, "kept").unwrap();
    run_failing(
        &mut add_root(&store, &state, &bundle, &file),
        2,
        &["exists and is not a symlink"],
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "kept");
    let missing = dir.path().join("no-such-dir");
    let stderr = run_failing(
        &mut add_root(&store, &state, &bundle, &missing.join("l")),
        2,
        &["is not a directory; create it or choose another path"],
    );
    assert!(!stderr.contains("fruix-tmp"), "{stderr}");
    assert_eq!(object_names(&store), before, "nothing promoted");
    assert!(!state.exists(), "no root registered");
}

/// Regression: with `gcroots/auto` a symlink, `store add-root` wrote its
/// root through it, while `store gc` took it for another store's root and
/// never read it: it removed everything. Both refuse it now (exit 3,
/// naming it), and nothing is removed.
#[test]
fn a_gcroots_auto_that_is_a_symlink_is_refused_and_nothing_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state, bundle) = unrooted_sample(dir.path());
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::create_dir_all(state.join("gcroots")).unwrap();
    let auto = state.join("gcroots/auto");
    std::os::unix::fs::symlink(&elsewhere, &auto).unwrap();
    let before = object_names(&store);
    let named = auto.display().to_string();
    let link = dir.path().join("keep");
    run_failing(
        &mut add_root(&store, &state, &bundle, &link),
        3,
        &[&named, "not a directory"],
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    run_failing(
        &mut store_command(&store, &state, &["gc"]),
        3,
        &[&named, "not a directory"],
    );
    assert_eq!(object_names(&store), before, "nothing collected");
}

/// Regression: `store gc` removed every entry of the store the registry
/// does not name, a file or a link someone put there included (a link to
/// a root's object, say), and `store verify` reported a directory whose
/// name is not UTF-8 as a corrupt object, which `--repair` removed. What
/// is not named as an object is not fruix's: `store verify` reports it as
/// foreign (not an error), and neither a repair nor a collection removes
/// it. An unregistered directory named as an object (what a killed
/// promotion leaves) is still collected.
#[test]
fn gc_and_repair_leave_what_is_not_named_as_an_object_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state, _) = linked_sample(dir.path());
    let objects = object_names(&store);
    let readme = store.join("README.txt");
    fs::write(&readme, "notes").unwrap();
    let etc = store.join("etc");
    std::os::unix::fs::symlink("/etc", &etc).unwrap();
    let odd = store.join(OsStr::from_bytes(b"a\xff"));
    fs::create_dir(&odd).unwrap();
    let leftover = store.join(format!("{}-fruix-native-world-left", "0".repeat(40)));
    fs::create_dir(&leftover).unwrap();

    let verify = |flags: &[&str]| -> Value {
        let out = run(&mut store_verify(&store, &[&["--json"], flags].concat()));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let found = verify(&[]);
    assert_eq!(found["corrupt"], 0, "{found:#}");
    let mut foreign = vec![etc.clone(), readme.clone(), odd.clone()];
    foreign.sort();
    let shown: Vec<String> = foreign
        .iter()
        .map(|p| fruix_core::escape::path_text(p).into_owned())
        .collect();
    assert_eq!(texts(&found["foreign"]), shown, "{found:#}");
    let unregistered = leftover.to_str().unwrap();
    assert_eq!(texts(&found["unregistered"]), [unregistered]);
    let text = run_ok(&mut store_verify(&store, &[]));
    assert!(
        text.contains("foreign ") && text.contains("a\\377"),
        "{text}"
    );

    verify(&["--repair"]);
    let gc = run_json(&mut store_command(&store, &state, &["gc", "--json"]));
    let removed = strings_of(&gc["objects"], "path");
    assert_eq!(removed, [unregistered], "{gc:#}");
    for p in &foreign {
        assert!(p.symlink_metadata().is_ok(), "{} removed", p.display());
    }
    assert_eq!(fs::read_to_string(&readme).unwrap(), "notes");
    let mut expected = objects;
    expected.extend(["README.txt", "a\u{fffd}", "etc"].map(String::from));
    expected.sort();
    assert_eq!(object_names(&store), expected);
}

/// Regression: a direct root (a link in `gcroots/`) whose object is gone
/// was listed as `dead` like an indirect one, yet `store gc` never removes
/// it (it is the user's link): `store roots` says so. One whose target
/// does not exist outside the store leads nowhere (it may be another
/// store's), and is left too.
#[test]
fn a_dead_direct_root_is_said_to_be_left_by_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state, _) = unrooted_sample(dir.path());
    fs::create_dir_all(state.join("gcroots")).unwrap();
    let dead = state.join("gcroots/old-profile");
    let removed =
        "0123456789abcdef0123456789abcdef01234567-fruix-native-build-result-15.0-STABLE-local";
    std::os::unix::fs::symlink(store.join(removed), &dead).unwrap();
    let nowhere = state.join("gcroots/elsewhere");
    std::os::unix::fs::symlink(dir.path().join("gone"), &nowhere).unwrap();
    let listed = run_ok(&mut store_command(&store, &state, &["roots"]));
    for line in [
        format!(
            "{}: dead (a direct root: `store gc` leaves it",
            dead.display()
        ),
        format!(
            "{} -> {}: leads nowhere (its target does not exist; `store gc` leaves it",
            nowhere.display(),
            dir.path().join("gone").display()
        ),
    ] {
        assert!(listed.contains(&line), "{line:?} in {listed}");
    }
    run_ok(&mut store_command(&store, &state, &["gc"]));
    assert!(dead.symlink_metadata().is_ok(), "gc removed it");
    assert!(nowhere.symlink_metadata().is_ok(), "gc removed it");
}

/// Regression (review of the registry and its lifecycle): two stores
/// shared a state directory (as root, always `/var/lib/fruix`), and with
/// one away (its disk not mounted) a collection of the other removed its
/// indirect root, its `./result` still there: the next collection of the
/// first removed every object that root kept. The root leads nowhere for
/// the other store (listed, never removed), and keeps its objects once
/// its store is back.
#[test]
fn a_store_away_keeps_its_roots_in_a_shared_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let state = path("shared");
    let (a, b) = (path("sA"), path("sB"));
    let (result_a, result_b) = (path("resultA"), path("resultB"));
    promote_sample_linked(dir.path(), "ra", &a, &state, &result_a);
    promote_sample_linked(dir.path(), "rb", &b, &state, &result_b);
    let kept = object_names(&a);
    fs::rename(&a, path("sA.off")).unwrap();
    let roots = run_json(&mut store_command(&b, &state, &["roots", "--json"]));
    let away = roots
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["link"] == result_a.to_str().unwrap())
        .unwrap_or_else(|| panic!("{roots}"));
    assert_eq!(
        (&away["dead"], &away["leads_nowhere"], &away["object"]),
        (&json!(false), &json!(true), &Value::Null),
        "{roots}"
    );
    let report = run_json(&mut store_command(&b, &state, &["gc", "--json"]));
    assert_eq!(report["dead_roots"], json!([]), "{report}");
    fs::rename(path("sA.off"), &a).unwrap();
    run_ok(&mut store_command(&a, &state, &["gc", "--quiet"]));
    assert_eq!(object_names(&a), kept, "store A lost what its root keeps");
}

/// Regression: a root nested more than 8 directories below `gcroots/` was
/// passed over, and `store gc` removed what it kept.
#[test]
fn a_root_nested_deep_in_gcroots_keeps_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state, bundle) = unrooted_sample(dir.path());
    let kept = object_names(&store);
    let deep = (1..=12).fold(state.join("gcroots"), |d, i| d.join(format!("p{i}")));
    fs::create_dir_all(&deep).unwrap();
    std::os::unix::fs::symlink(&bundle, deep.join("root")).unwrap();
    run_ok(&mut store_command(&store, &state, &["gc", "--quiet"]));
    assert_eq!(object_names(&store), kept);
}

/// Regression: `store add-root OBJECT STATE/gcroots/auto/NAME` succeeded;
/// the next collection took the link for a dead registration and removed
/// it, and the one after removed its objects. A link there (or an
/// out-link) is refused, exit 2, before anything is done.
#[test]
fn a_root_s_link_is_never_made_where_roots_are_registered() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = (dir.path().join("store"), dir.path().join("state"));
    let root = sample_root(dir.path(), "root");
    run_ok(&mut promote_linked(
        &store,
        &state,
        &dir.path().join("result"),
        &root,
        &[],
    ));
    let bundle = fs::read_link(dir.path().join("result")).unwrap();
    let auto = state.join("gcroots/auto");
    let before = fs::read_dir(&auto).unwrap().count();
    run_failing(
        &mut add_root(&store, &state, &bundle, &auto.join("zzz")),
        2,
        &["lies in", "gcroots/auto, where fruix registers roots"],
    );
    run_failing(
        &mut promote_linked(&store, &state, &auto.join("r"), &root, &[]),
        2,
        &["--out-link", "where fruix registers roots", "--no-out-link"],
    );
    assert_eq!(fs::read_dir(&auto).unwrap().count(), before);
}

/// The entries of `STATE/gcroots/auto` (none when it is not there).
fn auto_entries(state: &Path) -> Vec<PathBuf> {
    match fs::read_dir(state.join("gcroots/auto")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

/// `store roots --json`, as (link, indirect, object) rows.
fn listed_roots(store: &Path, state: &Path) -> Vec<(String, bool, String)> {
    let roots = run_json(&mut store_command(store, state, &["roots", "--json"]));
    let rows = roots.as_array().unwrap_or_else(|| panic!("{roots}"));
    rows.iter()
        .map(|r| {
            (
                r["link"].as_str().unwrap().to_string(),
                r["indirect"].as_bool().unwrap(),
                r["object"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Regression: `store add-root OBJECT STATE/gcroots/NAME` made the link
/// and also registered it in `gcroots/auto`, so `store roots` listed the
/// one root twice (direct, and indirect through `auto`). A link in
/// `gcroots/` (at any depth) is a direct root, as in Nix: made, not
/// registered, listed once, and `store gc` keeps what it keeps. Adding it again drops a registration an
/// earlier fruix made for it.
#[test]
fn a_root_added_in_gcroots_is_direct_and_listed_once() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (store, state, bundle) = unrooted_sample(dir.path());
    let kept = object_names(&store);
    let gcroots = std::path::absolute(state.join("gcroots")).unwrap();
    fs::create_dir_all(gcroots.join("profiles")).unwrap();
    let (mine, nested) = (gcroots.join("myroot"), gcroots.join("profiles/p"));
    // The registration an earlier fruix made for `mine`, named after its
    // path.
    fs::create_dir_all(gcroots.join("auto")).unwrap();
    let hash = hex::encode(&sha2::Sha256::digest(mine.as_os_str().as_bytes())[..16]);
    std::os::unix::fs::symlink(&mine, gcroots.join("auto").join(hash)).unwrap();
    for link in [&mine, &nested] {
        let mut cmd = add_root(&store, &state, &bundle, link);
        let added = run_json(cmd.arg("--json"));
        let expected = json!({
            "link": link.to_str().unwrap(),
            "object": bundle.to_str().unwrap(),
        });
        assert_eq!(added, expected);
        assert_eq!(fs::read_link(link).unwrap(), bundle);
    }
    let object = bundle.to_str().unwrap().to_string();
    let expected = vec![
        (mine.to_str().unwrap().to_string(), false, object.clone()),
        (nested.to_str().unwrap().to_string(), false, object.clone()),
    ];
    assert_eq!(listed_roots(&store, &state), expected);
    assert_eq!(auto_entries(&state), Vec::<PathBuf>::new());
    // Text output keeps its shape.
    let said = run_ok(&mut add_root(&store, &state, &bundle, &mine));
    assert_eq!(
        said,
        format!("{} -> {}\n", mine.display(), bundle.display())
    );
    assert_eq!(listed_roots(&store, &state), expected);
    run_ok(&mut store_command(&store, &state, &["gc", "--quiet"]));
    assert_eq!(object_names(&store), kept);
    // A link elsewhere is still registered, and indirect.
    let result = dir.path().join("result");
    run_ok(&mut add_root(&store, &state, &bundle, &result));
    assert_eq!(auto_entries(&state).len(), 1);
    let listed = listed_roots(&store, &state);
    assert!(listed.contains(&(result.to_str().unwrap().to_string(), true, object)));
    assert_eq!(listed.len(), 3);
}

/// Regression: `native-build promote --out-link STATE/gcroots/NAME` (and
/// `build`, through the same promotion) registered its link in
/// `gcroots/auto` too, listing the root twice. It is a direct root.
#[test]
fn an_out_link_in_gcroots_is_a_direct_root() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = (dir.path().join("store"), dir.path().join("state"));
    let gcroots = std::path::absolute(state.join("gcroots")).unwrap();
    fs::create_dir_all(&gcroots).unwrap();
    let link = gcroots.join("result");
    promote_sample_linked(dir.path(), "root", &store, &state, &link);
    let kept = object_names(&store);
    let bundle = fs::read_link(&link).unwrap();
    let expected = vec![(
        link.to_str().unwrap().to_string(),
        false,
        bundle.to_str().unwrap().to_string(),
    )];
    assert_eq!(listed_roots(&store, &state), expected);
    assert_eq!(auto_entries(&state), Vec::<PathBuf>::new());
    run_ok(&mut store_command(&store, &state, &["gc", "--quiet"]));
    assert_eq!(object_names(&store), kept);
}

/// Regression: `store gc` under a state directory that is not there (a
/// mistyped `--state-dir`, or none given and the default never made)
/// found no roots and removed every object, saying only what it removed.
/// It is refused (exit 2, a JSON error), a dry run and `store delete`
/// too, and the store keeps every object.
#[test]
fn gc_under_a_state_directory_that_is_not_there_is_refused_keeping_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state, link) = linked_sample(dir.path());
    let objects = object_names(&store);
    assert!(!objects.is_empty());
    let bundle = fs::read_link(&link).unwrap();
    let typo = dir.path().join("sate");
    for args in [&["gc", "--json"][..], &["gc", "--dry-run", "--json"][..]] {
        let out = run(&mut store_command(&store, &typo, args));
        crate::util::json_error(&out, 2, "is not there, so no root could keep anything");
    }
    let mut delete = store_command(&store, &typo, &["delete", "--json"]);
    crate::util::json_error(&run(delete.arg(&bundle)), 2, "--state-dir");
    // None given, and the default (FRUIX_STATE_DIR here) never made.
    let mut gc = fruix();
    gc.env("FRUIX_STATE_DIR", dir.path().join("never-made"))
        .args(["store", "gc", "--json", "--store"])
        .arg(&store);
    crate::util::json_error(&run(&mut gc), 2, "FRUIX_STATE_DIR");
    // Regression: listing the roots, or those keeping an object, under it
    // said there were none (exit 0): every object looked unrooted.
    let roots = run(&mut store_command(&store, &typo, &["roots", "--json"]));
    crate::util::json_error(&roots, 2, "is not there, so no root could keep anything");
    let mut query = store_command(&store, &typo, &["query", "--roots", "--json"]);
    let query = run(query.arg(&bundle));
    crate::util::json_error(&query, 2, "is not there, so no root could keep anything");
    assert_eq!(object_names(&store), objects);
    // An empty state directory: `store roots` says it has none (it said
    // nothing), stdout still the empty list.
    let empty = dir.path().join("empty-state");
    fs::create_dir(&empty).unwrap();
    let out = run(&mut store_command(&store, &empty, &["roots"]));
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no root in") && said.contains("empty-state/gcroots"),
        "{said}"
    );
    // The right one collects, keeping what its root keeps.
    run_ok(&mut store_command(&store, &state, &["gc", "--quiet"]));
    assert_eq!(object_names(&store), objects);
}
