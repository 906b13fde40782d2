//! `promotion.scm`: the metadata every result root carries (format version 1).
//!
//! An executor writes it at the top of its result root; the promotion pipeline
//! reads it back. Reading is strict: syntax errors name line and column, a
//! missing or mistyped field names the field, an unknown `format-version` is
//! refused by number, and artifact paths that are absolute or contain `..` are
//! refused. [`PromotionMetadata::to_scheme`] writes text that Guile's `read`
//! accepts.

use std::path::{Component, Path};

use lexpr::Value;

use crate::error::Result;
use crate::escape;
use crate::manifest::TreeSignature;
use crate::sexp::{self, field, string_field, Record, Writer};

/// The `format-version` this fruix reads and writes.
pub const FORMAT_VERSION: i64 = 1;

/// The file name of the metadata inside a result root.
pub const PROMOTION_FILE: &str = "promotion.scm";

/// The head symbol of a promotion record.
pub const PROMOTION_HEAD: &str = "fruix-native-build-promotion";

/// The FreeBSD base set: each artifact with the probe files that may stand for it.
///
/// A base artifact's declared probe must be one of these (world's probe is
/// `bin/sh`, never `usr/bin/sh`). Other artifact names (`lib32`, `debug`, ...)
/// may declare any probe.
pub const BASE_ARTIFACTS: [(&str, &[&str]); 4] = [
    ("world", &["bin/sh"]),
    ("kernel", &["boot/kernel/kernel"]),
    ("headers", &["usr/include/sys/param.h"]),
    ("bootloader", &["boot/loader", "boot/loader.efi"]),
];

/// The probes allowed for a base artifact, or `None` for other artifact names.
pub fn base_probes(artifact: &str) -> Option<&'static [&'static str]> {
    BASE_ARTIFACTS
        .iter()
        .find(|(name, _)| *name == artifact)
        .map(|(_, probes)| *probes)
}

/// The FreeBSD base being built.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FreebsdBase {
    /// The system's name, `TYPE` of `sys/conf/newvers.sh`: `FreeBSD`.
    pub name: String,
    /// `REVISION-BRANCH` of `newvers.sh` (`15.0-STABLE`, `14.2-RELEASE`),
    /// or as given; requests and readers check it with [`check_name`].
    pub version: String,
    /// The source branch, given or derived from the version
    /// (`stable/15`, `releng/14.2`).
    pub branch: String,
    /// `TARGET`, the machine (`amd64`, `arm64`).
    pub target: String,
    /// `TARGET_ARCH`, the architecture built for (`amd64`, `aarch64`).
    pub target_arch: String,
}

/// The source tree the build used, as a store path (plus its commit when known).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceStore {
    /// Absolute path of the source tree: a source object's store path, or
    /// for a guest's own checkout the path on the machine that built.
    pub path: String,
    /// The source's commit, verbatim (`--source-commit`, or what a source
    /// object records); `None` when unknown.
    pub commit: Option<String>,
    /// The tree signature of a source that is no store object (a checkout
    /// in a guest, `--guest-source`), as the machine that built computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_signature: Option<String>,
}

/// How the build ran. `jobs` does not enter artifact identities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildPolicy {
    /// Parallel make jobs (`make -jN`), at least 1; 0 only in a policy read
    /// without jobs ([`read_policy_with`]), as in artifact identities.
    pub jobs: u32,
    /// The kernel configuration, `KERNCONF` (`GENERIC`);
    /// [`BuildRequest::check`](crate::executor::BuildRequest::check) refuses
    /// an empty one or one with `/` or a space.
    pub kernconf: String,
    /// Extra make arguments, passed verbatim after fruix's own
    /// (`-DNO_ROOT`, `WITH_REPRODUCIBLE_BUILD=yes`); empty for none.
    pub make_flags: Vec<String>,
    /// `SOURCE_DATE_EPOCH` in seconds since the Unix epoch, passed to make
    /// and set in its environment; with `None` the make steps run with it
    /// removed from their environment.
    pub source_date_epoch: Option<i64>,
}

/// The latest `SOURCE_DATE_EPOCH` a build takes: the last second of the
/// year 9999 (`date` and make handle no later one). The earliest is 0, as
/// the reproducible-builds specification wants a non-negative integer.
pub const MAX_SOURCE_DATE_EPOCH: i64 = 253_402_300_799;

/// What is said of `SOURCE_DATE_EPOCH` `value` out of its range (0 to
/// [`MAX_SOURCE_DATE_EPOCH`]).
pub fn source_date_epoch_range(value: impl std::fmt::Display) -> String {
    format!(
        "SOURCE_DATE_EPOCH {value} is out of range: give a whole number of seconds from 0 to {MAX_SOURCE_DATE_EPOCH} (the end of the year 9999)"
    )
}

/// One artifact of a result root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactEntry {
    /// Artifact name: `world`, `kernel`, `headers`, `bootloader`, or another.
    pub name: String,
    /// Path of the artifact tree, relative to the result root (`artifacts/world`).
    pub path: String,
    /// A file that must exist in the tree, relative to the artifact tree.
    pub probe: String,
    /// The tree signature computed where the artifact was built, if known.
    pub tree_signature: Option<TreeSignature>,
}

/// The contents of `promotion.scm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionMetadata {
    /// The registered name of the executor that built; reading checks it
    /// with [`check_name`].
    pub executor: String,
    /// The version of what ran the build, verbatim, as the build site
    /// recorded it (for `guest-self-hosted`, the guest's fruix: see the
    /// [`Executor`](crate::executor::Executor) contract); left out of
    /// artifact identities.
    pub executor_version: String,
    /// The request's run id (`20260405T213444Z`); reading checks it with
    /// [`check_name`].
    pub run_id: String,
    /// Host name of the machine, jail or guest that built; left out of
    /// artifact identities.
    pub guest_host_name: String,
    /// Store path of the builder's closure, when the executor records one;
    /// the result bundle lists it among its references (if it is a store
    /// path).
    pub closure_path: Option<String>,
    /// Store path of the development profile the build used, when the
    /// executor records one; the result bundle lists it among its
    /// references (if it is a store path).
    pub development_profile_path: Option<String>,
    /// The FreeBSD base built, as the request gave it.
    pub freebsd_base: FreebsdBase,
    /// The source tree built, as the request gave it (plus the tree
    /// signature of a guest's checkout).
    pub source_store: SourceStore,
    /// The build policy, as the request gave it, `jobs` included.
    pub build_policy: BuildPolicy,
    /// The artifacts of the root, in file order; reading requires at least
    /// one and unique names.
    pub artifacts: Vec<ArtifactEntry>,
}

/// Checks a name used inside store file names (executor, version, artifact, run id).
pub fn check_name(what: &str, value: &str) -> std::result::Result<(), String> {
    check_name_within(what, value, 64)
}

/// [`check_name`], for a name of at most `max` bytes.
pub fn check_name_within(what: &str, value: &str, max: usize) -> std::result::Result<(), String> {
    if is_name(value, max, b".-", |b| {
        b.is_ascii_alphanumeric() || b"._+-".contains(&b)
    }) {
        return Ok(());
    }
    Err(format!(
        "{what} {} is not usable in a store name: use 1 to {max} characters from A-Z a-z 0-9 . _ + -, not starting with . or -",
        escape::quoted(value)
    ))
}

/// Whether `value` is 1 to `max` bytes, each one `allowed`, the first not
/// one of `not_first`: the shape of every name fruix accepts.
pub fn is_name(value: &str, max: usize, not_first: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    !value.is_empty()
        && value.len() <= max
        && !not_first.contains(&value.as_bytes()[0])
        && value.bytes().all(allowed)
}

/// Checks that `path` is relative, normal, and stays inside its root lexically:
/// not absolute, no `..`, no `.` or empty components.
pub fn check_relative_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("is empty; give a path relative to the root".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "{} is absolute; give a path relative to the root",
            escape::quoted(path)
        ));
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) => {}
            Component::ParentDir => {
                return Err(format!(
                    "{} contains `..` and could escape the root; give a path inside it",
                    escape::quoted(path)
                ))
            }
            _ => return Err(not_normal(path)),
        }
    }
    if path.contains("//") || path.ends_with('/') || path.split('/').any(|c| c == ".") {
        return Err(not_normal(path));
    }
    Ok(())
}

fn not_normal(path: &str) -> String {
    format!(
        "{} is not a normal relative path (no `.`, `//` or trailing `/`)",
        escape::quoted(path)
    )
}

impl PromotionMetadata {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = crate::fsutil::read_metadata_file(path)?;
        Self::parse(path, &text)
    }

    /// Parses `text`; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        sexp::read_record(path, text, PROMOTION_HEAD, |r| {
            r.format_version(FORMAT_VERSION)?;
            let metadata = PromotionMetadata {
                executor: named(r, "executor")?,
                executor_version: r.string("executor-version")?,
                run_id: named(r, "run-id")?,
                guest_host_name: r.string("guest-host-name")?,
                closure_path: r.opt_string("closure-path")?,
                development_profile_path: r.opt_string("development-profile-path")?,
                freebsd_base: read_base(r.record("freebsd-base")?)?,
                source_store: read_source(r.record("source-store")?)?,
                build_policy: read_policy(r.record("build-policy")?)?,
                artifacts: read_artifacts(r)?,
            };
            Ok(metadata)
        })
    }

    /// The artifact entry named `name`.
    pub fn artifact(&self, name: &str) -> Option<&ArtifactEntry> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Renders the metadata as `promotion.scm` text.
    pub fn to_scheme(&self) -> String {
        let mut w = Writer::new(PROMOTION_HEAD);
        w.field(field("format-version", [Value::from(FORMAT_VERSION)]));
        self.write_run_fields(&mut w);
        w.list_field("artifacts", self.artifacts.iter().map(artifact_value));
        w.finish()
    }

    /// Writes the fields that describe the run, `executor` through
    /// `build-policy`: `promotion.scm` and a result bundle both hold them,
    /// each followed by its own `artifacts`.
    pub fn write_run_fields(&self, w: &mut Writer) {
        w.field(string_field("executor", &self.executor));
        w.field(string_field("executor-version", &self.executor_version));
        w.field(string_field("run-id", &self.run_id));
        w.field(string_field("guest-host-name", &self.guest_host_name));
        if let Some(p) = &self.closure_path {
            w.field(string_field("closure-path", p));
        }
        if let Some(p) = &self.development_profile_path {
            w.field(string_field("development-profile-path", p));
        }
        w.field(base_value(&self.freebsd_base));
        w.field(source_value(&self.source_store));
        w.field(policy_value(&self.build_policy));
    }

    /// Writes `promotion.scm` into `result_root`, atomically (write, fsync, rename).
    pub fn write_to(&self, result_root: &Path) -> Result<()> {
        crate::fsutil::write_atomic(
            &result_root.join(PROMOTION_FILE),
            self.to_scheme().as_bytes(),
        )
    }
}

fn named(r: &mut Record<'_>, field: &str) -> Result<String> {
    let value = r.string(field)?;
    check_name(field, &value).map_err(|m| r.invalid(field, m))?;
    Ok(value)
}

/// Reads a `(freebsd-base ...)` record.
pub fn read_base(mut r: Record<'_>) -> Result<FreebsdBase> {
    let base = FreebsdBase {
        name: r.string("name")?,
        version: r.string("version")?,
        branch: r.string("branch")?,
        target: r.string("target")?,
        target_arch: r.string("target-arch")?,
    };
    check_name("version", &base.version).map_err(|m| r.invalid("version", m))?;
    r.finish()?;
    Ok(base)
}

/// Reads a `(source-store ...)` record.
pub fn read_source(mut r: Record<'_>) -> Result<SourceStore> {
    let path = r.string("path")?;
    if !path.starts_with('/') {
        return Err(r.invalid(
            "path",
            format!(
                "{} is not absolute; give the source store path",
                escape::quoted(&path)
            ),
        ));
    }
    let commit = r.opt_string("commit")?;
    let tree_signature = r.opt_string("tree-signature")?;
    r.finish()?;
    Ok(SourceStore {
        path,
        commit,
        tree_signature,
    })
}

fn read_policy(r: Record<'_>) -> Result<BuildPolicy> {
    read_policy_with(r, true)
}

/// Reads a `(build-policy ...)` record; `jobs` is required when `with_jobs`,
/// and must be absent otherwise (artifact identities leave it out; it reads as 0).
pub fn read_policy_with(mut r: Record<'_>, with_jobs: bool) -> Result<BuildPolicy> {
    if !with_jobs {
        let policy = BuildPolicy {
            jobs: 0,
            kernconf: r.string("kernconf")?,
            make_flags: r.strings("make-flags")?.unwrap_or_default(),
            source_date_epoch: r.opt_integer("source-date-epoch")?,
        };
        r.finish()?;
        return Ok(policy);
    }
    let jobs = r.integer("jobs")?;
    let jobs = u32::try_from(jobs)
        .ok()
        .filter(|j| *j >= 1)
        .ok_or_else(|| r.invalid("jobs", format!("{jobs} is not a positive job count")))?;
    let policy = BuildPolicy {
        jobs,
        kernconf: r.string("kernconf")?,
        make_flags: r.strings("make-flags")?.unwrap_or_default(),
        source_date_epoch: r.opt_integer("source-date-epoch")?,
    };
    r.finish()?;
    Ok(policy)
}

fn read_artifacts(r: &mut Record<'_>) -> Result<Vec<ArtifactEntry>> {
    let mut children = r.children("artifacts", "artifact")?;
    if children.is_empty() {
        return Err(r.invalid(
            "artifacts",
            "lists no artifact; a result root has at least one",
        ));
    }
    let mut artifacts: Vec<ArtifactEntry> = Vec::new();
    for child in &mut children {
        let name = child.name("name")?;
        check_name("artifact name", &name).map_err(|m| child.invalid("name", m))?;
        if artifacts.iter().any(|a| a.name == name) {
            return Err(child.invalid("name", format!("artifact {name} is listed twice")));
        }
        let path = child.string("path")?;
        check_relative_path(&path).map_err(|m| child.invalid("path", m))?;
        let probe = child.string("probe")?;
        check_relative_path(&probe).map_err(|m| child.invalid("probe", m))?;
        let tree_signature = match child.opt_string("tree-signature")? {
            None => None,
            Some(s) => Some(
                s.parse()
                    .map_err(|m: String| child.invalid("tree-signature", m))?,
            ),
        };
        artifacts.push(ArtifactEntry {
            name,
            path,
            probe,
            tree_signature,
        });
    }
    for child in children {
        child.finish()?;
    }
    Ok(artifacts)
}

/// `(freebsd-base (name ..) ...)`.
pub fn base_value(b: &FreebsdBase) -> Value {
    field(
        "freebsd-base",
        [
            string_field("name", &b.name),
            string_field("version", &b.version),
            string_field("branch", &b.branch),
            string_field("target", &b.target),
            string_field("target-arch", &b.target_arch),
        ],
    )
}

/// `(source-store (path ..) [(commit ..)])`.
pub fn source_value(s: &SourceStore) -> Value {
    let mut items = vec![string_field("path", &s.path)];
    if let Some(c) = &s.commit {
        items.push(string_field("commit", c));
    }
    if let Some(t) = &s.tree_signature {
        items.push(string_field("tree-signature", t));
    }
    field("source-store", items)
}

/// `(build-policy (jobs N) (kernconf ..) ...)`; `with_jobs` false leaves `jobs` out
/// (as in artifact identities).
pub fn policy_value_with(p: &BuildPolicy, with_jobs: bool) -> Value {
    let mut items = Vec::new();
    if with_jobs {
        items.push(field("jobs", [Value::from(u64::from(p.jobs))]));
    }
    items.push(string_field("kernconf", &p.kernconf));
    if !p.make_flags.is_empty() {
        items.push(field(
            "make-flags",
            p.make_flags.iter().map(|f| Value::string(f.as_str())),
        ));
    }
    if let Some(e) = p.source_date_epoch {
        items.push(field("source-date-epoch", [Value::from(e)]));
    }
    field("build-policy", items)
}

fn policy_value(p: &BuildPolicy) -> Value {
    policy_value_with(p, true)
}

/// `(artifact (name ..) (path ..) (probe ..) [(tree-signature ..)])`.
pub fn artifact_value(a: &ArtifactEntry) -> Value {
    let mut items = vec![
        field("name", [Value::symbol(a.name.as_str())]),
        string_field("path", &a.path),
        string_field("probe", &a.probe),
    ];
    if let Some(sig) = &a.tree_signature {
        items.push(string_field("tree-signature", sig.as_str()));
    }
    field("artifact", items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// The testing sample with every optional field set, in the reports' shape.
    fn sample() -> PromotionMetadata {
        let mut m = crate::testing::sample_metadata("guest-self-hosted", "20260405T213444Z");
        m.closure_path = Some("/frx/store/abc-fruix-builder-closure".into());
        m.source_store.commit = Some("0123abc".into());
        m.build_policy.jobs = 8;
        m.build_policy
            .make_flags
            .push("WITH_REPRODUCIBLE_BUILD=yes".into());
        m
    }

    fn parse(text: &str) -> Result<PromotionMetadata> {
        PromotionMetadata::parse(Path::new("promotion.scm"), text)
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let mut m = sample();
        m.artifacts[0].tree_signature =
            Some(format!("sha256:{}", "ab".repeat(32)).parse().unwrap());
        m.guest_host_name = "host \"quoted\" \\ é".into();
        let text = m.to_scheme();
        assert_eq!(parse(&text).unwrap(), m);
    }

    #[test]
    fn reads_the_documented_example_with_comments() {
        let text = r#"(fruix-native-build-promotion
  (format-version 1)
  (executor "guest-self-hosted")
  (executor-version "0.1.0")
  (run-id "20260405T213444Z")
  (guest-host-name "builder-1")                       ; host name of the machine that built
  (freebsd-base (name "FreeBSD") (version "15.0-STABLE") (branch "stable/15")
                (target "amd64") (target-arch "amd64"))
  (source-store (path "/frx/store/12d7704362e95afc2697db63f168b878e082b372-freebsd-source-default"))
  (build-policy (jobs 8) (kernconf "GENERIC"))
  (artifacts
    (artifact (name world) (path "artifacts/world") (probe "bin/sh"))
    (artifact (name bootloader) (path "artifacts/bootloader") (probe "boot/loader.efi"))))"#;
        let m = parse(text).unwrap();
        assert_eq!(m.artifacts.len(), 2);
        assert_eq!(m.build_policy.make_flags, Vec::<String>::new());
        assert_eq!(m.source_store.commit, None);
        assert_eq!(m.artifact("bootloader").unwrap().probe, "boot/loader.efi");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let text = sample().to_scheme().replace("(run-id", "(run-id )(");
        let text = text.trim_end().trim_end_matches(')').to_string();
        match parse(&text) {
            Err(Error::Syntax { line, column, .. }) => {
                assert!(line > 1 && column > 0, "{line}:{column}")
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        match parse("(fruix-native-build-promotion\n  (format-version 1)\n  (executor \"x)") {
            Err(e @ Error::Syntax { .. }) => {
                assert!(e.to_string().contains("promotion.scm:3:"), "{e}")
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    /// Each mistake is refused naming its field and line. A newline in
    /// `source-store` `path` once added a line to the store's `.references`
    /// (issue 10, class 8): control characters are among the mistakes.
    #[test]
    fn mistakes_are_refused_naming_field_and_line() {
        let mistakes = [
            // (replace, with, field, line, part of the message)
            (
                "  (executor-version \"0.1.0\")\n",
                "",
                "executor-version",
                1,
                "missing",
            ),
            (
                "(jobs 8)",
                "(jobs \"eight\")",
                "build-policy.jobs",
                10,
                "expected an integer",
            ),
            // Out of range, it is said to be (it was "expected an integer,
            // found 1e26", an integer).
            (
                "(jobs 8)",
                "(jobs 99999999999999999999999999)",
                "build-policy.jobs",
                10,
                "of at most 9223372036854775807",
            ),
            (
                "(kernconf",
                "(kernelconf \"X\") (kernconf",
                "build-policy.kernelconf",
                10,
                "unknown field",
            ),
            (
                "\"artifacts/world\"",
                "\"/etc\"",
                "artifacts[0].path",
                12,
                "absolute",
            ),
            (
                "\"artifacts/kernel\"",
                "\"artifacts/../../kernel\"",
                "artifacts[1].path",
                13,
                "..",
            ),
            (
                "(probe \"bin/sh\")",
                "(probe \"bin/sh\") (tree-signature \"md5:abc\")",
                "artifacts[0].tree-signature",
                12,
                "sha256:",
            ),
            (
                "(name kernel)",
                "(name world)",
                "artifacts[1].name",
                13,
                "twice",
            ),
            (
                "(executor \"guest-self-hosted\")",
                "(executor \"a/../b\")",
                "executor",
                3,
                "not usable in a store name",
            ),
            // A value refused once read is named at its own line (it was
            // at the record's, line 1).
            ("(run-id \"", "(run-id \"../", "run-id", 5, "run-id"),
            (
                "-freebsd-source-default\"",
                "-freebsd-source-default\n/frx/store/forged\"",
                "source-store.path",
                9,
                "control character `\\n`",
            ),
            (
                "(kernconf \"GENERIC\")",
                "(kernconf \"\u{1b}[31mGENERIC\")",
                "build-policy.kernconf",
                10,
                "`\\033` (U+001B)",
            ),
            (
                "(make-flags \"-DNO_ROOT\"",
                "(make-flags \"-DNO_ROOT\\x85;\"",
                "build-policy.make-flags",
                10,
                "U+0085",
            ),
        ];
        crate::testing::assert_mistakes_refused(&sample().to_scheme(), parse, &mistakes);
    }

    /// Regression: a `#| ... |#` block comment, which Guile reads, was let
    /// through by the scan and then refused by lexpr ("expected ident"). It
    /// is read as white space now, nested and over lines; one never closed
    /// is refused where it opens.
    #[test]
    fn block_comments_are_read_as_guile_reads_them() {
        let text = sample().to_scheme();
        let commented = text
            .replace(
                "(jobs 8)",
                "(jobs 8) #| a (comment) #| nested |# é\n over lines |#",
            )
            .replace("(fruix-", "#|head|# (fruix-");
        assert_ne!(commented, text);
        assert_eq!(parse(&commented).unwrap(), sample());
        // Lines are where they were: an error after a comment names its own.
        let broken = commented.replace("(make-flags \"-DNO_ROOT\"", "(make-flags 1");
        match parse(&broken) {
            Err(Error::InvalidMetadata { line: Some(11), .. }) => {}
            other => panic!("expected an error at line 11, got {other:?}"),
        }
        let unclosed = text.replace("(jobs 8)", "(jobs 8) #| never closed");
        match parse(&unclosed) {
            Err(e @ Error::Syntax { line: 10, .. }) => {
                assert!(e.to_string().contains("never closed"), "{e}")
            }
            other => panic!("expected a syntax error at line 10, got {other:?}"),
        }
    }

    #[test]
    fn unknown_format_version_is_refused_by_number() {
        let text = sample()
            .to_scheme()
            .replace("(format-version 1)", "(format-version 7)");
        match parse(&text) {
            Err(e @ Error::UnsupportedFormatVersion { version: 7, .. }) => {
                assert!(e.to_string().contains("format-version 7"), "{e}")
            }
            other => panic!("expected UnsupportedFormatVersion, got {other:?}"),
        }
    }
}
