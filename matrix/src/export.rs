//! `fruix matrix export`: a matrix as a pipeline of an existing CI engine,
//! one job per cell running `fruix matrix run-cell`, then one `collect` job
//! that depends on them all and publishes `report.json` and `junit.xml`.
//!
//! | engine         | cells                                   | collect                                      |
//! |----------------|-----------------------------------------|----------------------------------------------|
//! | GitHub Actions | one `strategy.matrix` job (`max-parallel`, `fail-fast`), `runs-on` the cell's tags; its report directory uploaded as an artifact | `needs` the cells, `if: always()`; downloads every cell's artifact |
//! | GitLab CI      | one job per cell, `tags`, artifacts `when: always` | `needs` every cell, `when: always`; `reports: junit:` |
//! | Buildbot       | one builder per cell (its workers: the cell's tags), triggered by a driver builder | a collect builder, after the cells |
//!
//! Where an engine has no setting for `max-parallel` or `fail-fast`, the
//! generated file says so in a comment (GitLab CI: `fail-fast` maps to
//! `workflow: auto_cancel: on_job_failure`; `max-parallel 1` to a
//! `resource_group`; other limits are the runners' own).
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
//! The generated file starts by saying it was generated, from which matrix
//! file (and its digest), and what limit its cell jobs have. YAML is written
//! in block style with every string double-quoted (JSON escapes), so no value
//! is read as anything else; shell words are single-quoted.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use fruix_core::executor::Registry;

use serde_json::{json, Map, Value};

use crate::expand::{cells, Cell};
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
            let attempts = match file.strategy.retries + 1 {
                1 => "its attempt".to_string(),
                n => format!("{n} attempts"),
            };
            format!(
                "Each cell job may take {} minutes: {attempts} of the matrix's timeout ({} s), each with {} more minutes to set up, promote and clean up.",
                limit.div_ceil(60),
                file.build.timeout.unwrap_or_default(),
                ATTEMPT_SLACK_SECS / 60
            )
        }
        None => "The matrix sets no timeout: a cell job may take as long as the engine's own job limit allows.".into(),
    }
}

/// The pipeline for the matrix at `matrix` (a path as the jobs see it,
/// relative to the repository's root), in `format`.
pub fn export(matrix: &Path, format: Format, options: &ExportOptions) -> Result<String> {
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
    if format == Format::Buildbot && file.runner_tags.default.is_empty() {
        return Err(Error::InvalidOption {
            option: "runner-tags",
            message: format!(
                "of {} names no Buildbot workers: give them as (runner-tags (default \"WORKER\" ...))",
                matrix.display()
            ),
        });
    }
    let header = format!(
        "Generated by `fruix matrix export --format {}` from {} ({}).\nDo not edit: change the matrix file, then export again.\n{}",
        format.name(),
        matrix.display(),
        file.digest,
        limit_note(&file)
    );
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
    /// The shell command of a cell job; the cell id comes from `cell`, a
    /// shell word (a quoted id, or a variable).
    fn run_cell(&self, cell: &str, report_dir: &str) -> String {
        let args = ["--cell", cell, "--report-dir", report_dir];
        self.command("run-cell", &args, &self.options.run_cell_args)
    }

    fn collect(&self) -> String {
        let args = ["--from", CELLS_DIR, "--report-dir", REPORT_DIR];
        self.command("collect", &args, &self.options.collect_args)
    }

    /// `fruix matrix SUBCOMMAND MATRIX WORDS... EXTRA...`: `words` are
    /// shell words already, `extra` are quoted.
    fn command(&self, subcommand: &str, words: &[&str], extra: &[String]) -> String {
        let mut all = vec![
            quote(&self.options.fruix),
            "matrix".into(),
            subcommand.into(),
        ];
        all.push(quote(&self.matrix));
        all.extend(words.iter().map(|w| w.to_string()));
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
                            "env": {"FRUIX_CELL": "${{ matrix.cell }}"},
                            "run": self.run_cell("\"$FRUIX_CELL\"", CELL_DIR),
                        },
                        {
                            "name": "upload the cell report and log",
                            "if": "always()",
                            "uses": "actions/upload-artifact@v4",
                            "with": {"name": "fruix-cell-${{ matrix.cell }}", "path": format!("{CELL_DIR}/"), "if-no-files-found": "ignore"},
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
                        {"name": "fruix matrix collect", "run": self.collect()},
                        {
                            "name": "upload report.json, junit.xml and the logs",
                            "if": "always()",
                            "uses": "actions/upload-artifact@v4",
                            "with": {"name": "fruix-report", "path": format!("{REPORT_DIR}/")},
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
        let mut root = Map::new();
        if self.file.strategy.fail_fast {
            root.insert(
                "workflow".into(),
                json!({"auto_cancel": {"on_job_failure": "all"}}),
            );
        }
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
                json!([self.run_cell(&quote(&c.id), &quote(&dir))]),
            );
            job.insert(
                "artifacts".into(),
                json!({"when": "always", "paths": [format!("{dir}/")]}),
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
        collect.insert("script".into(), json!([self.collect()]));
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

/// `value` as block-style YAML, every string double-quoted.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) => object(map, 0, &mut out),
        other => {
            let _ = writeln!(out, "{}", scalar(other));
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        // JSON's escapes are YAML's double-quoted escapes.
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        // YAML 1.1 booleans, which some readers still take `on:` for.
        && !["on", "off", "yes", "no", "y", "n", "true", "false", "null"]
            .contains(&k.to_ascii_lowercase().as_str());
    if plain {
        k.to_string()
    } else {
        Value::from(k).to_string()
    }
}

/// Keys in the order people read pipelines in (others after them, sorted).
const KEY_ORDER: [&str; 27] = [
    "name",
    "cell",
    "job",
    "on",
    "workflow",
    "stages",
    "jobs",
    "stage",
    "needs",
    "if",
    "when",
    "runs-on",
    "tags",
    "resource_group",
    "timeout-minutes",
    "timeout",
    "strategy",
    "fail-fast",
    "max-parallel",
    "matrix",
    "uses",
    "env",
    "with",
    "script",
    "run",
    "steps",
    "artifacts",
];

fn object(map: &Map<String, Value>, indent: usize, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(k, _)| {
        let rank = KEY_ORDER.iter().position(|o| o == k);
        (rank.unwrap_or(KEY_ORDER.len()), *k)
    });
    for (k, v) in entries {
        let pad = " ".repeat(indent);
        if is_block(v) {
            let _ = writeln!(out, "{pad}{}:", key(k));
            block(v, indent + 2, out);
        } else {
            let _ = writeln!(out, "{pad}{}: {}", key(k), scalar(v));
        }
    }
}

fn block(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(map) => object(map, indent, out),
        Value::Array(items) => {
            let pad = " ".repeat(indent);
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the others below it.
                        let mut first = String::new();
                        object(map, indent + 2, &mut first);
                        let _ = write!(out, "{pad}- {}", &first[indent + 2..]);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}-");
                        block(item, indent + 2, out);
                    }
                    other => {
                        let _ = writeln!(out, "{pad}- {}", scalar(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{}{}", " ".repeat(indent), scalar(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quotes_every_string_and_nests_in_blocks() {
        let v = json!({
            "on": {"push": null},
            "a b": ["x", {"k": 1, "l": ["y"]}, []],
            "s": "it's \"quoted\"\n",
            "e": {},
        });
        assert_eq!(
            yaml(&v),
            "\"on\":\n  push: null\n\"a b\":\n  - \"x\"\n  - k: 1\n    l:\n      - \"y\"\n  - []\ne: {}\ns: \"it's \\\"quoted\\\"\\n\"\n"
        );
    }

    fn matrix(fields: &str) -> MatrixFile {
        let text = format!(
            "(fruix-matrix (format-version 1) (source \"src\") (axes (executor \"local\")) {fields})"
        );
        MatrixFile::parse(Path::new("/m/matrix.scm"), &text).unwrap()
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
                "Each cell job may take 12 minutes: its attempt of the matrix's timeout (90 s)"
            ),
            "{note}"
        );
        let note = limit_note(&matrix("(timeout 3600) (retries 2)"));
        assert!(
            note.starts_with("Each cell job may take 210 minutes: 3 attempts of"),
            "{note}"
        );
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
