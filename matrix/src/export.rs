//! `fruix matrix export`: a matrix as a pipeline of an existing CI engine,
//! one job per cell running `fruix matrix run-cell`, then one `collect` job
//! that depends on them all and publishes `report.json` and `junit.xml`.
//!
//! | engine         | cells                                   | collect                                      |
//! |----------------|-----------------------------------------|----------------------------------------------|
//! | GitHub Actions | one `strategy.matrix` job (`max-parallel`, `fail-fast`), `runs-on` the cell's tags; its cell report, machines file copy and log uploaded as an artifact | `needs` the cells, `if: always()`; downloads every cell's artifact |
//! | GitLab CI      | one job per cell, `tags`, the same three files as artifacts `when: always` | `needs` every cell, `when: always`; `reports: junit:` |
//! | Buildbot       | one builder per cell (its workers: the cell's tags), triggered by a driver builder; the same three files as a tar file | a collect builder, after the cells |
//!
//! Only those three files of a cell job's report directory travel
//! ([`cell_files`]): never `results/`, whose links lead to the cell's
//! result bundle in the runner's store (the whole build: world, kernel,
//! headers, bootloader), which `actions/upload-artifact` would follow.
//!
//! Where an engine has no setting for `max-parallel` or `fail-fast`, the
//! generated file says so in a comment (`engine_notes`). GitLab CI:
//! `max-parallel 1` is a `resource_group`, other limits are the runners'
//! own; a failed cell cancels no other, as GitLab can cancel only a whole
//! pipeline, collect with it (`workflow: auto_cancel: on_job_failure`),
//! and then no report would be written. GitHub Actions' `fail-fast`
//! cancels the other cell jobs, never collect (`if: always()`).
//!
//! Time: with a `timeout`, each cell job gets a limit of the engine's own
//! ([`cell_job_limit`]: GitHub Actions `timeout-minutes`, GitLab CI
//! `timeout`, Buildbot `maxTime`), a backstop above the limits `run-cell`
//! keeps itself; without one, the engine's default applies (GitHub Actions:
//! 360 minutes; GitLab CI: the project's, 60 minutes unless set). Buildbot's
//! silence timeout (20 minutes by default) is turned off for `run-cell`,
//! which prints a line per stage and, within a long stage, one every
//! `--progress-every`: fruix sees the build's output and keeps
//! `max-silent-time` itself.
//!
//! Every job is given the engine's id of its pipeline run
//! (`--pipeline-run`: GitHub Actions' `github.run_id`, GitLab CI's
//! `CI_PIPELINE_ID`, the Buildbot driver's build number): each cell report names its run,
//! and collect takes only the reports of its own, so that a report an
//! earlier run left in a runner's reused workspace is never taken for this
//! run's. GitHub Actions' `github.run_id` is shared by the attempts of a
//! workflow run: "Re-run failed jobs" still collects the cells that passed
//! in an earlier attempt (GitHub keeps their artifacts), and a re-run job's
//! upload replaces its earlier attempt's artifact (`overwrite`).
//!
//! The arguments given to the jobs (`--run-cell-arg`, `--collect-arg`) are
//! checked against the flags of `run-cell` and `collect` ([`JobCommand`]),
//! and refused in a GitHub Actions export when they hold `${{`: GitHub
//! expands an expression in a `run:` before the shell reads it, so no
//! quoting keeps its value one word, or keeps it from running.
//!
//! The generated file starts by saying it was generated, from which matrix
//! file (and its digest), what limit its cell jobs have, and what the engine
//! does not do of the matrix's strategy. YAML is written in block style with
//! every string double-quoted (JSON escapes), so no value is read as
//! anything else (see `export_yaml`); shell words are single-quoted.

use std::collections::BTreeSet;
use std::path::Path;

use fruix_core::executor::Registry;

use serde_json::{json, Map, Value};

use crate::expand::{cells, Cell};
pub use crate::export_args::{Flag, JobCommand, COLLECT, RUN_CELL};
use crate::export_yaml::yaml;
use crate::file::MatrixFile;
use crate::{Error, Result};

/// What `matrix export` can tell of `file`'s executors on this host,
/// which may not be where its cells run: each executor the cells name
/// that `registry` does not know comes back, as an error to warn with
/// (the runners may know it from an executors file); a `config` key a
/// known executor does not take, or one the scheduler sets, is refused,
/// as `matrix plan` and every runner would refuse it.
pub fn check_executors(file: &MatrixFile, registry: &Registry) -> Result<Vec<fruix_core::Error>> {
    crate::plan::check_scheduler_keys(file)?;
    let cells = cells(file)?;
    let named: BTreeSet<&str> = cells
        .iter()
        .map(|c| c.executor.as_str())
        .chain(file.config.keys().map(String::as_str))
        .collect();
    let mut unknown = Vec::new();
    for executor in named {
        let entry = match registry.get(executor) {
            Ok(entry) => entry,
            Err(e) => {
                unknown.push(e);
                continue;
            }
        };
        let takes: Vec<&str> = entry.config_keys.iter().map(|k| k.name.as_str()).collect();
        let config = file.config.get(executor).into_iter().flatten();
        if let Some((key, _)) = config
            .into_iter()
            .find(|(k, _)| !takes.contains(&k.as_str()))
        {
            let close = takes
                .iter()
                .find(|t| fruix_core::sexp::is_close(key, t))
                .map(|t| format!("did you mean `{t}`? "))
                .unwrap_or_default();
            return Err(Error::InvalidOption {
                option: "config",
                message: format!(
                    "of executor {executor} in {}: unknown key `{}`; {close}it takes: {}",
                    file.path.display(),
                    fruix_core::escape::text(key),
                    takes.join(", ")
                ),
            });
        }
    }
    Ok(unknown)
}

/// A CI engine `fruix matrix export` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A GitHub Actions workflow (YAML).
    GithubActions,
    /// A GitLab CI pipeline, `.gitlab-ci.yml` (YAML).
    GitlabCi,
    /// A Python module for a Buildbot `master.cfg` to import: builders and the
    /// schedulers that start them.
    Buildbot,
}

impl Format {
    /// The format's name, as `--format` takes it and the generated file's
    /// header shows it: `github-actions`, `gitlab-ci`, `buildbot`.
    pub fn name(self) -> &'static str {
        match self {
            Format::GithubActions => "github-actions",
            Format::GitlabCi => "gitlab-ci",
            Format::Buildbot => "buildbot",
        }
    }
}

/// What the jobs run.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The fruix program on the runners.
    pub fruix: String,
    /// Arguments every `run-cell` gets (a store, a state directory).
    pub run_cell_args: Vec<String>,
    /// Arguments the `collect` job gets (a store to compare objects in).
    pub collect_args: Vec<String>,
}

impl ExportOptions {
    /// Checks what the jobs are given: each run-cell and collect argument
    /// ([`JobCommand::check`]) and, in a GitHub Actions export, every word
    /// of their commands for an expression (`${{`).
    pub fn check(&self, format: Format) -> Result<()> {
        RUN_CELL.check(&self.run_cell_args)?;
        COLLECT.check(&self.collect_args)?;
        if format != Format::GithubActions {
            return Ok(());
        }
        let run_cell = self.run_cell_args.iter().map(|a| (RUN_CELL.option, a));
        let collect = self.collect_args.iter().map(|a| (COLLECT.option, a));
        std::iter::once(("--fruix", &self.fruix))
            .chain(run_cell)
            .chain(collect)
            .try_for_each(|(option, word)| no_github_expression(option, word))
    }
}

/// Refuses `word`, given with `option`, when it holds a GitHub Actions
/// expression: GitHub expands it in the `run:` of a job before the shell
/// reads the command, so the quotes around the word cannot hold what it
/// expands to (a pull request's title, say).
fn no_github_expression(option: &'static str, word: &str) -> Result<()> {
    if !word.contains("${{") {
        return Ok(());
    }
    Err(Error::InvalidOption {
        option,
        message: format!(
            "{}: GitHub Actions expands `${{{{ ... }}}}` in a job's command before its shell reads it, so no quoting keeps what it expands to one word, or keeps it from running; give the value itself (a runner's store and state directory may come from its FRUIX_STORE and FRUIX_STATE_DIR)",
            fruix_core::escape::quoted(word)
        ),
    })
}

/// Refuses a runner tag of `file` (at `matrix`) that the engine of
/// `format` would expand before it picks a runner: `${{` in a GitHub
/// Actions `runs-on`, `$` (a CI/CD variable) in GitLab CI `tags`. What it
/// expands to (a pull request's title, say) would choose the runner.
/// Buildbot's are worker names, Python data that nothing expands.
fn no_engine_expression_in_tags(file: &MatrixFile, format: Format, matrix: &Path) -> Result<()> {
    let (marker, engine, syntax, place, example) = match format {
        Format::GithubActions => (
            "${{",
            "GitHub Actions",
            "`${{ ... }}`",
            "`runs-on`",
            "a pull request's title",
        ),
        Format::GitlabCi => (
            "$",
            "GitLab CI",
            "CI/CD variables (`$NAME`)",
            "`tags`",
            "a merge request's title",
        ),
        Format::Buildbot => return Ok(()),
    };
    let tags = &file.runner_tags;
    let all = tags.machines.values().chain(tags.cells.values());
    let Some(tag) = std::iter::once(&tags.default)
        .chain(all)
        .flatten()
        .find(|t| t.contains(marker))
    else {
        return Ok(());
    };
    Err(Error::InvalidOption {
        option: "runner-tags",
        message: format!(
            "of {} gives the tag {}: {engine} expands {syntax} in a job's {place}, so the tag would be what it expands to ({example}, say), which picks the runner; give the tag itself",
            matrix.display(),
            fruix_core::escape::quoted(tag)
        ),
    })
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            fruix: "fruix".into(),
            run_cell_args: Vec::new(),
            collect_args: Vec::new(),
        }
    }
}

/// The cell report directory of a cell job.
const CELL_DIR: &str = "fruix-cell";
/// Where the collect job gathers the cell reports.
const CELLS_DIR: &str = "fruix-cells";
/// The collect job's report directory.
const REPORT_DIR: &str = "fruix-report";

/// What a GitHub Actions step's environment gives `FRUIX_PIPELINE_RUN`:
/// the workflow run's id, shared by its attempts.
const GITHUB_PIPELINE_RUN: &str = "${{ github.run_id }}";
/// The shell word of a GitHub Actions job's pipeline run: its step's
/// `FRUIX_PIPELINE_RUN` (GitHub expands an expression in a `run:` before
/// the shell reads it, so none goes there).
const GITHUB_RUN_WORD: &str = "\"$FRUIX_PIPELINE_RUN\"";
/// The shell word of a GitLab CI job's pipeline run (a retried job keeps
/// it).
const GITLAB_RUN_WORD: &str = "\"$CI_PIPELINE_ID\"";

/// What of a cell job's report directory travels to the collect job,
/// relative to it: the cell report, the copy of the machines file its
/// attempts read (when the matrix has one) and its log. Never `results/`:
/// its links lead to the cell's result bundle in the runner's store, the
/// whole build, which an engine following symlinks would upload.
pub fn cell_files(id: &str) -> [String; 3] {
    [
        crate::split::cell_file_name(id),
        crate::split::machines_copy_name(id),
        format!("logs/{id}.log"),
    ]
}

/// The paths of [`cell_files`] of cell `id` in report directory `dir`.
fn shipped(dir: &str, id: &str) -> Vec<String> {
    cell_files(id).map(|f| format!("{dir}/{f}")).to_vec()
}

/// Time a cell job gets on top of each attempt's `timeout`: the attempt's
/// set-up, the promotion of its result and its clean-up.
pub const ATTEMPT_SLACK_SECS: u64 = 600;

/// The most a cell job may take on the CI engine, in seconds: for each of
/// its attempts (`retries` + 1), the matrix's `timeout` plus
/// [`ATTEMPT_SLACK_SECS`]. `None` when the matrix sets no `timeout`.
pub fn cell_job_limit(file: &MatrixFile) -> Option<u64> {
    let timeout = u64::from(file.build.timeout?);
    let attempts = u64::from(file.strategy.retries) + 1;
    Some(attempts.saturating_mul(timeout + ATTEMPT_SLACK_SECS))
}

/// What the generated file's header says of its cell jobs' time limit.
fn limit_note(file: &MatrixFile) -> String {
    match cell_job_limit(file) {
        Some(limit) => {
            let (attempts, each) = match u64::from(file.strategy.retries) + 1 {
                1 => ("one attempt".to_string(), "with"),
                n => (format!("{n} attempts"), "each with"),
            };
            format!(
                "Each cell job may take {} minutes: {attempts} of the matrix's timeout ({} s), {each} {} more minutes to set up, promote and clean up.",
                limit.div_ceil(60),
                file.build.timeout.unwrap_or_default(),
                ATTEMPT_SLACK_SECS / 60
            )
        }
        None => "The matrix sets no timeout: a cell job may take as long as the engine's own job limit allows.".into(),
    }
}

/// What `format` does not do of `file`'s strategy, a note each, for the
/// generated file's header.
fn engine_notes(file: &MatrixFile, format: Format) -> Vec<String> {
    let mut notes = Vec::new();
    if format != Format::GitlabCi {
        return notes;
    }
    if let Some(max) = file.strategy.max_parallel.filter(|&m| m > 1) {
        notes.push(format!(
            "max-parallel {max}: GitLab CI has no such limit on a pipeline's jobs; the runners' own limits apply."
        ));
    }
    if file.strategy.fail_fast {
        notes.push(
            "fail-fast: a failed cell does not cancel the others. GitLab CI cancels only a whole pipeline, collect with it,\nand no report would be written: every cell runs to its end, collect reports them all, and a failed cell fails the pipeline.".into(),
        );
    }
    notes
}

/// The pipeline for the matrix at `matrix` (a path as the jobs see it,
/// relative to the repository's root), in `format`, its jobs given
/// `options` (checked first: [`ExportOptions::check`]).
pub fn export(matrix: &Path, format: Format, options: &ExportOptions) -> Result<String> {
    options.check(format)?;
    if format == Format::GithubActions {
        no_github_expression("FILE", &matrix.to_string_lossy())?;
    }
    let file = MatrixFile::read(matrix)?;
    let cells = cells(&file)?;
    let pinned: Vec<&str> = cells.iter().filter_map(|c| c.machine.as_deref()).collect();
    let refused = |message: String| Error::InvalidOption {
        option: "runner-tags",
        message,
    };
    let quoted = fruix_core::escape::quoted;
    let tags = &file.runner_tags;
    if let Some(machine) = tags.machines.keys().find(|m| !pinned.contains(&m.as_str())) {
        return Err(refused(format!(
            "names machine {} of {}, to which no cell is pinned; remove it, or pin cells to it with the machine axis or include",
            quoted(machine),
            matrix.display()
        )));
    }
    if let Some(id) = tags
        .cells
        .keys()
        .find(|id| !cells.iter().any(|c| &c.id == *id))
    {
        return Err(refused(format!(
            "names cell {}, which {} does not have (`fruix matrix plan` lists its cells)",
            quoted(id),
            matrix.display()
        )));
    }
    no_engine_expression_in_tags(&file, format, matrix)?;
    if format == Format::Buildbot && file.runner_tags.default.is_empty() {
        return Err(Error::InvalidOption {
            option: "runner-tags",
            message: format!(
                "of {} names no Buildbot workers: give them as (runner-tags (default \"WORKER\" ...))",
                matrix.display()
            ),
        });
    }
    let mut header = format!(
        "Generated by `fruix matrix export --format {}` from {} ({}).\nDo not edit: change the matrix file, then export again.\n{}",
        format.name(),
        matrix.display(),
        file.digest,
        limit_note(&file)
    );
    for note in engine_notes(&file, format) {
        header = header + "\n" + &note;
    }
    let m = Pipeline {
        matrix: matrix.display().to_string(),
        file: &file,
        cells: &cells,
        options,
    };
    Ok(match format {
        Format::GithubActions => comment("#", &header) + &yaml(&m.github_actions()),
        Format::GitlabCi => comment("#", &header) + &yaml(&m.gitlab_ci()),
        Format::Buildbot => comment("#", &header) + &m.buildbot(),
    })
}

struct Pipeline<'a> {
    matrix: String,
    file: &'a MatrixFile,
    cells: &'a [Cell],
    options: &'a ExportOptions,
}

impl Pipeline<'_> {
    /// The shell command of a cell job; the cell id comes from `cell`, and
    /// its pipeline run from `run`, shell words (a quoted id, or a
    /// variable).
    fn run_cell(&self, cell: &str, report_dir: &str, run: &str) -> String {
        let args = ["--cell", cell, "--report-dir", report_dir];
        self.command("run-cell", &args, run, &self.options.run_cell_args)
    }

    /// The shell command of the collect job; its pipeline run comes from
    /// `run`, a shell word.
    fn collect(&self, run: &str) -> String {
        let args = ["--from", CELLS_DIR, "--report-dir", REPORT_DIR];
        self.command("collect", &args, run, &self.options.collect_args)
    }

    /// `fruix matrix SUBCOMMAND MATRIX WORDS... --pipeline-run RUN
    /// EXTRA...`: `words` and `run` are shell words already, `extra` are
    /// quoted.
    fn command(&self, subcommand: &str, words: &[&str], run: &str, extra: &[String]) -> String {
        let mut all = vec![
            quote(&self.options.fruix),
            "matrix".into(),
            subcommand.into(),
        ];
        all.push(quote(&self.matrix));
        all.extend(words.iter().map(|w| w.to_string()));
        all.extend(["--pipeline-run".into(), run.into()]);
        all.extend(extra.iter().map(|a| quote(a)));
        all.join(" ")
    }

    fn tags(&self, cell: &Cell) -> &[String] {
        self.file.runner_tags.of(&cell.id, cell.machine.as_deref())
    }

    fn github_actions(&self) -> Value {
        let runs_on = |tags: &[String]| -> Value {
            if tags.is_empty() {
                json!("self-hosted")
            } else {
                json!(tags)
            }
        };
        let include: Vec<Value> = self
            .cells
            .iter()
            .map(|c| json!({"cell": c.id, "runs-on": runs_on(self.tags(c))}))
            .collect();
        let mut strategy = Map::new();
        strategy.insert("fail-fast".into(), json!(self.file.strategy.fail_fast));
        if let Some(max) = self.file.strategy.max_parallel {
            strategy.insert("max-parallel".into(), json!(max));
        }
        strategy.insert("matrix".into(), json!({ "include": include }));
        let mut gh = json!({
            "name": format!("fruix matrix {}", self.matrix),
            "on": {"push": null, "pull_request": null, "workflow_dispatch": null},
            "jobs": {
                "cell": {
                    "name": "cell ${{ matrix.cell }}",
                    "runs-on": "${{ matrix.runs-on }}",
                    "strategy": strategy,
                    "steps": [
                        {"uses": "actions/checkout@v4"},
                        {
                            "name": "fruix matrix run-cell",
                            "env": {"FRUIX_CELL": "${{ matrix.cell }}", "FRUIX_PIPELINE_RUN": GITHUB_PIPELINE_RUN},
                            "run": self.run_cell("\"$FRUIX_CELL\"", CELL_DIR, GITHUB_RUN_WORD),
                        },
                        {
                            "name": "upload the cell report and log",
                            "if": "always()",
                            "uses": "actions/upload-artifact@v4",
                            "with": {"name": "fruix-cell-${{ matrix.cell }}", "path": shipped(CELL_DIR, "${{ matrix.cell }}").join("\n"), "if-no-files-found": "ignore", "overwrite": true},
                        },
                    ],
                },
                "collect": {
                    "name": "collect",
                    "needs": "cell",
                    "if": "always()",
                    "runs-on": runs_on(&self.file.runner_tags.default),
                    "steps": [
                        {"uses": "actions/checkout@v4"},
                        {
                            "name": "download the cell reports",
                            "uses": "actions/download-artifact@v4",
                            "with": {"pattern": "fruix-cell-*", "path": CELLS_DIR},
                        },
                        {
                            "name": "fruix matrix collect",
                            "env": {"FRUIX_PIPELINE_RUN": GITHUB_PIPELINE_RUN},
                            "run": self.collect(GITHUB_RUN_WORD),
                        },
                        {
                            "name": "upload report.json, junit.xml and the logs",
                            "if": "always()",
                            "uses": "actions/upload-artifact@v4",
                            "with": {"name": "fruix-report", "path": format!("{REPORT_DIR}/"), "overwrite": true},
                        },
                    ],
                },
            },
        });
        if let Some(limit) = cell_job_limit(self.file) {
            gh["jobs"]["cell"]["timeout-minutes"] = json!(limit.div_ceil(60));
        }
        gh
    }

    fn gitlab_ci(&self) -> Value {
        // No `workflow: auto_cancel: on_job_failure` for fail-fast: it
        // would cancel collect too (see the module's documentation).
        let mut root = Map::new();
        root.insert("stages".into(), json!(["fruix-cells", "fruix-collect"]));
        let mut needs = Vec::new();
        for c in self.cells {
            let name = format!("cell {}", c.id);
            let dir = format!("{CELLS_DIR}/{}", c.id);
            let mut job = Map::new();
            job.insert("stage".into(), json!("fruix-cells"));
            let tags = self.tags(c);
            if !tags.is_empty() {
                job.insert("tags".into(), json!(tags));
            }
            if self.file.strategy.max_parallel == Some(1) {
                job.insert("resource_group".into(), json!("fruix-matrix"));
            }
            if let Some(limit) = cell_job_limit(self.file) {
                job.insert(
                    "timeout".into(),
                    json!(format!("{} minutes", limit.div_ceil(60))),
                );
            }
            job.insert(
                "script".into(),
                json!([self.run_cell(&quote(&c.id), &quote(&dir), GITLAB_RUN_WORD)]),
            );
            job.insert(
                "artifacts".into(),
                json!({"when": "always", "paths": shipped(&dir, &c.id)}),
            );
            root.insert(name.clone(), Value::Object(job));
            needs.push(json!({"job": name, "artifacts": true}));
        }
        let mut collect = Map::new();
        collect.insert("stage".into(), json!("fruix-collect"));
        if !self.file.runner_tags.default.is_empty() {
            collect.insert("tags".into(), json!(self.file.runner_tags.default));
        }
        collect.insert("when".into(), json!("always"));
        collect.insert("needs".into(), json!(needs));
        collect.insert("script".into(), json!([self.collect(GITLAB_RUN_WORD)]));
        collect.insert(
            "artifacts".into(),
            json!({
                "when": "always",
                "paths": [format!("{REPORT_DIR}/")],
                "reports": {"junit": format!("{REPORT_DIR}/junit.xml")},
            }),
        );
        root.insert("fruix collect".into(), Value::Object(collect));
        Value::Object(root)
    }

    fn buildbot(&self) -> String {
        crate::export_buildbot::fragment(self.file, self.cells, &self.matrix, self.options)
    }
}

/// Comment lines (`prefix text`) of `text`.
pub(crate) fn comment(prefix: &str, text: &str) -> String {
    text.lines().map(|l| format!("{prefix} {l}\n")).collect()
}

/// `s` as one shell word: single-quoted unless it is plain.
pub(crate) fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(fields: &str) -> MatrixFile {
        let text = format!(
            "(fruix-matrix (format-version 1) (source \"src\") (axes (executor \"local\")) {fields})"
        );
        MatrixFile::parse(Path::new("/m/matrix.scm"), &text).unwrap()
    }

    /// Regression: the header's count of attempts added 1 to a `u32`, so
    /// the most retries a matrix file took (`u32::MAX`, before
    /// [`MAX_RETRIES`](crate::file::MAX_RETRIES)) panicked the export.
    #[test]
    fn the_most_retries_are_counted_without_overflow() {
        let most = crate::file::MAX_RETRIES;
        let note = limit_note(&matrix(&format!("(timeout 60) (retries {most})")));
        assert!(note.contains(&format!("{} attempts", most + 1)), "{note}");
    }

    #[test]
    fn a_cell_job_gets_every_attempt_s_timeout_and_slack() {
        assert_eq!(cell_job_limit(&matrix("")), None);
        assert_eq!(cell_job_limit(&matrix("(max-silent-time 60)")), None);
        // retries 1 by default: two attempts.
        assert_eq!(
            cell_job_limit(&matrix("(timeout 3600)")),
            Some(2 * (3600 + ATTEMPT_SLACK_SECS))
        );
        assert_eq!(
            cell_job_limit(&matrix("(timeout 90) (retries 0)")),
            Some(90 + ATTEMPT_SLACK_SECS)
        );
        let note = limit_note(&matrix("(timeout 90) (retries 0)"));
        assert!(
            note.starts_with(
                "Each cell job may take 12 minutes: one attempt of the matrix's timeout (90 s), with 10 more minutes"
            ),
            "{note}"
        );
        let note = limit_note(&matrix("(timeout 3600) (retries 2)"));
        assert!(
            note.starts_with("Each cell job may take 210 minutes: 3 attempts of"),
            "{note}"
        );
    }

    /// The pipeline of `fields` in `format` with `options`, from a matrix
    /// file `matrix.scm` in a new directory.
    fn exported(fields: &str, format: Format, options: &ExportOptions) -> Result<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("matrix.scm");
        std::fs::write(&path, format!(
            "(fruix-matrix (format-version 1) (source \"src\") (axes (executor \"local\")) (runner-tags (default \"w1\")) {fields})"
        ))
        .unwrap();
        export(&path, format, options)
    }

    /// Regression: every GitHub Actions cell job uploaded its report
    /// directory whole, `results/` too, whose link upload-artifact follows
    /// into the cell's build in the store (world, kernel, headers,
    /// bootloader); GitLab CI and Buildbot shipped the link.
    #[test]
    fn cell_jobs_ship_their_report_machines_copy_and_log_never_results() {
        assert_eq!(
            cell_files("local-GENERIC"),
            [
                "cell-local-GENERIC.json",
                "cell-local-GENERIC.machines.scm",
                "logs/local-GENERIC.log"
            ]
        );
        let options = ExportOptions::default();
        let gh = exported("", Format::GithubActions, &options).unwrap();
        assert!(
            gh.contains("\n          path: \"fruix-cell/cell-${{ matrix.cell }}.json\\nfruix-cell/cell-${{ matrix.cell }}.machines.scm\\nfruix-cell/logs/${{ matrix.cell }}.log\"\n"),
            "{gh}"
        );
        let gl = exported("", Format::GitlabCi, &options).unwrap();
        assert!(
            gl.contains("    paths:\n      - \"fruix-cells/local/cell-local.json\"\n      - \"fruix-cells/local/cell-local.machines.scm\"\n      - \"fruix-cells/local/logs/local.log\"\n"),
            "{gl}"
        );
        let bb = exported("", Format::Buildbot, &options).unwrap();
        assert!(
            bb.contains("    (\"local\", [\"w1\"], [\"cell-local.json\", \"cell-local.machines.scm\", \"logs/local.log\"]),\n"),
            "{bb}"
        );
        for text in [&gh, &gl] {
            assert!(!text.contains("results"), "{text}");
        }
        // Buildbot packs those (those there), no longer the directory.
        assert!(
            bb.contains(
                "command=[\"sh\", \"-c\", PACK, \"pack\"] + [\"fruix-cell/\" + name for name in files]"
            ) && !bb.contains("\"fruix-cell.tar\", \"fruix-cell\"]"),
            "{bb}"
        );
    }

    /// Regression: no job named its pipeline run, so collect, in a
    /// runner's reused workspace, could take a cell report an earlier run
    /// left there for this run's. Every job now gives `--pipeline-run`,
    /// which a job argument cannot give again.
    #[test]
    fn every_job_names_its_pipeline_run() {
        let options = ExportOptions::default();
        let gh = exported("", Format::GithubActions, &options).unwrap();
        assert_eq!(
            gh.matches("--pipeline-run \\\"$FRUIX_PIPELINE_RUN\\\"")
                .count(),
            2,
            "{gh}"
        );
        assert_eq!(
            gh.matches("\n          FRUIX_PIPELINE_RUN: \"${{ github.run_id }}\"\n")
                .count(),
            2,
            "{gh}"
        );
        let gl = exported("", Format::GitlabCi, &options).unwrap();
        assert_eq!(
            gl.matches("--pipeline-run \\\"$CI_PIPELINE_ID\\\"").count(),
            2,
            "{gl}"
        );
        let bb = exported("", Format::Buildbot, &options).unwrap();
        assert_eq!(bb.matches("\"--pipeline-run\", RUN]").count(), 2, "{bb}");
        let again = ExportOptions {
            run_cell_args: vec!["--pipeline-run=1".into()],
            ..ExportOptions::default()
        };
        let e = exported("", Format::GitlabCi, &again).unwrap_err();
        assert!(
            e.to_string()
                .contains("the export gives every run-cell job its --pipeline-run itself"),
            "{e}"
        );
    }

    /// Regression: with fail-fast, the GitLab CI export set `workflow:
    /// auto_cancel: on_job_failure: all`, which cancels the whole pipeline,
    /// collect with it: a failing pipeline got no report.
    #[test]
    fn a_gitlab_export_cancels_nothing_on_a_failed_cell_so_collect_always_runs() {
        let options = ExportOptions::default();
        for fields in ["", "(fail-fast #t) (max-parallel 3)", "(fail-fast #f)"] {
            let gl = exported(fields, Format::GitlabCi, &options).unwrap();
            assert!(
                !gl.contains("workflow") && !gl.contains("auto_cancel"),
                "{gl}"
            );
            assert!(gl.contains("\n  when: \"always\"\n"), "{gl}");
        }
        let gl = exported("(max-parallel 3)", Format::GitlabCi, &options).unwrap();
        assert!(
            gl.contains("\n# max-parallel 3: GitLab CI has no such limit on a pipeline's jobs; the runners' own limits apply.\n# fail-fast: a failed cell does not cancel the others. GitLab CI cancels only a whole pipeline, collect with it,"),
            "{gl}"
        );
        let gl = exported(
            "(fail-fast #f) (max-parallel 1)",
            Format::GitlabCi,
            &options,
        )
        .unwrap();
        assert!(
            !gl.contains("# fail-fast") && !gl.contains("# max-parallel"),
            "{gl}"
        );
        // GitHub Actions cancels the other cell jobs, never collect.
        let gh = exported("", Format::GithubActions, &options).unwrap();
        assert!(gh.contains("\n      fail-fast: true\n"), "{gh}");
        assert!(
            gh.contains(
                "\n  collect:\n    name: \"collect\"\n    needs: \"cell\"\n    if: \"always()\"\n"
            ),
            "{gh}"
        );
        assert!(!gh.contains("# fail-fast"), "{gh}");
    }

    /// Regression: `--run-cell-arg='${{ github.event.pull_request.title }}'`
    /// was single-quoted in the job's `run:`, where GitHub expands it before
    /// the shell reads the command.
    #[test]
    fn a_github_expression_in_a_job_s_command_is_refused() {
        let title = "${{ github.event.pull_request.title }}";
        let with = |run_cell: &[&str], collect: &[&str], fruix: &str| ExportOptions {
            fruix: fruix.into(),
            run_cell_args: run_cell.iter().map(|a| a.to_string()).collect(),
            collect_args: collect.iter().map(|a| a.to_string()).collect(),
        };
        for (options, option) in [
            (with(&["--store", title], &[], "fruix"), "--run-cell-arg"),
            (with(&[], &["--store", title], "fruix"), "--collect-arg"),
            (with(&[], &[], title), "--fruix"),
        ] {
            let refused = options
                .check(Format::GithubActions)
                .unwrap_err()
                .to_string();
            assert!(
                refused.starts_with(&format!("{option} \"{title}\": GitHub Actions expands `${{{{ ... }}}}` in a job's command before its shell reads it")),
                "{refused}"
            );
            // No shell reads GitLab's script before the shell, nor Buildbot's
            // commands (argument lists).
            assert!(options.check(Format::GitlabCi).is_ok());
            assert!(options.check(Format::Buildbot).is_ok());
        }
        let refused = export(
            Path::new("ci/${{ x }}.scm"),
            Format::GithubActions,
            &with(&[], &[], "fruix"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.starts_with("FILE \"ci/${{ x }}.scm\": GitHub Actions expands"),
            "{refused}"
        );
    }

    /// Regression: `(runner-tags (default "self-hosted" "${{ github.token
    /// }}"))` went to `runs-on`, which GitHub evaluates: a tag of a pull
    /// request's title would let its author pick the runner. GitLab CI
    /// expands its variables in `tags` the same way.
    #[test]
    fn a_runner_tag_the_engine_would_expand_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let matrix = dir.path().join("matrix.scm");
        let write = |tags: &str| {
            let text = format!(
                "(fruix-matrix (format-version 1) (source \"src\") (axes (executor \"local\")) (runner-tags {tags}))"
            );
            std::fs::write(&matrix, text).unwrap();
        };
        let title = "${{ github.event.pull_request.title }}";
        for tags in [
            format!("(default \"self-hosted\" \"{title}\")"),
            format!("(default \"w1\") (cell \"local\" \"x{title}\")"),
        ] {
            write(&tags);
            let e = export(&matrix, Format::GithubActions, &ExportOptions::default()).unwrap_err();
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage, "exit 2");
            let refused = e.to_string();
            assert!(
                refused.starts_with(&format!(
                    "runner-tags of {} gives the tag \"",
                    matrix.display()
                )) && refused.contains(&format!(
                    "{title}\": GitHub Actions expands `${{{{ ... }}}}` in a job's `runs-on`"
                )),
                "{refused}"
            );
            let e = export(&matrix, Format::GitlabCi, &ExportOptions::default()).unwrap_err();
            assert!(
                e.to_string()
                    .contains(": GitLab CI expands CI/CD variables (`$NAME`) in a job's `tags`"),
                "{e}"
            );
            // Worker names are Python data: nothing expands them.
            assert!(export(&matrix, Format::Buildbot, &ExportOptions::default()).is_ok());
        }
        write("(default \"w1\" \"$CI_MERGE_REQUEST_TITLE\")");
        let e = export(&matrix, Format::GitlabCi, &ExportOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("gives the tag \"$CI_MERGE_REQUEST_TITLE\": GitLab CI expands"),
            "{e}"
        );
        assert!(export(&matrix, Format::GithubActions, &ExportOptions::default()).is_ok());
        write("(default \"self-hosted\" \"freebsd\")");
        for format in [Format::GithubActions, Format::GitlabCi, Format::Buildbot] {
            assert!(export(&matrix, format, &ExportOptions::default()).is_ok());
        }
    }

    #[test]
    fn shell_words_are_quoted_unless_plain() {
        assert_eq!(quote("ci/matrix.scm"), "ci/matrix.scm");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(x)"), "'$(x)'");
        assert_eq!(quote(""), "''");
    }
}
