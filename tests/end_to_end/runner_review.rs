//! Regressions of a review of the executor runner: what a failed stage
//! leaves, and what a result root may claim.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fruix_core::PromotionMetadata;

use crate::util::{promote_command, promote_refused, run, sample_root_of, PopulatedStore};

/// The cleanup of every executor here: it appends `FRUIX_OUTCOME` to
/// `outcomes` in the test's directory.
const CLEANUP: (&str, &str) = (
    "cleanup.sh",
    r#"echo "$FRUIX_OUTCOME" >> "$FRUIX_CONFIG_DIR/outcomes""#,
);

/// External executor `runner` of one test, in a directory of its own that
/// also holds a valid result root of its, `template` (signed, run id
/// 20260405T213444Z), for its stages to copy.
struct Stages {
    dir: tempfile::TempDir,
}

impl Stages {
    /// Writes `scripts` (name, sh body) and an executors file declaring
    /// `runner` with `stages` (its stage records) and the cleanup.
    fn new(stages: &str, scripts: &[(&str, &str)]) -> Stages {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in scripts.iter().chain([&CLEANUP]) {
            crate::sshd::script(&dir.path().join(name), &format!("#!/bin/sh\n{body}\n"));
        }
        std::fs::write(
            dir.path().join("executors.scm"),
            format!("(fruix-executors (format-version 1)\n  (executor (name \"runner\") (version \"1\") (description \"written by a test\")\n    (config-key (name \"dir\") (description \"the test's directory\"))\n    {stages}\n    (cleanup (command \"./cleanup.sh\"))))\n"),
        )
        .unwrap();
        sample_root_of(dir.path(), "template", "runner");
        Stages { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fruix build --executor runner` into the result root `root`.
    fn command(&self) -> Command {
        crate::executor_review::test_executor_build(self.dir.path(), "runner")
    }

    /// Runs [`Stages::command`].
    fn build(&self) -> Output {
        run(&mut self.command())
    }

    /// What cleanup was told, once per run.
    fn outcomes(&self) -> Vec<String> {
        crate::executor_review::outcomes(self.dir.path())
    }

    /// `fruix native-build promote` of the result root, into the test's
    /// store.
    fn promote(&self) -> Command {
        promote_command(&self.path("store"), &self.path("root"), &["--quiet"])
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regression: a build stage that replaced the root with a valid one (as
/// `rsync -a --delete staging/ "$FRUIX_RESULT_ROOT/"` does), unfinished
/// marker gone, then failed, left a root that `fruix native-build
/// promote` promoted. The failed run's root is marked unfinished again.
#[test]
fn a_failed_run_whose_stage_removed_the_marker_cannot_be_promoted() {
    let stages = Stages::new(
        r#"(build (command "./build.sh"))"#,
        &[(
            "build.sh",
            r#"cp -Rp "$FRUIX_CONFIG_DIR/template/." "$FRUIX_RESULT_ROOT/" && rm "$FRUIX_RESULT_ROOT/.fruix-incomplete"; echo "build broke" >&2; exit 1"#,
        )],
    );
    let out = stages.build();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("build step `build` failed"), "{err}");
    assert_eq!(stages.outcomes(), ["build-failure"], "{err}");
    let root = stages.path("root");
    assert!(root.join("promotion.scm").is_file(), "the stage ran: {err}");
    assert!(root.join(".fruix-incomplete").is_file(), "{err}");
    promote_refused(
        "a failed run's root",
        &stages.path("store"),
        &root,
        &[".fruix-incomplete: the run that wrote this result root did not finish"],
    );
}

/// Regression: a FIFO or a directory a stage left at the log file of a
/// later stage (`logs/collect.log`) failed the run as a system failure
/// (exit 3: "a retry may succeed"), and cleanup was told
/// `system-failure`. It is what the run left, refused as a `logs`
/// symlink is: exit 4, and cleanup is told `invalid`.
#[test]
fn what_a_stage_leaves_at_a_log_file_is_refused_as_invalid() {
    for (kind, make) in [("FIFO", "mkfifo"), ("directory", "mkdir")] {
        let stages = Stages::new(
            r#"(build (command "./build.sh")) (collect (command "true"))"#,
            &[(
                "build.sh",
                &format!(r#"{make} "$FRUIX_RESULT_ROOT/logs/collect.log""#),
            )],
        );
        let out = stages.build();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{kind}: {err}");
        let expected = format!(
            "{}: is a {kind}, not a log file: fruix makes each step's log anew, and never writes into nor removes anything else there; remove it",
            stages.path("root/logs/collect.log").display()
        );
        assert!(err.contains(&expected), "{kind}: {err}");
        assert!(!err.contains("system failure"), "{kind}: {err}");
        assert_eq!(stages.outcomes(), ["invalid"], "{kind}: {err}");
    }
}

/// Regression: a collect that replaced the unfinished marker with a
/// directory failed the run as a system failure (exit 3, `failed to
/// remove unfinished marker …: Is a directory`), as if a retry could
/// succeed. It broke the contract, as one that removes the marker does:
/// an invalid root (exit 4), which stays unpromotable.
#[test]
fn a_collect_that_replaces_the_marker_with_a_directory_leaves_an_invalid_root() {
    let stages = Stages::new(
        r#"(build (command "true")) (collect (command "./collect.sh"))"#,
        &[(
            "collect.sh",
            r#"cp -Rp "$FRUIX_CONFIG_DIR/template/artifacts" "$FRUIX_RESULT_ROOT/" && rm "$FRUIX_RESULT_ROOT/.fruix-incomplete" && mkdir "$FRUIX_RESULT_ROOT/.fruix-incomplete""#,
        )],
    );
    let out = stages.build();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let marker = stages.path("root/.fruix-incomplete");
    let expected = format!(
        "{}: executor runner replaced the unfinished marker with a directory, which only fruix removes once the root is validated",
        marker.display()
    );
    assert!(err.contains(&expected), "{err}");
    // The stages all exited 0; fruix judged the root after cleanup.
    assert_eq!(stages.outcomes(), ["success"], "{err}");
    assert!(marker.is_dir(), "left where it was: {err}");
    let promote = run(&mut stages.promote());
    assert_eq!(promote.status.code(), Some(4), "{}", stderr(&promote));
}

/// Adds artifact `lib32` at `path` to the result root `root`, its probe
/// `probe` made there.
fn with_lib32_at(root: &Path, path: &str, probe: &str) {
    let tree = root.join(path);
    std::fs::create_dir_all(tree.join(probe).parent().unwrap()).unwrap();
    std::fs::write(tree.join(probe), b"lib32\n").unwrap();
    let mut m = PromotionMetadata::read(&root.join("promotion.scm")).unwrap();
    m.artifacts.push(fruix_core::promotion::ArtifactEntry {
        name: "lib32".into(),
        path: path.into(),
        probe: probe.into(),
        tree_signature: None,
    });
    m.write_to(root).unwrap();
}

/// Regression: an artifact at another's path was promoted (the world tree
/// twice, once as `lib32`), and one at `logs` too (fruix's own logs
/// promoted as an artifact). Every artifact is a tree of its own under
/// `artifacts/`.
#[test]
fn an_artifact_sharing_a_tree_or_outside_artifacts_is_refused() {
    let s = PopulatedStore::new();
    s.refuses_changed(
        "lib32 at world's path",
        "shared",
        |root| with_lib32_at(root, "artifacts/world", "bin/sh"),
        &["field `artifacts.lib32.path`: is also artifact world's tree; each artifact has a tree of its own"],
    );
    s.refuses_changed(
        "lib32 at logs",
        "logs",
        |root| with_lib32_at(root, "logs", "build.log"),
        &["field `artifacts.lib32.path`: is not under artifacts/; put every artifact's tree there (artifacts/NAME)"],
    );
}

/// Regression: a stage whose own timeout had passed, stuck in its long
/// term-grace (it ignores SIGTERM) when Ctrl-C came, never ended: fruix
/// dropped it once its cancel grace (15 s) had passed, and stderr showed
/// `==> build` with no end line, and no word that it had timed out. It
/// ends, cancelled, and its timeout was said when it passed.
#[test]
fn a_stage_in_its_term_grace_when_cancelled_ends_and_had_said_it_timed_out() {
    let stages = Stages::new(
        r#"(term-grace 1000) (build (command "./build.sh") (timeout 1))"#,
        &[("build.sh", "trap '' TERM; echo building; exec sleep 600")],
    );
    let _leftovers = crate::util::Leftovers(stages.path("root"));
    let mut build = crate::util::spawn_reading_stderr(&mut stages.command());
    let said = build.wait_for_line("timed out after 1s; stopping it");
    assert_eq!(
        said,
        "fruix: warning: step build timed out after 1s; stopping it (SIGTERM, then SIGKILL 1000s later)"
    );
    build.signal(libc::SIGINT);
    let ended = build.wait_for_line("==> build ");
    assert!(ended.starts_with("==> build cancelled in "), "{ended}");
    let out = build.finish(std::time::Duration::from_secs(60), "the cancelled build");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_eq!(stages.outcomes(), ["cancelled"]);
}
