//! The matrix file: what a matrix builds, along which axes, and how.
//!
//! ```scheme
//! (fruix-matrix
//!   (format-version 1)
//!   (source "fixtures/freebsd-src-mini")       ; relative to the matrix file
//!   (machines-file "machines.scm")             ; for remote executors; relative to the matrix file
//!   (axes (executor "local" "host-initiated" "guest-self-hosted")
//!         (kernconf "GENERIC" "MINIMAL"))
//!   (exclude ((executor "local") (kernconf "MINIMAL")))
//!   (include ((executor "guest-self-hosted") (kernconf "GENERIC") (machine "builder-2")))
//!   (max-parallel 4)
//!   (fail-fast #f)
//!   (retries 1))
//! ```
//!
//! # Contract
//!
//! - `format-version` (1) and `source` are required. Relative paths
//!   (`source`, `machines-file`) are relative to the matrix file's directory.
//! - Axes are `executor`, `kernconf`, `target-arch`, `make-flag` and
//!   `machine` (which pins a cell to a machine of the machines file). Each
//!   axis lists one or more distinct strings. `exclude` and `include` hold
//!   entries, each a list of `(axis "value")` pairs.
//! - Optional fields and their defaults: `max-parallel` (unlimited),
//!   `local-slots` (1: local cells running at once), `fail-fast` (`#t`, as in
//!   GitHub Actions), `retries` (1: extra attempts after a system failure;
//!   at most [`MAX_RETRIES`]),
//!   `agree-across` (`"executor" "machine"`: cells differing only along these
//!   axes must give the same artifacts), `make-flags` (given to every cell,
//!   before its `make-flag`), `jobs` (the number of CPUs), `timeout` and
//!   `max-silent-time` (seconds; no limit), `source-date-epoch`, `source-commit`, `freebsd-version`,
//!   `freebsd-branch`, `remote-source` (the source's absolute path on the
//!   build machines; default: `source`), `share-results` (`#f`: with
//!   `#t`, every machine that may build a remote cell must sign its results,
//!   so every cell's objects in the matrix's store carry the signature of
//!   the machine that built them), and `config`, executor
//!   configuration per executor: `(config (local (make "bmake")))`, and
//!   `runner-tags`, the CI runner tags (GitHub Actions labels, GitLab CI
//!   tags, Buildbot worker names) of the jobs `fruix matrix export` writes:
//!   `(runner-tags (default "self-hosted" "freebsd") (machine "builder-2"
//!   "big") (cell "local-MINIMAL" "small"))`: a cell's own entry, else its
//!   pinned machine's, else `default`.
//! - Reading is strict: unknown or repeated fields, mistyped values, unknown
//!   axes and repeated axis values are refused, each error naming the field
//!   and its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lexpr::Value;

use fruix_core::executor::MAX_JOBS;
use fruix_core::promotion::{source_date_epoch_range, MAX_SOURCE_DATE_EPOCH};
use fruix_core::sexp::{self, shown, Record};
use fruix_core::{escape, Error};

use crate::axis::{check_shown, check_value, Axis, MatrixEntry};

/// What the readers of this module return: core metadata errors, which
/// [`crate::Error::Core`] wraps.
type Result<T, E = Error> = std::result::Result<T, E>;

/// The head symbol of a matrix file.
pub const MATRIX_HEAD: &str = "fruix-matrix";

/// The `format-version` this fruix reads.
pub const FORMAT_VERSION: i64 = 1;

/// The contents of a matrix file, with paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixFile {
    /// The matrix file itself.
    pub path: PathBuf,
    /// `sha256:HEX` of the bytes read: what `run-cell` records and
    /// `collect` checks, so that cells of another matrix file are refused.
    pub digest: String,
    /// The source tree on this machine.
    pub source: PathBuf,
    /// The source's path on the build machines, when it differs.
    pub remote_source: Option<String>,
    /// `source-commit`: the commit every cell's build request records, over the
    /// one the source object knows from git; `None`: the object's, if it
    /// records one.
    pub source_commit: Option<String>,
    /// `machines-file`, resolved against the matrix file's directory: the
    /// machines remote cells run on. `--machines` overrides it.
    pub machines_file: Option<PathBuf>,
    /// The axes given, in [`Axis::ALL`] order, each with its values.
    pub axes: Vec<(Axis, Vec<String>)>,
    /// The `exclude` entries, in file order: a combination that matches every
    /// pair of an entry is dropped ([`crate::expand`]).
    pub exclude: Vec<MatrixEntry>,
    /// The `include` entries, in file order: each extends the combinations it
    /// fits, or else becomes a cell of its own ([`crate::expand`]).
    pub include: Vec<MatrixEntry>,
    /// How the cells are scheduled.
    pub strategy: Strategy,
    /// The axes along which cells must build identical artifacts.
    pub agree_across: Vec<Axis>,
    /// What every cell is built with.
    pub build: BuildSettings,
    /// Every remote cell's result must be signed by its machine.
    pub share_results: bool,
    /// Executor configuration by executor name (JSON objects).
    pub config: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// `runner-tags`, for `fruix matrix export`; empty when not given.
    pub runner_tags: RunnerTags,
}

/// How the cells are run: GitHub Actions' `strategy` (`max-parallel`,
/// `fail-fast`), with this host's slots and the retries of system failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    /// At most this many cells at once.
    pub max_parallel: Option<u32>,
    /// How many cells this host builds at once (`local-slots`, default 1).
    pub local_slots: u32,
    /// Whether the first failure stops starting cells (default `#t`).
    pub fail_fast: bool,
    /// How many times a cell's system failure is retried (default 1, at
    /// most [`MAX_RETRIES`]).
    pub retries: u32,
}

/// What every cell is built with: `fruix build`'s options of the same
/// names, read from the file's fields of those names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSettings {
    /// Make flags every cell gets, before its own `make-flag`.
    pub make_flags: Vec<String>,
    /// `jobs`: parallel make jobs of each build (`make -jN`); `None`: the
    /// number of CPUs of the host that loads the matrix
    /// ([`crate::request::default_jobs`]).
    pub jobs: Option<u32>,
    /// `source-date-epoch`: `SOURCE_DATE_EPOCH` (seconds since the Unix epoch)
    /// of every build; `None`: the builds get none.
    pub source_date_epoch: Option<i64>,
    /// `freebsd-version` (`REVISION-BRANCH`, `14.2-RELEASE`); `None`: read from
    /// the source's `sys/conf/newvers.sh`.
    pub freebsd_version: Option<String>,
    /// `freebsd-branch` (`releng/14.2`); `None`: derived from the version
    /// ([`crate::request::branch_of`]).
    pub freebsd_branch: Option<String>,
    /// `timeout`, in seconds: the most each attempt's build may take
    /// (`fruix build --timeout`); `None`: no limit.
    pub timeout: Option<u32>,
    /// `max-silent-time`, in seconds: the most each attempt's build may go
    /// without output (`fruix build --max-silent-time`); `None`: no limit.
    pub max_silent_time: Option<u32>,
}

/// The CI runner tags of exported jobs (`runner-tags`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerTags {
    /// For cells with no entry of their own, pinned to no machine with one
    /// (local cells, and cells the pool places), and the collect job.
    pub default: Vec<String>,
    /// For the cells pinned to each machine.
    pub machines: BTreeMap<String, Vec<String>>,
    /// For each cell, by id.
    pub cells: BTreeMap<String, Vec<String>>,
}

impl RunnerTags {
    /// The tags of the job for cell `id`, pinned to `machine` (or to none).
    pub fn of(&self, id: &str, machine: Option<&str>) -> &[String] {
        self.cells
            .get(id)
            .or_else(|| machine.and_then(|m| self.machines.get(m)))
            .unwrap_or(&self.default)
    }
}

impl MatrixFile {
    /// Reads and checks the matrix file at `path`.
    pub fn read(path: &Path) -> crate::Result<MatrixFile> {
        let text = fruix_core::fsutil::read_file_of_kind(path, "matrix file (fruix-matrix ...)")?;
        Self::parse(path, &text)
    }

    /// Parses `text`, the contents of `path` (which relative paths are
    /// resolved against).
    pub fn parse(path: &Path, text: &str) -> crate::Result<MatrixFile> {
        Ok(Self::parse_record(path, text)?)
    }

    fn parse_record(path: &Path, text: &str) -> Result<MatrixFile> {
        let dir = path.parent().unwrap_or(Path::new("."));
        sexp::read_record(path, text, MATRIX_HEAD, |r| {
            r.format_version(FORMAT_VERSION)?;
            let source = dir.join(non_empty(r, "source")?);
            let line = r.field_line("remote-source");
            let remote_source = r.opt_string("remote-source")?;
            if let Some(s) = &remote_source {
                if !s.starts_with('/') {
                    return Err(r.error(
                        "remote-source",
                        line,
                        format!(
                            "{} is relative; give the absolute path on the build machines",
                            escape::quoted(s)
                        ),
                    ));
                }
            }
            let source_commit = r.opt_string("source-commit")?;
            let machines_file = r.opt_string("machines-file")?.map(|m| dir.join(m));
            let axes = read_axes(r)?;
            let exclude = read_entries(r, "exclude")?;
            let include = read_entries(r, "include")?;
            let strategy = Strategy {
                max_parallel: positive(r, "max-parallel")?,
                local_slots: positive(r, "local-slots")?.unwrap_or(1),
                fail_fast: r.opt_bool("fail-fast")?.unwrap_or(true),
                retries: capped(
                    r,
                    "retries",
                    false,
                    MAX_RETRIES,
                    "retries than a cell takes",
                )?
                .unwrap_or(1),
            };
            let agree_across = read_agree_across(r)?;
            let build = BuildSettings {
                make_flags: shown_strings(r, "make-flags")?,
                jobs: capped(r, "jobs", true, MAX_JOBS, "make jobs than a build takes")?,
                source_date_epoch: source_date_epoch(r)?,
                freebsd_version: r.opt_string("freebsd-version")?,
                freebsd_branch: r.opt_string("freebsd-branch")?,
                timeout: positive(r, "timeout")?,
                max_silent_time: positive(r, "max-silent-time")?,
            };
            let share_results = r.opt_bool("share-results")?.unwrap_or(false);
            let config = read_config(r)?;
            let runner_tags = read_runner_tags(r)?;
            Ok(MatrixFile {
                path: path.to_path_buf(),
                digest: digest(text),
                source,
                remote_source,
                source_commit,
                machines_file,
                axes,
                exclude,
                include,
                strategy,
                agree_across,
                build,
                share_results,
                config,
                runner_tags,
            })
        })
    }
}

/// `sha256:HEX` of `text`.
fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(text)))
}

fn non_empty(r: &mut Record<'_>, field: &str) -> Result<String> {
    let line = r.field_line(field);
    let value = r.string(field)?;
    if value.is_empty() {
        return Err(r.error(field, line, "is empty"));
    }
    Ok(value)
}

/// An optional integer field that must fit `T` (and be positive when
/// `positive`), else an error naming its line.
fn count<T: TryFrom<i64> + PartialOrd + Default>(
    r: &mut Record<'_>,
    field: &str,
    positive: bool,
) -> Result<Option<T>> {
    let what = if positive {
        "a positive count"
    } else {
        "a count (0 or more)"
    };
    r.opt_count(field, positive, what)
}

fn positive(r: &mut Record<'_>, field: &str) -> Result<Option<u32>> {
    count(r, field, true)
}

/// The most `retries` a matrix file takes. Each retry is one more attempt
/// of a cell after a system failure, run after the one before: a failure
/// that recurs (a pool that cannot be reached) holds a run for every one,
/// so a larger count only makes a failing run longer.
pub const MAX_RETRIES: u32 = 100;

/// An optional count `field` of at most `max` (`jobs`: 1 to [`MAX_JOBS`], as
/// `fruix build --jobs` takes; `retries`: 0 to [`MAX_RETRIES`]), positive
/// when `positive`; a larger value is refused saying it is more `what`
/// (`make jobs than a build takes`).
fn capped(
    r: &mut Record<'_>,
    field: &str,
    positive: bool,
    max: u32,
    what: &str,
) -> Result<Option<u32>> {
    let line = r.field_line(field);
    match count(r, field, positive)? {
        Some(n) if n > max => Err(r.error(
            field,
            line,
            format!("{n} is more {what}; give {} to {max}", u32::from(positive)),
        )),
        n => Ok(n),
    }
}

/// `(source-date-epoch N)`: 0 to [`MAX_SOURCE_DATE_EPOCH`], as a build takes.
fn source_date_epoch(r: &mut Record<'_>) -> Result<Option<i64>> {
    let line = r.field_line("source-date-epoch");
    match r.opt_integer("source-date-epoch")? {
        Some(e) if !(0..=MAX_SOURCE_DATE_EPOCH).contains(&e) => {
            Err(r.error("source-date-epoch", line, source_date_epoch_range(e)))
        }
        e => Ok(e),
    }
}

fn read_axes(r: &mut Record<'_>) -> Result<Vec<(Axis, Vec<String>)>> {
    let Some(mut axes) = r.opt_record("axes")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for axis in Axis::ALL {
        let line = axes.field_line(axis.name());
        let Some(values) = axes.strings(axis.name())? else {
            continue;
        };
        if values.is_empty() {
            return Err(axes.error(axis.name(), line, "lists no value; give at least one"));
        }
        for (i, v) in values.iter().enumerate() {
            check_value(axis, v).map_err(|m| axes.error(axis.name(), line, m))?;
            if values[..i].contains(v) {
                return Err(axes.error(
                    axis.name(),
                    line,
                    format!("lists {} twice; give each value once", escape::quoted(v)),
                ));
            }
        }
        out.push((axis, values));
    }
    axes.finish().map_err(|e| match e {
        Error::InvalidMetadata {
            path,
            field,
            line,
            message,
        } => Error::InvalidMetadata {
            path,
            field,
            line,
            message: format!("{message}; the axes are {}", Axis::known()),
        },
        other => other,
    })?;
    Ok(out)
}

/// Reads `(field ((axis "value") ...) ...)`.
fn read_entries(r: &mut Record<'_>, field: &str) -> Result<Vec<MatrixEntry>> {
    let Some((line, entries)) = r.raw(field)? else {
        return Ok(Vec::new());
    };
    let error = |i: usize, message: String| r.error(&format!("{field}[{i}]"), Some(line), message);
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let pairs = entry.list_iter().ok_or_else(|| {
            error(
                i,
                format!(
                    "expected a list of (axis \"value\") pairs, found {}",
                    shown(entry)
                ),
            )
        })?;
        let mut values: MatrixEntry = Vec::new();
        for pair in pairs {
            let (axis, value) = read_pair(pair).map_err(|m| error(i, m))?;
            if values.iter().any(|(a, _)| *a == axis) {
                return Err(error(i, format!("gives {} twice", axis.name())));
            }
            check_value(axis, &value).map_err(|m| error(i, m))?;
            values.push((axis, value));
        }
        if values.is_empty() {
            return Err(error(
                i,
                "is empty; give at least one (axis \"value\")".into(),
            ));
        }
        out.push(values);
    }
    Ok(out)
}

fn read_pair(pair: &Value) -> std::result::Result<(Axis, String), String> {
    let items: Vec<&Value> = pair.list_iter().map(Iterator::collect).unwrap_or_default();
    match items.as_slice() {
        [name, value] => {
            let name = name
                .as_symbol()
                .ok_or_else(|| format!("expected (axis \"value\"), found {}", shown(pair)))?;
            let axis = Axis::from_name(name).ok_or_else(|| {
                format!(
                    "unknown axis {}; the axes are {}",
                    escape::quoted(name),
                    Axis::known()
                )
            })?;
            let value = value
                .as_str()
                .ok_or_else(|| format!("{name}: expected a string, found {}", shown(value)))?;
            Ok((axis, value.to_string()))
        }
        _ => Err(format!("expected (axis \"value\"), found {}", shown(pair))),
    }
}

fn read_agree_across(r: &mut Record<'_>) -> Result<Vec<Axis>> {
    let line = r.field_line("agree-across");
    let Some(names) = r.strings("agree-across")? else {
        return Ok(vec![Axis::Executor, Axis::Machine]);
    };
    names
        .iter()
        .map(|n| {
            Axis::from_name(n).ok_or_else(|| {
                r.error(
                    "agree-across",
                    line,
                    format!(
                        "unknown axis {}; the axes are {}",
                        escape::quoted(n),
                        Axis::known()
                    ),
                )
            })
        })
        .collect()
}

/// Reads `(config (EXECUTOR (key value) ...) ...)`; keys keep their
/// spelling with `-` turned into `_`, values become JSON.
fn read_config(
    r: &mut Record<'_>,
) -> Result<BTreeMap<String, serde_json::Map<String, serde_json::Value>>> {
    let Some((line, executors)) = r.raw("config")? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for executor in &executors {
        let items: Vec<&Value> = executor
            .list_iter()
            .map(Iterator::collect)
            .unwrap_or_default();
        let Some(name) = items
            .first()
            .and_then(|v| v.as_symbol().or_else(|| v.as_str()))
        else {
            return Err(r.error(
                "config",
                Some(line),
                format!(
                    "expected (EXECUTOR (key value) ...), found {}",
                    shown(executor)
                ),
            ));
        };
        let field = format!("config.{name}");
        if out.contains_key(name) {
            return Err(r.error(&field, Some(line), "given more than once; give it once"));
        }
        let mut map = serde_json::Map::new();
        for item in &items[1..] {
            let (key, value) = config_pair(item).map_err(|m| r.error(&field, Some(line), m))?;
            if map.insert(key.clone(), value).is_some() {
                return Err(r.error(&field, Some(line), format!("gives {key} twice")));
            }
        }
        out.insert(name.to_string(), map);
    }
    Ok(out)
}

fn read_runner_tags(r: &mut Record<'_>) -> Result<RunnerTags> {
    let Some((line, entries)) = r.raw("runner-tags")? else {
        return Ok(RunnerTags::default());
    };
    let mut out = RunnerTags::default();
    let mut has_default = false;
    for entry in &entries {
        let items: Vec<&Value> = entry.list_iter().map(Iterator::collect).unwrap_or_default();
        let kind = items.first().and_then(|v| v.as_symbol());
        let strings: Option<Vec<String>> = items
            .get(1..)
            .unwrap_or_default()
            .iter()
            .map(|t| {
                t.as_str()
                    .filter(|t| !t.is_empty() && check_shown("tag", t).is_ok())
                    .map(str::to_string)
            })
            .collect();
        let bad = || {
            r.error(
                "runner-tags",
                Some(line),
                format!(
                    "expected (default \"TAG\" ...), (machine \"NAME\" \"TAG\" ...) or (cell \"ID\" \"TAG\" ...), non-empty strings, found {}",
                    shown(entry)
                ),
            )
        };
        let Some(strings) = strings else {
            return Err(bad());
        };
        let twice =
            |what: String| r.error("runner-tags", Some(line), format!("gives {what} twice"));
        match (kind, strings.as_slice()) {
            (Some("default"), [_, ..]) => {
                if has_default {
                    return Err(twice("default".into()));
                }
                has_default = true;
                out.default = strings;
            }
            (Some(kind @ ("machine" | "cell")), [name, _, ..]) => {
                let map = if kind == "machine" {
                    &mut out.machines
                } else {
                    &mut out.cells
                };
                if map.insert(name.clone(), strings[1..].to_vec()).is_some() {
                    return Err(twice(format!("{kind} {}", escape::quoted(name))));
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn config_pair(item: &Value) -> std::result::Result<(String, serde_json::Value), String> {
    let parts: Vec<&Value> = item.list_iter().map(Iterator::collect).unwrap_or_default();
    let [key, value] = parts.as_slice() else {
        return Err(format!("expected (key value), found {}", shown(item)));
    };
    let key = key
        .as_symbol()
        .ok_or_else(|| {
            format!(
                "expected (key value) with a symbol key, found {}",
                shown(item)
            )
        })?
        .replace('-', "_");
    let value = match value {
        Value::String(s) => serde_json::Value::from(s.to_string()),
        Value::Bool(b) => serde_json::Value::from(*b),
        v => match (v.as_i64(), v.as_f64()) {
            (Some(i), _) => serde_json::Value::from(i),
            (None, Some(f)) => serde_json::Value::from(f),
            _ => {
                return Err(format!(
                    "{key}: expected a string, number or #t/#f, found {}",
                    shown(value)
                ))
            }
        },
    };
    Ok((key, value))
}

/// The strings of optional field `field`, none holding a format character
/// ([`check_shown`]).
fn shown_strings(r: &mut Record<'_>, field: &str) -> Result<Vec<String>> {
    let strings = r.strings(field)?.unwrap_or_default();
    for s in &strings {
        check_shown(field, s).map_err(|m| r.error(field, None, m))?;
    }
    Ok(strings)
}

/// The issue's example matrix file, shared by the matrix tests.
#[cfg(test)]
pub(crate) const EXAMPLE: &str = r#"(fruix-matrix
  (format-version 1)
  (source "fixtures/freebsd-src-mini")       ; relative to the matrix file
  (machines-file "machines.scm")
  (axes (executor "local" "host-initiated" "guest-self-hosted")
        (kernconf "GENERIC" "MINIMAL"))
  (exclude ((executor "local") (kernconf "MINIMAL")))
  (include ((executor "guest-self-hosted") (kernconf "GENERIC") (machine "builder-2")))
  (max-parallel 4)
  (fail-fast #f)
  (retries 1))"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MatrixFile> {
        MatrixFile::parse_record(Path::new("/ci/matrix.scm"), text)
    }

    #[test]
    fn reads_the_issue_example() {
        let m = parse(EXAMPLE).unwrap();
        assert_eq!(m.source, Path::new("/ci/fixtures/freebsd-src-mini"));
        assert_eq!(
            m.machines_file.as_deref(),
            Some(Path::new("/ci/machines.scm"))
        );
        assert_eq!(
            m.axes,
            [
                (
                    Axis::Executor,
                    vec![
                        "local".into(),
                        "host-initiated".into(),
                        "guest-self-hosted".into()
                    ]
                ),
                (Axis::Kernconf, vec!["GENERIC".into(), "MINIMAL".into()]),
            ]
        );
        assert_eq!(
            m.exclude,
            [vec![
                (Axis::Executor, "local".into()),
                (Axis::Kernconf, "MINIMAL".into())
            ]]
        );
        assert_eq!(m.include[0][2], (Axis::Machine, "builder-2".to_string()));
        assert_eq!(
            (
                m.strategy.max_parallel,
                m.strategy.fail_fast,
                m.strategy.retries
            ),
            (Some(4), false, 1)
        );
        assert_eq!(m.strategy.local_slots, 1);
        assert_eq!(m.agree_across, [Axis::Executor, Axis::Machine]);
    }

    #[test]
    fn defaults_follow_github_actions() {
        let m = parse(r#"(fruix-matrix (format-version 1) (source "/src"))"#).unwrap();
        assert_eq!(m.source, Path::new("/src"));
        assert!(m.strategy.fail_fast);
        assert_eq!(
            (m.strategy.max_parallel, m.strategy.retries, m.build.jobs),
            (None, 1, None)
        );
        assert_eq!((m.build.timeout, m.build.max_silent_time), (None, None));
        assert!(m.axes.is_empty() && m.include.is_empty());
    }

    /// Regression: any integer was taken, -1 and 2^63-1 too, and the
    /// builds failed late inside make.
    #[test]
    fn a_source_date_epoch_out_of_its_range_is_refused() {
        let with = |e: &str| {
            parse(&format!(
                r#"(fruix-matrix (format-version 1) (source "s") (source-date-epoch {e}))"#
            ))
        };
        for e in ["-1", "253402300800", "9223372036854775807"] {
            let err = with(e).unwrap_err().to_string();
            assert!(err.contains("out of range"), "{e}: {err}");
        }
        for (e, n) in [("0", 0), ("253402300799", MAX_SOURCE_DATE_EPOCH)] {
            assert_eq!(with(e).unwrap().build.source_date_epoch, Some(n));
        }
    }

    #[test]
    fn reads_config_and_optional_fields() {
        let m = parse(
            r#"(fruix-matrix (format-version 1) (source "s")
  (make-flags "-DNO_ROOT") (jobs 2) (source-date-epoch 1775420084) (local-slots 3)
  (timeout 7200) (max-silent-time 1800)
  (agree-across "executor") (remote-source "/usr/src")
  (config (local (make "bmake")) (guest-self-hosted (connect-timeout-secs 5) (accept_new_host_key #t))))"#,
        )
        .unwrap();
        assert_eq!(m.build.make_flags, ["-DNO_ROOT"]);
        assert_eq!(
            (
                m.build.jobs,
                m.build.source_date_epoch,
                m.strategy.local_slots
            ),
            (Some(2), Some(1775420084), 3)
        );
        assert_eq!(m.agree_across, [Axis::Executor]);
        assert_eq!(m.remote_source.as_deref(), Some("/usr/src"));
        assert_eq!(m.config["local"]["make"], "bmake");
        assert_eq!(m.config["guest-self-hosted"]["connect_timeout_secs"], 5);
        assert_eq!(m.config["guest-self-hosted"]["accept_new_host_key"], true);
        assert_eq!(
            (m.build.timeout, m.build.max_silent_time),
            (Some(7200), Some(1800))
        );
    }

    #[test]
    fn errors_name_field_and_line() {
        let mistakes = [
            // (replace, with, field, line, part of the message)
            (
                "(max-parallel 4)",
                "(max-parallel 0)",
                "max-parallel",
                9,
                "positive",
            ),
            (
                "(kernconf \"GENERIC\" \"MINIMAL\")",
                "(kernconf \"GENERIC\" \"GENERIC\")",
                "axes.kernconf",
                6,
                "twice",
            ),
            (
                "(kernconf \"GENERIC\" \"MINIMAL\")",
                "(kernel \"GENERIC\")",
                "axes.kernel",
                6,
                "the axes are executor, kernconf",
            ),
            (
                "((executor \"local\") (kernconf \"MINIMAL\"))",
                "((executor \"local\") (colour \"red\"))",
                "exclude[0]",
                7,
                "unknown axis \"colour\"",
            ),
            (
                "(machine \"builder-2\")",
                "(machine builder-2)",
                "include[0]",
                8,
                "expected a string",
            ),
            (
                "(retries 1)",
                "(retries 1) (retry 2)",
                "retry",
                11,
                "unknown field",
            ),
            (
                "(retries 1)",
                "(retries 1) (max-silent-time 0)",
                "max-silent-time",
                11,
                "positive",
            ),
            (
                "(fail-fast #f)",
                "(fail-fast \"no\")",
                "fail-fast",
                10,
                "expected #t or #f",
            ),
            (
                "(source \"fixtures/freebsd-src-mini\")",
                "",
                "source",
                1,
                "missing",
            ),
            (
                "(kernconf \"GENERIC\" \"MINIMAL\")",
                "(kernconf \"GEN ERIC\")",
                "axes.kernconf",
                6,
                "not a valid kernconf",
            ),
            (
                "(retries 1)",
                "(retries 1) (jobs 4097)",
                "jobs",
                11,
                "give 1 to 4096",
            ),
            (
                "(retries 1)",
                "(retries 101)",
                "retries",
                11,
                "101 is more retries than a cell takes; give 0 to 100",
            ),
            (
                "(retries 1)",
                "(retries 1) (runner-tags (default \"a\") (default \"b\"))",
                "runner-tags",
                11,
                "gives default twice",
            ),
            (
                "(retries 1)",
                "(retries 1) (runner-tags (machine \"m\"))",
                "runner-tags",
                11,
                "expected (default",
            ),
            (
                "(retries 1)",
                "(retries 1) (runner-tags (cell \"x\" \"\"))",
                "runner-tags",
                11,
                "non-empty strings",
            ),
        ];
        fruix_core::testing::assert_mistakes_refused(EXAMPLE, parse, &mistakes);
    }

    /// Regression: a format character (U+202E, which reverses what a
    /// terminal shows after it) in a kernconf or make flag was printed raw
    /// by `matrix plan`, the live view and junit.xml. Such characters are
    /// refused where control characters are.
    #[test]
    fn format_characters_are_refused_in_what_cells_show() {
        let mistakes = [
            (
                "(kernconf \"GENERIC\" \"MINIMAL\")",
                "(kernconf \"GENERIC\" \"MIN\u{202e}IMAL\")",
                "axes.kernconf",
                6,
            ),
            (
                "(kernconf \"GENERIC\" \"MINIMAL\")",
                "(kernconf \"GENERIC\") (make-flag \"A=\u{200f}b\")",
                "axes.make-flag",
                6,
            ),
            (
                "(machine \"builder-2\")",
                "(machine \"builder\u{2066}-2\")",
                "include[0]",
                8,
            ),
            (
                "(retries 1)",
                "(retries 1) (make-flags \"-DA\u{202e}\")",
                "make-flags",
                11,
            ),
            (
                "(retries 1)",
                "(retries 1) (runner-tags (default \"a\u{feff}\"))",
                "runner-tags",
                11,
            ),
        ];
        for (replace, with, field, line) in mistakes {
            let text = EXAMPLE.replace(replace, with);
            let e = parse(&text).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(field), "{with}: {shown}");
            assert!(
                !shown.chars().any(fruix_core::escape::is_unsafe),
                "{shown:?}"
            );
            if field != "make-flags" {
                assert!(shown.contains(&format!("line {line}")), "{with}: {shown}");
            }
        }
    }

    #[test]
    fn runner_tags_go_to_a_cell_then_its_machine_then_the_default() {
        let m = parse(&EXAMPLE.replace(
            "(retries 1)",
            "(retries 1) (runner-tags (default \"d\") (machine \"builder-2\" \"big\") (cell \"local-GENERIC\" \"x\" \"y\"))",
        ))
        .unwrap();
        let t = &m.runner_tags;
        assert_eq!(t.of("local-GENERIC", None), ["x", "y"]);
        assert_eq!(t.of("local-GENERIC", Some("builder-2")), ["x", "y"]);
        assert_eq!(t.of("other", Some("builder-2")), ["big"]);
        assert_eq!(t.of("other", Some("builder-1")), ["d"]);
        assert_eq!(t.of("other", None), ["d"]);
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let e = parse(&EXAMPLE.replace("(format-version 1)", "(format-version 2)")).unwrap_err();
        assert!(
            e.to_string().contains("unsupported format-version 2"),
            "{e}"
        );
    }
}
