//! Executors files: S-expression files declaring external executors, where
//! fruix looks for them, and how their entries join the registry.
//!
//! ```scheme
//! (fruix-executors
//!   (format-version 1)
//!   (executor
//!     (name "bhyve-vm")
//!     (version "1.2.0")
//!     (description "builds in a throw-away bhyve VM")
//!     (build-failure-exit-code 1)     ; optional, default 1
//!     (system-failure-exit-code 2)    ; optional, default 2
//!     (term-grace 5)                  ; optional, seconds between SIGTERM and SIGKILL
//!     (remote #t)                     ; optional capability, default #f
//!     (target-arches "amd64" "aarch64") ; optional capability, default any
//!     (config-key (name "vm_image") (description "the VM image to boot"))
//!     (prepare (command "prepare.sh") (timeout 600))
//!     (build (command "build.sh" "--verbose") (timeout 14400))
//!     (collect (command "collect.sh") (timeout 1800))
//!     (cleanup (command "cleanup.sh") (timeout 300))))
//! ```
//!
//! `build` is required; `prepare`, `collect` and `cleanup` are optional.
//! A command's program is looked up in `PATH` when it is a bare name, taken
//! as is when absolute, and relative to the executors file's directory
//! otherwise (`scripts/build.sh`, `./build.sh`). Timeouts are seconds
//! (integer or decimal); the defaults are in [`DEFAULT_TIMEOUTS`].
//! Command arguments may hold newlines and tabs (for `"sh" "-c"` scripts);
//! no other string in the file may hold a control character.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fruix_core::error::IoContext;
use fruix_core::escape;
use fruix_core::executor::{Capabilities, ConfigKey, ExecutorKind, Registry, RegistryEntry};
use fruix_core::fsutil::read_file_of_kind;
use fruix_core::promotion::{check_name, is_name};
use fruix_core::sexp::{read_record, Record};
use fruix_core::{Error, Result};

use super::ExternalExecutor;

/// The head symbol of an executors file.
pub const EXECUTORS_HEAD: &str = "fruix-executors";

/// The `format-version` this fruix reads.
pub const FORMAT_VERSION: i64 = 1;

/// The system-wide executors file, read when it exists.
pub const SYSTEM_EXECUTORS_FILE: &str = "/etc/fruix/executors.scm";

/// Default timeouts of prepare, build, collect and cleanup.
pub const DEFAULT_TIMEOUTS: [(Stage, Duration); 4] = [
    (Stage::Prepare, Duration::from_secs(3600)),
    (Stage::Build, Duration::from_secs(48 * 3600)),
    (Stage::Collect, Duration::from_secs(3600)),
    (Stage::Cleanup, Duration::from_secs(600)),
];

/// The stages of an external executor, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `prepare`: optional, runs first (default timeout 1 hour).
    Prepare,
    /// `build`: the one required command; runs after `prepare`, when there
    /// is one and it succeeded (default timeout 48 hours).
    Build,
    /// `collect`: optional, runs once `build` succeeded and puts each
    /// requested artifact at `artifacts/NAME` of the result root (default
    /// timeout 1 hour).
    Collect,
    /// `cleanup`: optional, runs once at the end of every run, whatever
    /// happened, with `FRUIX_OUTCOME` set; it cannot be cancelled (default
    /// timeout 10 minutes).
    Cleanup,
}

impl Stage {
    /// Every stage, in the order they run (`cleanup` last, whatever the
    /// others did).
    pub const ALL: [Stage; 4] = [Stage::Prepare, Stage::Build, Stage::Collect, Stage::Cleanup];

    /// The stage's name: its field in the executors file, its event stage,
    /// its log file (`logs/NAME.log`) and `FRUIX_STAGE`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Build => "build",
            Stage::Collect => "collect",
            Stage::Cleanup => "cleanup",
        }
    }

    fn default_timeout(self) -> Duration {
        DEFAULT_TIMEOUTS
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, t)| *t)
            .expect("every stage has a default timeout")
    }
}

/// One stage's command and time limit.
#[derive(Debug, Clone, PartialEq)]
pub struct StageCommand {
    /// Program (resolved as described in the module docs) and arguments.
    pub argv: Vec<String>,
    /// How long the command may run: `(timeout SECONDS)`, else the stage's
    /// entry in [`DEFAULT_TIMEOUTS`]. Past it the command's process group is
    /// stopped (`SIGTERM`, then `SIGKILL` after the executor's
    /// [`term_grace`](ExternalSpec::term_grace)) and the stage is a system
    /// failure.
    pub timeout: Duration,
}

/// One external executor, as declared in an executors file.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalSpec {
    /// The name the executor is registered and selected under (`name`),
    /// also given to its commands as `FRUIX_EXECUTOR`; checked to be usable
    /// in a store name.
    pub name: String,
    /// The executor's version (`version`, same characters as `name`):
    /// `FRUIX_EXECUTOR_VERSION`, and the version in the `promotion.scm`
    /// fruix writes for it.
    pub version: String,
    /// One line for `fruix executors list` (`description`).
    pub description: String,
    /// `FILE:LINE` of the declaration, named when two executors clash.
    pub origin: String,
    /// The directory of the executors file (`FRUIX_EXECUTOR_DIR`).
    pub dir: PathBuf,
    /// The exit statuses its commands report a failure with.
    pub exit_codes: ExitCodes,
    /// How long a stage's process group has between `SIGTERM` and `SIGKILL`
    /// when it is stopped (timeout or cancellation): `(term-grace SECONDS)`,
    /// else [`fruix_core::process::TERM_GRACE`].
    pub term_grace: Duration,
    /// What the registry says it can do: `remote` (default false) and
    /// `target_arches` (empty: any) come from the file; it never signs at
    /// the build site (fruix signs after `collect` unless the executor wrote
    /// `promotion.scm`) and is always cancellable.
    pub capabilities: Capabilities,
    /// The configuration keys it accepts (`config-key` records, names of
    /// `a-z`, `0-9` and `_`); each value given reaches every stage as
    /// `FRUIX_CONFIG_KEY`, the key upper-cased.
    pub config_keys: Vec<ConfigKey>,
    /// Its command for each stage.
    pub stages: Stages,
}

/// The statuses an external executor's commands exit with to say what
/// failed (`build-failure-exit-code`, `system-failure-exit-code`); any
/// other non-zero status is a system failure too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCodes {
    /// The build itself failed (default 1).
    pub build_failure: i32,
    /// The machine, the connection or the executor failed (default 2).
    pub system_failure: i32,
}

/// An external executor's commands, one per stage; only `build` is
/// required.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages {
    /// Runs first; `None`: the run starts with `build`.
    pub prepare: Option<StageCommand>,
    /// Always present: an executor without a `build` command is refused.
    pub build: StageCommand,
    /// Runs after `build`; `None`: `build` must leave the artifacts at
    /// `artifacts/NAME` of the result root itself.
    pub collect: Option<StageCommand>,
    /// Runs once at the end of every run; `None`: only the work directory is
    /// removed.
    pub cleanup: Option<StageCommand>,
}

impl Stages {
    /// The command of `stage`, if the executor has one.
    pub fn get(&self, stage: Stage) -> Option<&StageCommand> {
        match stage {
            Stage::Prepare => self.prepare.as_ref(),
            Stage::Build => Some(&self.build),
            Stage::Collect => self.collect.as_ref(),
            Stage::Cleanup => self.cleanup.as_ref(),
        }
    }
}

/// The executors files read when present, in order: [`SYSTEM_EXECUTORS_FILE`],
/// then `$XDG_CONFIG_HOME/fruix/executors.scm` (`~/.config` when
/// `XDG_CONFIG_HOME` is unset or empty, `~` as
/// [`fruix_core::fsutil::home_dir`] finds it).
pub fn default_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from(SYSTEM_EXECUTORS_FILE)];
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| fruix_core::fsutil::home_dir().map(|h| h.join(".config")));
    if let Some(dir) = config_home {
        files.push(dir.join("fruix/executors.scm"));
    }
    files
}

/// Reads the default executors files that exist, then every file of
/// `explicit` (which must exist), and adds their executors to `registry`.
/// A file named twice (the same device and inode, through any path) is
/// read once. A name registered twice is an error naming both declarations.
pub fn register_files(registry: &mut Registry, explicit: &[PathBuf]) -> Result<()> {
    let defaults = default_files().into_iter().filter(|f| f.is_file());
    let mut read = std::collections::HashSet::new();
    for file in defaults.chain(explicit.iter().cloned()) {
        // What cannot be looked at is read, for its error.
        let id = std::fs::metadata(&file).map(|m| (m.dev(), m.ino()));
        if id.is_ok_and(|id| !read.insert(id)) {
            continue;
        }
        for spec in read_file(&file)? {
            registry.add(entry(spec))?;
        }
    }
    Ok(())
}

/// The registry entry of an external executor.
pub fn entry(spec: ExternalSpec) -> RegistryEntry {
    let spec = Arc::new(spec);
    let factory_spec = spec.clone();
    RegistryEntry {
        name: spec.name.clone(),
        description: spec.description.clone(),
        version: spec.version.clone(),
        origin: spec.origin.clone(),
        kind: ExecutorKind::External,
        capabilities: spec.capabilities.clone(),
        config_keys: spec.config_keys.clone(),
        factory: Arc::new(move |config| {
            Ok(Arc::new(ExternalExecutor::new(factory_spec.clone(), config)?) as _)
        }),
    }
}

/// Reads the executors declared in `path`.
pub fn read_file(path: &Path) -> Result<Vec<ExternalSpec>> {
    let text = read_file_of_kind(path, "executors file").map_err(|e| match e {
        Error::NotFound { path, hint } => Error::NotFound {
            path,
            hint: format!("{hint} (see `Adding an executor` in the README)"),
        },
        e => e,
    })?;
    parse(path, &text)
}

/// Parses the text of executors file `path`.
pub fn parse(path: &Path, text: &str) -> Result<Vec<ExternalSpec>> {
    // A bare file name (`executors.scm`) has the empty path as its parent.
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir =
        std::fs::canonicalize(&dir).with_path("resolve the directory of executors file", &dir)?;
    read_record(path, text, EXECUTORS_HEAD, |r| {
        r.format_version(FORMAT_VERSION)?;
        r.repeated("executor")?
            .into_iter()
            .map(|e| read_executor(e, path, &dir))
            .collect()
    })
}

fn read_executor(mut r: Record<'_>, path: &Path, dir: &Path) -> Result<ExternalSpec> {
    let origin = format!("{}:{}", path.display(), r.line());
    let name = r.string("name")?;
    check_name("executor name", &name).map_err(|m| r.invalid("name", m))?;
    let version = r.string("version")?;
    check_name("executor version", &version).map_err(|m| r.invalid("version", m))?;
    let description = r.string("description")?;
    let exit_codes = ExitCodes {
        build_failure: exit_code(&mut r, "build-failure-exit-code", 1)?,
        system_failure: exit_code(&mut r, "system-failure-exit-code", 2)?,
    };
    if exit_codes.build_failure == exit_codes.system_failure {
        return Err(r.invalid(
            "system-failure-exit-code",
            format!(
                "equals build-failure-exit-code ({}); give two different statuses",
                exit_codes.build_failure
            ),
        ));
    }
    let term_grace = match r.opt_number("term-grace")? {
        None => fruix_core::process::TERM_GRACE,
        Some(s) => seconds(&r, "term-grace", s)?,
    };
    let capabilities = Capabilities {
        remote: r.opt_bool("remote")?.unwrap_or(false),
        // fruix boots and tears down the guests of the `vm` executor only.
        boots_vms: false,
        signs_at_build_site: false,
        cancellable: true,
        target_arches: r.strings("target-arches")?.unwrap_or_default(),
    };
    let mut config_keys = Vec::new();
    for mut key in r.repeated("config-key")? {
        let name = key.string("name")?;
        check_key_name(&name).map_err(|m| key.invalid("name", m))?;
        let description = key.string("description")?;
        key.finish()?;
        config_keys.push(ConfigKey { name, description });
    }
    let mut stage = |stage: Stage| -> Result<Option<StageCommand>> {
        let Some(mut s) = r.opt_record(stage.name())? else {
            return Ok(None);
        };
        // Arguments may be scripts (`"sh" "-c" "..."`) spanning lines.
        let mut argv = s.multiline_strings("command")?.unwrap_or_default();
        let Some(program) = argv.first_mut().filter(|p| !p.is_empty()) else {
            return Err(s.invalid(
                "command",
                "missing or empty (or its program is \"\"); give the program to run and its arguments",
            ));
        };
        // Arguments may span lines; the program is one name.
        if program.chars().any(char::is_control) {
            return Err(s.invalid(
                "command",
                format!(
                    "its program {} holds a control character; give a program name or path",
                    fruix_core::escape::quoted(program)
                ),
            ));
        }
        if program.contains('/') && !program.starts_with('/') {
            *program = dir.join(&*program).to_string_lossy().into_owned();
        }
        let timeout = match s.opt_number("timeout")? {
            None => stage.default_timeout(),
            Some(t) => seconds(&s, "timeout", t)?,
        };
        s.finish()?;
        Ok(Some(StageCommand { argv, timeout }))
    };
    let prepare = stage(Stage::Prepare)?;
    let build = stage(Stage::Build)?;
    let collect = stage(Stage::Collect)?;
    let cleanup = stage(Stage::Cleanup)?;
    let build = build.ok_or_else(|| {
        r.invalid(
            "build",
            "missing; an external executor needs at least a build command",
        )
    })?;
    let stages = Stages {
        prepare,
        build,
        collect,
        cleanup,
    };
    r.finish()?;
    Ok(ExternalSpec {
        name,
        version,
        description,
        origin,
        dir: dir.to_path_buf(),
        exit_codes,
        term_grace,
        capabilities,
        config_keys,
        stages,
    })
}

/// Checks a configuration key name: `a-z`, `0-9` and `_`, not empty.
fn check_key_name(name: &str) -> std::result::Result<(), String> {
    if is_name(name, usize::MAX, b"", |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
    }) {
        return Ok(());
    }
    Err(format!(
        "{} is not a configuration key name: use a-z, 0-9 and _",
        escape::quoted(name)
    ))
}

fn exit_code(r: &mut Record<'_>, field: &str, default: i32) -> Result<i32> {
    match r.opt_integer(field)? {
        None => Ok(default),
        Some(code @ 1..=255) => Ok(code as i32),
        Some(code) => Err(r.invalid(
            field,
            format!("{code} is not a failure exit status; give 1 to 255"),
        )),
    }
}

/// The bound of a number of seconds in an executors file (a `timeout`,
/// `term-grace`), exclusive: about 31 years.
const MAX_SECONDS: f64 = 1e9;

fn seconds(r: &Record<'_>, field: &str, value: f64) -> Result<Duration> {
    if value.is_finite() && value > 0.0 && value < MAX_SECONDS {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(r.invalid(
            field,
            format!(
                "{value} is not a number of seconds greater than 0 and less than {MAX_SECONDS} (about 31 years)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"(fruix-executors
  (format-version 1)
  (executor
    (name "scripted-vm")
    (version "1.2.0")
    (description "builds in a VM")
    (system-failure-exit-code 75)
    (term-grace 1.5)
    (remote #t)
    (target-arches "amd64")
    (config-key (name "vm_image") (description "the image"))
    (prepare (command "scripts/prepare.sh" "a b") (timeout 10))
    (build (command "/usr/local/bin/vm-build"))
    (cleanup (command "sh" "-c" "true") (timeout 0.5)))
  (executor
    (name "minimal")
    (version "1")
    (description "only a build")
    (build (command "./b.sh"))))
"#;

    fn parse_text(text: &str) -> Result<Vec<ExternalSpec>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("executors.scm");
        parse(&path, text)
    }

    #[test]
    fn a_full_file_is_read_with_defaults_and_resolved_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("executors.scm");
        let specs = parse(&path, FULL).unwrap();
        let base = dir.path().canonicalize().unwrap();
        let vm = &specs[0];
        assert_eq!(
            (vm.name.as_str(), vm.version.as_str()),
            ("scripted-vm", "1.2.0")
        );
        assert_eq!(vm.origin, format!("{}:3", path.display()));
        assert_eq!(
            (vm.exit_codes.build_failure, vm.exit_codes.system_failure),
            (1, 75)
        );
        assert_eq!(vm.term_grace, Duration::from_millis(1500));
        assert!(vm.capabilities.remote && vm.capabilities.cancellable);
        assert_eq!(vm.capabilities.target_arches, ["amd64"]);
        assert_eq!(vm.config_keys[0].name, "vm_image");
        let prepare = vm.stages.prepare.as_ref().unwrap();
        assert_eq!(
            prepare.argv,
            [base.join("scripts/prepare.sh").to_str().unwrap(), "a b"]
        );
        assert_eq!(prepare.timeout, Duration::from_secs(10));
        assert_eq!(vm.stages.build.argv, ["/usr/local/bin/vm-build"]);
        assert_eq!(vm.stages.build.timeout, Stage::Build.default_timeout());
        assert!(vm.stages.collect.is_none());
        assert_eq!(
            vm.stages.cleanup.as_ref().unwrap().argv,
            ["sh", "-c", "true"]
        );
        let minimal = &specs[1];
        assert_eq!(
            minimal.stages.build.argv,
            [base.join("./b.sh").to_str().unwrap()]
        );
        assert_eq!(
            (
                minimal.exit_codes.build_failure,
                minimal.exit_codes.system_failure
            ),
            (1, 2)
        );
    }

    #[test]
    fn mistakes_are_refused_naming_field_and_line() {
        let cases = [
            // (replace, with, part of the message)
            (
                "(format-version 1)",
                "(format-version 2)",
                "unsupported format-version 2",
            ),
            (
                "(build (command \"./b.sh\"))",
                "",
                "field `executor[1].build` (line 15): missing",
            ),
            (
                "(timeout 10)",
                "(timeout 0)",
                "0 is not a number of seconds greater than 0 and less than 1000000000",
            ),
            // Regression: a number over the bound was refused as "not a
            // number of seconds greater than 0".
            (
                "(timeout 10)",
                "(timeout 99999999999)",
                "99999999999 is not a number of seconds greater than 0 and less than 1000000000 (about 31 years)",
            ),
            (
                "(term-grace 1.5)",
                "(term-grace 3153600000)",
                "3153600000 is not a number of seconds greater than 0 and less than 1000000000",
            ),
            (
                "(system-failure-exit-code 75)",
                "(system-failure-exit-code 1)",
                "give two different statuses",
            ),
            (
                "(system-failure-exit-code 75)",
                "(system-failure-exit-code 0)",
                "not a failure exit status",
            ),
            (
                "(name \"scripted-vm\")",
                "(name \"v m\")",
                "not usable in a store name",
            ),
            (
                "(remote #t)",
                "(remote #t) (colour \"red\")",
                "`executor[0].colour` (line 9): unknown field",
            ),
            (
                "(command \"/usr/local/bin/vm-build\")",
                "(command)",
                "missing or empty",
            ),
            // Refused as its stage started, after the others had run.
            (
                "(command \"/usr/local/bin/vm-build\")",
                "(command \"\")",
                "its program is \"\"",
            ),
            // A program name that would break a message's line.
            (
                "(command \"/usr/local/bin/vm-build\")",
                "(command \"/usr/local/bin/vm\\nbuild\")",
                "its program \"/usr/local/bin/vm\\nbuild\" holds a control character",
            ),
            (
                "(name \"vm_image\")",
                "(name \"VM-Image\")",
                "not a configuration key name",
            ),
        ];
        for (from, to, expected) in cases {
            let text = FULL.replace(from, to);
            assert_ne!(text, FULL, "FULL holds {from:?}");
            let e = parse_text(&text).unwrap_err().to_string();
            assert!(e.contains(expected), "expected {expected:?} in: {e}");
        }
    }

    #[test]
    fn a_missing_explicit_file_is_named() {
        let e = read_file(Path::new("/nonexistent/executors.scm")).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/executors.scm"), "{e}");
    }

    /// Writes FULL with its second executor named `name` to a new
    /// executors file.
    fn full_file_with_second_named(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("executors.scm");
        let text = FULL.replace("(name \"minimal\")", &format!("(name {name:?})"));
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn two_executors_with_one_name_name_both_declarations() {
        let (_dir, path) = full_file_with_second_named("scripted-vm");
        let mut registry = Registry::default();
        let e = register_files(&mut registry, std::slice::from_ref(&path))
            .unwrap_err()
            .to_string();
        let file = path.display();
        assert!(
            e.contains(&format!("executor `scripted-vm` is registered twice: by {file}:3 (external) and by {file}:15 (external)")),
            "{e}"
        );
    }

    #[test]
    fn an_external_executor_shadowing_a_built_in_is_an_error() {
        let (_dir, path) = full_file_with_second_named("local");
        crate::link();
        let mut registry = Registry::compiled().unwrap();
        let e = register_files(&mut registry, &[path])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "executor `local` is registered twice: by fruix-executors (built-in) and by"
            ) && e.contains("executors.scm:15 (external)"),
            "{e}"
        );
    }

    #[test]
    fn a_file_named_twice_is_read_once() {
        let (dir, path) = full_file_with_second_named("other");
        let link = dir.path().join("link.scm");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let mut registry = Registry::default();
        register_files(&mut registry, &[path.clone(), link, path]).unwrap();
        assert!(registry.get("other").is_ok());
    }
}
