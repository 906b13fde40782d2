//! The store's lifecycle as users run it: the registry, `./result` roots,
//! `store gc` (also killed midway, and racing promotions), `store delete`,
//! the queries, and a store written before the registry existed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fruix_core::testing::TestDir;
use serde_json::Value;

use crate::util::{
    fruix, object_names, require_tool, run, run_ok, snapshot, spawn_reading_stderr, spawn_silenced,
    strings_of,
};

/// What these tests do in a [`TestDir`]: unsigned sample result roots, and
/// a store and a state directory driven through the `fruix` binary.
trait Lab {
    /// An unsigned sample result root `name` by `executor`, run `run_id`,
    /// with one more file of its world holding `unique` (a pool entry no
    /// other root shares).
    fn unique_root(&self, name: &str, executor: &str, run_id: &str, unique: &str) -> PathBuf;
    /// `fruix store SUBCOMMAND --store STORE [--state-dir STATE] ARGS`: the
    /// state directory for the subcommands that use roots.
    fn store_command(&self, subcommand: &str, args: &[&str]) -> Command;
    /// Promotes `root`, linking the bundle at `link` (a root) or not at all.
    fn promote(&self, root: &Path, link: Option<&str>) -> Value;
    fn json(&self, subcommand: &str, args: &[&str]) -> Value;
    /// The store's object directories.
    fn objects(&self) -> Vec<String>;
    /// Pool entries no object links.
    fn orphaned_pool_entries(&self) -> usize;
    /// `store verify` passes.
    fn verified(&self);
}

impl Lab for TestDir {
    fn unique_root(&self, name: &str, executor: &str, run_id: &str, unique: &str) -> PathBuf {
        let root = self.root(name, executor, run_id, false);
        std::fs::write(root.join("artifacts/world/etc/unique"), unique).unwrap();
        root
    }

    fn store_command(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = fruix();
        cmd.args(["store", subcommand, "--store"]).arg(self.store());
        if ["query", "roots", "gc", "delete", "add-root"].contains(&subcommand) {
            // Made: a collection refuses a state directory that is not there.
            std::fs::create_dir_all(self.join("state")).unwrap();
            cmd.arg("--state-dir").arg(self.join("state"));
        }
        cmd.args(args);
        cmd
    }

    fn promote(&self, root: &Path, link: Option<&str>) -> Value {
        let mut cmd = fruix();
        cmd.args(["native-build", "promote", "--json", "--store"])
            .arg(self.store())
            .arg("--state-dir")
            .arg(self.join("state"));
        match link {
            Some(l) => cmd.arg("--out-link").arg(self.join(l)),
            None => cmd.arg("--no-out-link"),
        };
        serde_json::from_str(&run_ok(cmd.arg(root))).unwrap()
    }

    fn json(&self, subcommand: &str, args: &[&str]) -> Value {
        let mut cmd = self.store_command(subcommand, args);
        serde_json::from_str(&run_ok(cmd.arg("--json"))).unwrap()
    }

    fn objects(&self) -> Vec<String> {
        object_names(&self.store())
    }

    fn orphaned_pool_entries(&self) -> usize {
        std::fs::read_dir(self.store().join(".links"))
            .unwrap()
            .flatten()
            .filter(|e| e.metadata().unwrap().nlink() == 1)
            .count()
    }

    fn verified(&self) {
        run_ok(&mut self.store_command("verify", &["--quiet"]));
    }
}

/// The store path of a promotion report's bundle.
fn bundle_of(report: &Value) -> &str {
    report["result_store"].as_str().unwrap()
}

/// The store path of a promotion report's world artifact.
fn world_of(report: &Value) -> &str {
    report["artifacts"]["world"]["store_path"].as_str().unwrap()
}

/// The store path of a promotion report's bundle and artifacts.
fn closure_of(report: &Value) -> Vec<String> {
    let mut paths = vec![bundle_of(report).to_string()];
    for a in report["artifacts"].as_object().unwrap().values() {
        paths.push(a["store_path"].as_str().unwrap().to_string());
    }
    paths.sort();
    paths
}

/// The `path` of each element of the JSON array `objects`, sorted.
fn sorted_paths(objects: &Value) -> Vec<&str> {
    let mut paths = strings_of(objects, "path");
    paths.sort();
    paths
}

fn name_of(path: &str) -> String {
    Path::new(path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A new [`TestDir`] holding a rooted run (A), an unrooted run of the same
/// artifacts (B) and an unrooted run of other artifacts with content of
/// their own (C), with their promotion reports.
fn three_runs() -> (TestDir, [Value; 3]) {
    let lab = TestDir::new();
    let a = lab.promote(
        &lab.root("a", "local", "20260101T000000Z", false),
        Some("result-a"),
    );
    let b = lab.promote(&lab.root("b", "local", "20260102T000000Z", false), None);
    let c = lab.promote(
        &lab.unique_root("c", "jail", "20260103T000000Z", "only C has this"),
        None,
    );
    (lab, [a, b, c])
}

#[test]
fn gc_removes_exactly_the_unreachable_closure_and_orphaned_pool_entries() {
    let (lab, [a, b, c]) = three_runs();
    let rooted = closure_of(&a);
    let before: Vec<Vec<String>> = rooted.iter().map(|p| snapshot(Path::new(p))).collect();
    let mut dead: Vec<String> = closure_of(&c);
    dead.push(bundle_of(&b).to_string());
    dead.sort();
    // A dry run lists what would go, and removes nothing.
    let objects = lab.objects();
    let dry = lab.json("gc", &["--dry-run"]);
    assert_eq!(sorted_paths(&dry["objects"]), dead);
    assert_eq!(lab.objects(), objects);
    let report = lab.json("gc", &[]);
    assert_eq!(sorted_paths(&report["objects"]), dead);
    assert_eq!(report["kept"], rooted.len());
    assert_eq!(report["pool_entries"], 1, "C's own file: {report}");
    assert_eq!(lab.orphaned_pool_entries(), 0);
    let left: Vec<String> = rooted.iter().map(|p| name_of(p)).collect();
    assert_eq!(lab.objects(), left);
    let after: Vec<Vec<String>> = rooted.iter().map(|p| snapshot(Path::new(p))).collect();
    assert_eq!(before, after, "the rooted closure is untouched");
    lab.verified();
    // Nothing more to collect.
    let again = lab.json("gc", &[]);
    assert_eq!(again["objects"], serde_json::json!([]));
}

#[test]
fn result_links_are_roots_until_removed_then_dead_and_collected() {
    let (lab, [a, _, _]) = three_runs();
    let roots = lab.json("roots", &[]);
    assert_eq!(roots.as_array().unwrap().len(), 1, "{roots}");
    assert_eq!(roots[0]["link"], lab.join("result-a").to_str().unwrap());
    assert_eq!(roots[0]["object"], a["result_store"]);
    assert_eq!(roots[0]["dead"], false);
    std::fs::remove_file(lab.join("result-a")).unwrap();
    let roots = lab.json("roots", &[]);
    assert_eq!(roots[0]["dead"], true, "{roots}");
    let out = run_ok(&mut lab.store_command("roots", &[]));
    assert!(out.contains("(indirect): dead"), "{out}");
    // Regression: the summary, all that --quiet prints, left out the roots
    // a collection removes.
    let out = run_ok(&mut lab.store_command("gc", &["--dry-run", "--quiet"]));
    assert!(
        out.starts_with("would remove ") && out.contains(", 1 dead root, 0 result roots;"),
        "{out}"
    );
    let report = lab.json("gc", &[]);
    assert_eq!(report["dead_roots"].as_array().unwrap().len(), 1);
    assert!(lab.objects().is_empty(), "{:?}", lab.objects());
    assert_eq!(lab.json("roots", &[]), serde_json::json!([]));
    assert_eq!(lab.orphaned_pool_entries(), 0);
    lab.verified();
}

#[test]
fn a_root_pointing_into_the_store_at_no_object_keeps_nothing_and_is_kept() {
    let (lab, [_, _, _]) = three_runs();
    // The link now names the store itself: no object, but no dead root.
    let link = lab.join("result-a");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(lab.store(), &link).unwrap();
    let roots = lab.json("roots", &[]);
    assert_eq!(roots[0]["object"], Value::Null, "{roots}");
    assert_eq!(roots[0]["dead"], false, "{roots}");
    let out = run_ok(&mut lab.store_command("roots", &[]));
    assert!(
        out.contains("(indirect) -> ") && out.contains(": keeps no object"),
        "{out}"
    );
    let report = lab.json("gc", &[]);
    assert_eq!(report["dead_roots"], serde_json::json!([]), "{report}");
    assert!(lab.objects().is_empty(), "{:?}", lab.objects());
    assert_eq!(lab.json("roots", &[]).as_array().unwrap().len(), 1);
}

#[test]
fn queries_follow_the_bundle_to_artifacts_graph() {
    let (lab, [a, b, _]) = three_runs();
    let bundle = bundle_of(&a);
    let world = world_of(&a);
    let paths = |v: Value| -> Vec<String> {
        let mut p: Vec<String> = serde_json::from_value(v).unwrap();
        p.sort();
        p
    };
    let mut artifacts: Vec<String> = closure_of(&a);
    artifacts.retain(|p| p != bundle);
    assert_eq!(
        paths(lab.json("query", &["--references", bundle])),
        artifacts
    );
    let mut bundles = vec![bundle.to_string(), bundle_of(&b).to_string()];
    bundles.sort();
    assert_eq!(paths(lab.json("query", &["--referrers", world])), bundles);
    assert_eq!(
        paths(lab.json("query", &["--requisites", bundle])),
        closure_of(&a)
    );
    assert_eq!(
        paths(lab.json("query", &["--roots", world])),
        [lab.join("result-a").to_str().unwrap()]
    );
    // A link to an object (./result) names the object.
    let via_link = lab.json("info", &[lab.join("result-a").to_str().unwrap()]);
    assert_eq!(via_link[0]["path"], bundle);
    let info = lab.json("info", &[bundle, world]);
    assert_eq!(info[0]["kind"], "bundle");
    assert_eq!(info[1]["kind"], "artifact");
    assert_eq!(info[1]["artifact"], "world");
    assert_eq!(info[0]["run_id"], "20260101T000000Z");
    let total: u64 = info[0]["size"].as_u64().unwrap()
        + artifacts
            .iter()
            .map(|p| lab.json("info", &[p])[0]["size"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(info[0]["closure_size"], total);
    // list: a header, then one row per object; filters narrow it.
    let list = run_ok(&mut lab.store_command("list", &[]));
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header.join(" "),
        "KIND ARTIFACT VERSION EXECUTOR KERNCONF RUN-ID REGISTERED SIZE PATH"
    );
    assert_eq!(list.lines().count(), 1 + lab.objects().len());
    let bundles_listed = lab.json("list", &["--kind", "bundle"]);
    assert_eq!(bundles_listed.as_array().unwrap().len(), 3);
    let jail_worlds = lab.json("list", &["--executor", "jail", "--artifact", "world"]);
    assert_eq!(jail_worlds.as_array().unwrap().len(), 1, "{jail_worlds}");
    let run_b = lab.json("list", &["--run-id", "20260102T000000Z"]);
    assert_eq!(
        run_b.as_array().unwrap().len(),
        1,
        "B added only its bundle"
    );
}

#[test]
fn delete_refuses_what_is_referenced_or_rooted_and_removes_the_rest() {
    let (lab, [a, b, _]) = three_runs();
    let world = world_of(&a);
    let refused = |path: &str, says: &str| {
        let out = run(&mut lab.store_command("delete", &[path]));
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    };
    refused(world, "still in use by");
    refused(bundle_of(&a), "the root");
    let objects = lab.objects();
    assert_eq!(lab.objects(), objects, "a refusal removes nothing");
    let gone = run_ok(&mut lab.store_command("delete", &[bundle_of(&b)]));
    assert_eq!(gone.trim(), bundle_of(&b));
    assert!(!Path::new(bundle_of(&b)).exists());
    lab.verified();
    // Regression: an object deleted was then said to be no store object,
    // with what an object's name is, though its name was one.
    let out = run(&mut lab.store_command("info", &[bundle_of(&b)]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(": not in the store ") && !stderr.contains("not a store object"),
        "{stderr}"
    );
}

#[test]
fn a_store_written_before_the_registry_is_registered_on_first_use() {
    let (lab, [a, b, c]) = three_runs();
    // The store as the release before the registry wrote it: the same
    // objects, no `.fruix` directory.
    std::fs::remove_dir_all(lab.store().join(".fruix")).unwrap();
    let listed = lab.json("list", &[]);
    let paths = sorted_paths(&listed);
    let mut expected: Vec<String> = [closure_of(&a), closure_of(&c)].concat();
    expected.push(bundle_of(&b).to_string());
    expected.sort();
    assert_eq!(paths, expected);
    let world = world_of(&a);
    let referrers = lab.json("query", &["--referrers", world]);
    assert_eq!(referrers.as_array().unwrap().len(), 2, "{referrers}");
    let bundle = lab.json("info", &[bundle_of(&a)]);
    assert_eq!(bundle[0]["kernconf"], "GENERIC");
    lab.verified();
    // And collected as usual: A is still rooted.
    lab.json("gc", &[]);
    assert_eq!(lab.objects().len(), closure_of(&a).len());
    lab.verified();
}

#[test]
fn verify_reports_registered_objects_that_are_missing_and_repair_unregisters_them() {
    let (lab, [a, _, _]) = three_runs();
    let bundle = bundle_of(&a);
    // A registered bundle whose directory went away behind fruix's back.
    // (Read-only directories: the tests run as root, as scripts/test.sh does.)
    std::fs::remove_dir_all(bundle).unwrap();
    let out = run(&mut lab.store_command("verify", &["--json"]));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["missing"], serde_json::json!([bundle]));
    run_ok(&mut lab.store_command("verify", &["--repair", "--quiet"]));
    lab.verified();
    let out = run(&mut lab.store_command("info", &[bundle]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Regression: `result-a` still named the removed bundle, and its root
    // was listed live (keeping nothing) and never collected.
    let roots = lab.json("roots", &[]);
    assert_eq!(roots[0]["link"], lab.join("result-a").to_str().unwrap());
    assert_eq!(roots[0]["dead"], true, "{roots}");
    let report = lab.json("gc", &[]);
    assert_eq!(
        report["dead_roots"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(lab.json("roots", &[]), serde_json::json!([]));
    lab.verified();
}

#[test]
fn an_unregistered_object_is_invisible_and_collected() {
    let (lab, [a, _, _]) = three_runs();
    // A promotion killed between publishing and registering leaves this.
    let world = world_of(&a);
    let copy = lab.store().join("f".repeat(40) + &name_of(world)[40..]);
    let status = Command::new("cp")
        .arg("-a")
        .arg(world)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let out = run(&mut lab.store_command("info", &[copy.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid store object"));
    let verify = lab.json("verify", &[]);
    assert_eq!(verify["unregistered"], serde_json::json!([copy]));
    lab.json("gc", &[]);
    assert!(!copy.exists());
    lab.verified();
}

/// Where [`gc_killed_at_any_point_leaves_a_store_verify_accepts`] kills a
/// collection: right away, or when inotify reports it reaching a stage.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    Start,
    Unregistering,
    FirstObjectHidden,
    FirstPoolEntryRemoved,
    ResultRootRemoved,
}

#[test]
fn gc_killed_at_any_point_leaves_a_store_verify_accepts() {
    use crate::race::Inotify;
    for at in [
        KillAt::Start,
        KillAt::Unregistering,
        KillAt::FirstObjectHidden,
        KillAt::FirstPoolEntryRemoved,
        KillAt::ResultRootRemoved,
    ] {
        let (lab, [a, _, _]) = three_runs();
        for i in 0..8 {
            let root = lab.unique_root(
                &format!("x{i}"),
                "local",
                "20260104T000000Z",
                &format!("x{i}"),
            );
            lab.promote(&root, None);
        }
        // B's promoted result root, in the state directory, old enough to
        // go (a root is told by the bundle it describes, not by its name).
        let results = lab.join("state/native-builds/20260102T000000Z");
        std::fs::create_dir_all(results.parent().unwrap()).unwrap();
        std::fs::rename(lab.join("b"), &results).unwrap();
        let inotify = Inotify::new();
        let meta = inotify.watch(&lab.store().join(".fruix"), libc::IN_MODIFY);
        let store = inotify.watch(&lab.store(), libc::IN_MOVED_TO);
        let links = inotify.watch(&lab.store().join(".links"), libc::IN_DELETE);
        let builds = inotify.watch(&lab.join("state/native-builds"), libc::IN_DELETE);
        let mut child =
            spawn_silenced(&mut lab.store_command("gc", &["--quiet", "--older-than", "0s"]));
        let reached = |e: &crate::race::Event| match at {
            KillAt::Start => true,
            KillAt::Unregistering => e.wd == meta,
            KillAt::FirstObjectHidden => e.wd == store && e.name.starts_with(b".tmp-gc-"),
            KillAt::FirstPoolEntryRemoved => e.wd == links,
            KillAt::ResultRootRemoved => e.wd == builds,
        };
        if !matches!(at, KillAt::Start) {
            inotify.wait(reached);
        }
        child.kill().unwrap();
        let _ = child.wait();
        lab.verified();
        // A second collection finishes the job; the rooted closure is whole.
        lab.json("gc", &["--older-than", "0s"]);
        let left: Vec<String> = closure_of(&a).iter().map(|p| name_of(p)).collect();
        assert_eq!(lab.objects(), left, "after a kill at {at:?}");
        assert_eq!(lab.orphaned_pool_entries(), 0, "after a kill at {at:?}");
        assert!(!results.exists(), "after a kill at {at:?}");
        let leftovers: Vec<String> = std::fs::read_dir(lab.store())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "after a kill at {at:?}: {leftovers:?}"
        );
        lab.verified();
    }
}

#[test]
fn promotions_racing_collections_never_lose_a_rooted_object() {
    let lab = TestDir::new();
    let roots: Vec<PathBuf> = (0..12)
        .map(|i| {
            lab.unique_root(
                &format!("r{i}"),
                "local",
                &format!("202601{:02}T000000Z", i + 1),
                &format!("{i}"),
            )
        })
        .collect();
    // The store exists (a collection refuses a missing store).
    lab.promote(
        &lab.root("first", "local", "20251231T000000Z", false),
        Some("result-first"),
    );
    for (i, root) in roots.iter().enumerate() {
        let link = lab.join(format!("result-{i}"));
        let mut promote = fruix();
        promote
            .args(["native-build", "promote", "--quiet", "--store"])
            .arg(lab.store())
            .arg("--state-dir")
            .arg(lab.join("state"))
            .arg("--out-link")
            .arg(&link)
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut gc = lab.store_command("gc", &["--quiet"]);
        gc.stdout(Stdio::null()).stderr(Stdio::piped());
        let (p, g) = (promote.spawn().unwrap(), gc.spawn().unwrap());
        let p = p.wait_with_output().unwrap();
        assert!(p.status.success(), "promotion {i}: {p:?}");
        let g = g.wait_with_output().unwrap();
        assert!(g.status.success(), "collection {i}: {g:?}");
        // Every link made so far still leads to a whole bundle.
        for j in 0..=i {
            let bundle = std::fs::read_link(lab.join(format!("result-{j}"))).unwrap();
            assert!(
                bundle.join("artifacts/world/bin/sh").exists(),
                "round {i}: the bundle of result-{j} lost its world"
            );
        }
    }
    lab.verified();
}

/// `fruix ARGS` run as the unprivileged user `nobody` (through setpriv),
/// in `lab/bin`, with its home there too.
fn as_nobody(lab: &TestDir, args: &[&str]) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let bin = lab.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(require_tool("setpriv", "util-linux"));
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(crate::util::fruix_for_others())
        .args(args)
        .current_dir(&bin)
        .env("HOME", &bin)
        .env("XDG_DATA_HOME", &bin);
    cmd
}

/// The system store is root's, and anyone may read it (as Nix's): another
/// user lists, queries, verifies and exports a store it cannot write, while
/// root has it open or not, and sees what root sees; collecting or deleting
/// is refused as a store it cannot write, and nothing in it changes.
#[test]
fn another_user_reads_a_store_it_cannot_write_and_cannot_change_it() {
    use std::os::unix::fs::PermissionsExt;
    let (lab, [a, ..]) = three_runs();
    std::fs::set_permissions(lab.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (store, state) = (lab.store(), lab.join("state"));
    let bundle = bundle_of(&a).to_string();
    let store_args = |subcommand: &str, args: &[&str]| -> Vec<String> {
        let mut all = vec!["store".into(), subcommand.into(), "--store".into()];
        all.push(store.to_string_lossy().into_owned());
        if ["query", "roots", "gc", "delete"].contains(&subcommand) {
            all.extend(["--state-dir".into(), state.to_string_lossy().into_owned()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };
    let nobody = |subcommand: &str, args: &[&str]| -> Command {
        let all = store_args(subcommand, args);
        as_nobody(&lab, &all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let nobody_json = |subcommand: &str, args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&run_ok(&mut nobody(subcommand, &all))).unwrap()
    };
    let root_export = run(&mut lab.store_command("export", &[&bundle]));
    assert!(root_export.status.success());
    // A dry run of gc only reads: it was refused as writing.
    let dry_run = nobody_json("gc", &["--dry-run"]);
    assert_eq!(dry_run, lab.json("gc", &["--dry-run"]));
    assert_eq!(dry_run["dry_run"], true);
    for held in [false, true] {
        // Held: root's `store serve` has the store, and its database, open.
        let mut serve = held.then(|| {
            let mut cmd = lab.store_command("serve", &[]);
            cmd.stdin(Stdio::piped()).stdout(Stdio::null());
            let child = spawn_silenced(&mut cmd);
            let shm = store.join(".fruix/db.sqlite-shm");
            crate::util::wait_until("root's serve opens the database", || shm.exists());
            child
        });
        let what = if held { "held by root" } else { "alone" };
        assert_eq!(nobody_json("list", &[]), lab.json("list", &[]), "{what}");
        assert_eq!(
            nobody_json("info", &[&bundle]),
            lab.json("info", &[&bundle]),
            "{what}"
        );
        let mut requisites: Vec<String> =
            serde_json::from_value(nobody_json("query", &["--requisites", &bundle])).unwrap();
        requisites.sort();
        assert_eq!(requisites, closure_of(&a), "{what}");
        assert_eq!(nobody_json("roots", &[]), lab.json("roots", &[]), "{what}");
        run_ok(&mut nobody("verify", &["--quiet"]));
        let export = run(&mut nobody("export", &[&bundle]));
        assert!(
            export.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&export.stderr)
        );
        assert!(
            export.stdout == root_export.stdout,
            "{what}: the same archive"
        );
        if let Some(mut serve) = serve.take() {
            drop(serve.stdin.take());
            serve.wait().unwrap();
        }
    }
    // A store last used by a fruix that did not keep the database's -wal
    // and -shm files: SQLite cannot read it for a user who cannot make
    // them, which is said; once its owner has used it, it can.
    for kept in ["db.sqlite-wal", "db.sqlite-shm"] {
        std::fs::remove_file(store.join(".fruix").join(kept)).unwrap();
    }
    let out = run(&mut nobody("list", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("this user may only read it, which SQLite cannot while its db.sqlite-shm file is missing (fruix keeps it once it has used the store); run any fruix store command on the store once as its owner"),
        "{stderr}"
    );
    let owners_list = lab.json("list", &[]);
    assert_eq!(nobody_json("list", &[]), owners_list);
    let before = snapshot(&store);
    for (subcommand, args) in [("gc", &[][..]), ("delete", &[bundle.as_str()][..])] {
        let out = run(&mut nobody(subcommand, args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{subcommand}: {stderr}");
        assert!(
            stderr.contains(&format!("store {} is not writable", store.display())),
            "{subcommand}: {stderr}"
        );
    }
    assert_eq!(snapshot(&store), before, "nothing changed");
    lab.verified();
}

/// Before, a `store gc` that waited for an export under way (or an export
/// that waited for a collection) said nothing: it looked hung. The wait is
/// said on stderr, and the command goes on once the lock is free.
#[test]
fn a_command_waiting_for_the_collector_lock_says_so_then_goes_on() {
    let lab = TestDir::new();
    let report = lab.promote(&lab.root("a", "local", "20260101T000000Z", false), None);
    let lock_path = lab.store().join(".fruix/gc.lock");
    let waits = [
        // As a collection holds it: an export waits.
        (
            true,
            "export",
            "the garbage collection (or `store delete`) under way to end",
        ),
        // As another collection holds it: a collection waits, and says for
        // what (it said promotions, imports, exports and verifications).
        (
            true,
            "gc",
            "the garbage collection (or `store delete`) under way to end",
        ),
        // As an export or a promotion holds it: a collection waits.
        (
            false,
            "gc",
            "the promotions, imports, exports and verifications using the store to end",
        ),
    ];
    for (exclusive, subcommand, says) in waits {
        let held = std::fs::File::open(&lock_path).unwrap();
        if exclusive {
            held.lock().unwrap();
        } else {
            held.lock_shared().unwrap();
        }
        let archive = lab.join(format!("{subcommand}.fruix-archive"));
        let args: &[&str] = match subcommand {
            "export" => &["--output", archive.to_str().unwrap(), bundle_of(&report)],
            _ => &["--quiet"],
        };
        let mut command = spawn_reading_stderr(&mut lab.store_command(subcommand, args));
        let line = command.wait_for_line(says);
        assert!(line.contains(lock_path.to_str().unwrap()), "{line}");
        // It waits while the lock is held (nothing can free it but us).
        assert!(
            command.child().try_wait().unwrap().is_none(),
            "{subcommand} did not wait"
        );
        drop(held);
        let out = command.finish(Duration::from_secs(60), subcommand);
        assert!(out.status.success(), "{subcommand}: {out:?}");
    }
    // The collection that waited ran: the unrooted run is gone.
    assert!(lab.objects().is_empty(), "{:?}", lab.objects());
    assert!(lab.join("export.fruix-archive").is_file());
}

/// Regression: with a relative `--state-dir`, `store roots` listed a
/// direct root's link relative (`./state/gcroots/odd`) while indirect
/// roots were absolute. Every link is listed absolute.
#[test]
fn roots_are_listed_absolute_with_a_relative_state_dir() {
    let (lab, [a, _, _]) = three_runs();
    let direct = lab.join("state/gcroots/direct");
    std::os::unix::fs::symlink(bundle_of(&a), &direct).unwrap();
    let mut cmd = fruix();
    cmd.args([
        "store",
        "roots",
        "--json",
        "--state-dir",
        "state",
        "--store",
    ])
    .arg(lab.store())
    .current_dir(lab.join(""));
    let roots: Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
    let mut links = strings_of(&roots, "link");
    links.sort();
    assert_eq!(
        links,
        [
            lab.join("result-a").to_str().unwrap(),
            direct.to_str().unwrap()
        ],
        "{roots}"
    );
}

/// Regression: a root could only be added by making a symlink in
/// `gcroots/` by hand, which a collection running meanwhile may miss,
/// removing its object. `store add-root` makes the link and registers it
/// under the collector's lock: it waits for a collection under way, and
/// what it keeps, no later collection removes until the link goes.
#[test]
fn add_root_keeps_an_object_and_waits_for_a_collection_under_way() {
    let (lab, [a, b, c]) = three_runs();
    let kept = lab.join("kept-b");
    let lock = crate::util::hold_gc_lock(&lab.store());
    let mut add = spawn_reading_stderr(&mut lab.store_command(
        "add-root",
        &["--json", bundle_of(&b), kept.to_str().unwrap()],
    ));
    add.wait_for_line("fruix: waiting for the garbage collection");
    assert!(
        add.child().try_wait().unwrap().is_none(),
        "add-root did not wait for the collection"
    );
    assert!(
        kept.symlink_metadata().is_err(),
        "the link came before the lock"
    );
    drop(lock);
    let out = add.finish(Duration::from_secs(60), "add-root");
    assert!(out.status.success(), "{out:?}");
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["object"], bundle_of(&b));
    assert_eq!(added["link"], kept.to_str().unwrap());
    assert_eq!(std::fs::read_link(&kept).unwrap(), Path::new(bundle_of(&b)));
    let roots = lab.json("roots", &[]);
    let root = crate::util::element_with(&roots, "link", kept.to_str().unwrap());
    assert_eq!(
        (root["indirect"].clone(), root["object"].clone()),
        (true.into(), bundle_of(&b).into())
    );
    // B is kept with its artifacts; C, unrooted, goes.
    let gc = lab.json("gc", &[]);
    let mut expected = closure_of(&a);
    expected.extend(closure_of(&b));
    expected.sort();
    expected.dedup();
    let mut left: Vec<String> = lab
        .objects()
        .into_iter()
        .map(|n| lab.store().join(n).to_string_lossy().into_owned())
        .filter(|p| !p.contains("-freebsd-source-"))
        .collect();
    left.sort();
    assert_eq!(left, expected, "{gc}");
    assert!(!lab
        .objects()
        .iter()
        .any(|n| bundle_of(&c).ends_with(n.as_str())));
    // Refused: a path that is no object (exit 2), and a link path that is a
    // file (left as it was).
    let out = run(&mut lab.store_command("add-root", &["/etc", kept.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let file = lab.join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let out = run(&mut lab.store_command("add-root", &[bundle_of(&b), file.to_str().unwrap()]));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a symlink"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    // The link gone, the root is dead, and B goes.
    std::fs::remove_file(&kept).unwrap();
    lab.json("gc", &[]);
    assert!(!lab
        .objects()
        .iter()
        .any(|n| bundle_of(&b).ends_with(n.as_str())));
}
