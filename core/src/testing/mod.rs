//! Test support for executors and the promotion pipeline (feature `testing`).
//!
//! [`write_sample_result_root`] writes a small but realistic normalized result
//! root (the four base artifacts, a setuid file, absolute and relative
//! symlinks, exec bits) so that tests of promotion and import do not need a
//! build.
//!
//! [`TestDir`] is a test's temporary directory for such roots, a store and
//! other files; [`edit_header`] rewrites an object's header in a store
//! archive, to make bad archives. [`fn_executor`] is an executor whose runs
//! call a function, for tests of what runs executors.
//!
//! [`conformance`] is the executor contract suite every executor runs
//! against itself. [`panicking`] registers an executor whose build panics.

mod archive;
pub mod conformance;
pub mod panicking;

pub use archive::{edit_header, find_bytes, object_at, raw_archive, RawEntry};

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::manifest::tree_signature;
use crate::promotion::{
    ArtifactEntry, BuildPolicy, FreebsdBase, PromotionMetadata, SourceStore, BASE_ARTIFACTS,
};

/// The strings of the JSON array `value`, sorted; panics when `value` is
/// not an array of strings.
pub fn sorted_strings(value: &serde_json::Value) -> Vec<String> {
    let mut strings: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .into()
        })
        .collect();
    strings.sort();
    strings
}

/// Waits until `condition` holds, checking it again every few milliseconds,
/// and fails the test naming `what` after a minute. A bound on a condition,
/// never a delay: the test goes on as soon as the condition holds.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A `newvers.sh` of version 99.9 in `DIR/outside/conf`, outside any
/// source tree, and the two ways a tree may symlink to it: its `sys`
/// linked to `outside`, or its `sys/conf` linked to `outside/conf`
/// (link, target). Neither may give a tree that version.
pub fn newvers_outside(dir: &Path) -> [(&'static str, PathBuf); 2] {
    let outside = dir.join("outside");
    fs::create_dir_all(outside.join("conf")).unwrap();
    let newvers = "REVISION=\"99.9\"\nBRANCH=\"STABLE\"\n";
    fs::write(outside.join("conf/newvers.sh"), newvers).unwrap();
    [("sys", outside.clone()), ("sys/conf", outside.join("conf"))]
}

/// The names in `dir`, sorted. Panics when `dir` cannot be read.
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The entries of `dir` whose names start with `prefix` (temporaries a
/// failure must not leave behind), sorted; none when `dir` does not exist.
/// Panics when `dir` cannot be read otherwise.
pub fn entries_starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    let mut found: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())))
        .filter(|e| {
            e.file_name()
                .as_encoded_bytes()
                .starts_with(prefix.as_bytes())
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// A temporary directory for one test, removed when dropped: where it
/// writes sample result roots ([`TestDir::root`]) and other files, and keeps
/// a store ([`TestDir::store`]).
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDir {
    /// A new, empty temporary directory; panics if none can be made.
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the directory (which need not exist).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store's directory, `store` in the directory.
    pub fn store(&self) -> PathBuf {
        self.join("store")
    }

    /// Writes the sample result root `name` by `executor`, run `run_id`
    /// ([`write_sample_result_root`], with tree signatures when `sign` is
    /// true) and returns its path; panics on failure.
    pub fn root(&self, name: &str, executor: &str, run_id: &str, sign: bool) -> PathBuf {
        let root = self.join(name);
        write_sample_result_root(&root, executor, run_id, sign).expect("a sample result root");
        root
    }

    /// Writes `content` to the file `name` in the directory and returns its
    /// path; panics on failure.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, content).expect("a file in the test directory");
        path
    }
}

/// A well-formed ed25519 public key, as known_hosts writes it, that no
/// test's guest or sshd holds (made once with ssh-keygen, its secret key
/// thrown away): what a fixture pins where a key must be read but is never
/// matched against a server.
pub const PINNED_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFUOoRX4j9il/gNQNi5YLDOpS08JHT29RaMjx4+UnYud";

/// A second such key, not [`PINNED_HOST_KEY`]: what a fixture pins for an
/// XCP-ng pool master (`master-host-key`), so the master's pin and the
/// guest's are told apart.
pub const PINNED_MASTER_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJK3cCEXdLs6qcLXBUYSfudgcpsY7NtKiECj6/R72gYS";

/// The make steps of a build of the four base artifacts, in the order they
/// run, each logged to `logs/STEP.log`.
pub const BASE_STEPS: [&str; 5] = [
    "buildworld",
    "buildkernel",
    "installworld",
    "distribution",
    "installkernel",
];

/// The warnings among a run's `events`, in order.
pub fn warnings(events: &[crate::executor::Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            crate::executor::Event::Warning { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

/// The build request of [`sample_metadata`] (executor `executor`, run
/// `20260405T213444Z`) for `artifacts`.
pub fn sample_request(executor: &str, artifacts: Vec<String>) -> crate::executor::BuildRequest {
    let m = sample_metadata(executor, "20260405T213444Z");
    crate::executor::BuildRequest {
        run_id: m.run_id,
        freebsd_base: m.freebsd_base,
        source: m.source_store,
        source_dir: None,
        policy: m.build_policy,
        jobs_per_machine: false,
        artifacts,
    }
}

/// The metadata of [`write_sample_result_root`] (without signatures).
pub fn sample_metadata(executor: &str, run_id: &str) -> PromotionMetadata {
    PromotionMetadata {
        executor: executor.into(),
        executor_version: "0.1.0".into(),
        run_id: run_id.into(),
        guest_host_name: "builder-1".into(),
        closure_path: None,
        development_profile_path: None,
        freebsd_base: FreebsdBase {
            name: "FreeBSD".into(),
            version: "15.0-STABLE".into(),
            branch: "stable/15".into(),
            target: "amd64".into(),
            target_arch: "amd64".into(),
        },
        source_store: SourceStore {
            tree_signature: None,
            path: "/frx/store/12d7704362e95afc2697db63f168b878e082b372-freebsd-source-default"
                .into(),
            commit: None,
        },
        build_policy: BuildPolicy {
            jobs: 2,
            kernconf: "GENERIC".into(),
            make_flags: vec!["-DNO_ROOT".into()],
            source_date_epoch: Some(1_775_420_084),
        },
        artifacts: BASE_ARTIFACTS
            .iter()
            .map(|(name, probes)| ArtifactEntry {
                name: name.to_string(),
                path: format!("artifacts/{name}"),
                probe: probes[0].to_string(),
                tree_signature: None,
            })
            .collect(),
    }
}

/// An executors file (`fruix-executors`) declaring one remote external
/// executor `name` that runs `command` (timing out after `timeout_s`
/// seconds), configured by the machines file and the machine a matrix or
/// `fruix build --machine` passes it: the fixture of tests and benchmarks
/// that schedule builds on machines without building.
pub fn remote_executor_file(
    name: &str,
    description: &str,
    command: &str,
    timeout_s: u32,
) -> String {
    format!(
        r#"(fruix-executors
  (format-version 1)
  (executor
    (name "{name}")
    (version "1.0.0")
    (description "{description}")
    (remote #t)
    (config-key (name "machines") (description "the machines file"))
    (config-key (name "machine") (description "the machine"))
    (build (command "{command}") (timeout {timeout_s}))))
"#
    )
}

/// Writes each `(path, content, mode)` of `files` below `root`, in order,
/// creating parent directories.
pub fn write_files(root: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    for (path, content, mode) in files {
        file(root, path, content, *mode)?;
    }
    Ok(())
}

/// Sets the access and modification times of `root` and of everything
/// below it (symlinks themselves, not their targets) to `seconds` after the
/// epoch.
pub fn set_times(root: &Path, seconds: i64) -> Result<()> {
    let time = rustix::fs::Timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry
            .map_err(std::io::Error::from)
            .with_path("walk", root)?;
        let path = entry.path();
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)
        .with_path("set the times of", path)?;
    }
    Ok(())
}

/// Makes a FIFO (mode 0644) at `path`: a special file fruix must refuse
/// without blocking on it.
pub fn mkfifo(path: &Path) -> Result<()> {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from(0o644))
        .map_err(std::io::Error::from)
        .with_path("make a FIFO at", path)
}

fn file(root: &Path, path: &str, content: &[u8], mode: u32) -> Result<()> {
    let p = root.join(path);
    let parent = p.parent().expect("file paths have a parent");
    fs::create_dir_all(parent).with_path("create", parent)?;
    fs::write(&p, content).with_path("write", &p)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).with_path("chmod", &p)
}

/// The field, line and message of an [`Error::InvalidMetadata`](crate::Error::InvalidMetadata);
/// panics on any other outcome.
pub fn invalid_metadata<T: std::fmt::Debug>(result: Result<T>) -> (String, Option<usize>, String) {
    match result {
        Err(crate::Error::InvalidMetadata {
            field,
            line,
            message,
            ..
        }) => (field, line, message),
        other => panic!("expected InvalidMetadata, got {other:?}"),
    }
}

/// One mistake in a metadata file: `(replace, with, field, line, message)`.
/// Replacing `replace` with `with` in a valid text must make the reader
/// refuse it as [`Error::InvalidMetadata`](crate::Error::InvalidMetadata)
/// naming `field` on `line`, with `message` in its message.
pub type Mistake<'a> = (&'a str, &'a str, &'a str, usize, &'a str);

/// Checks that `read` refuses each of `mistakes` made in `valid` as the
/// mistake says.
pub fn assert_mistakes_refused<T: std::fmt::Debug>(
    valid: &str,
    read: impl Fn(&str) -> Result<T>,
    mistakes: &[Mistake<'_>],
) {
    for (replace, with, field, line, message) in mistakes {
        let text = valid.replace(replace, with);
        assert_ne!(text, valid, "the valid text holds {replace:?}");
        let (got_field, got_line, got) = invalid_metadata(read(&text));
        assert_eq!(
            (got_field.as_str(), got_line),
            (*field, Some(*line)),
            "{with:?}: {got}"
        );
        assert!(got.contains(message), "{with:?}: {got}");
    }
}

/// A request to build the four base artifacts of the source tree at `source`
/// (the miniature FreeBSD tree in fruix's own tests) with `make_flags`, in
/// the shape of [`sample_metadata`].
pub fn fixture_request(source: &Path, make_flags: &[&str]) -> crate::executor::BuildRequest {
    let m = sample_metadata("fixture", "20260405T213444Z");
    crate::executor::BuildRequest {
        source_dir: None,
        run_id: m.run_id,
        freebsd_base: m.freebsd_base,
        source: SourceStore {
            tree_signature: None,
            path: source.to_string_lossy().into_owned(),
            commit: None,
        },
        policy: BuildPolicy {
            make_flags: make_flags.iter().map(|f| f.to_string()).collect(),
            ..m.build_policy
        },
        jobs_per_machine: false,
        artifacts: crate::executor::base_artifacts(),
    }
}

/// A context for running `request` into `result_root`, sending events to
/// `events`, not cancelled.
pub fn run_context(
    request: crate::executor::BuildRequest,
    result_root: &Path,
    events: crate::executor::EventSink,
) -> crate::executor::RunContext {
    crate::executor::RunContext {
        request,
        result_root: result_root.to_path_buf(),
        events,
        cancel: Default::default(),
    }
}

/// Runs `executor` on `request` into `result_root` under `limits`, its
/// events discarded, never cancelled but by a limit.
pub async fn run_limited(
    executor: std::sync::Arc<dyn crate::executor::Executor>,
    request: crate::executor::BuildRequest,
    result_root: &Path,
    limits: crate::executor::RunLimits,
) -> Result<crate::result_root::ResultRoot> {
    crate::executor::run_executor_within(
        executor,
        request,
        result_root,
        crate::executor::EventSink::discard(),
        Default::default(),
        limits,
    )
    .await
}

/// Writes a valid result root at `root` (which must not exist or be empty) and
/// returns its metadata, with tree signatures when `sign` is true.
pub fn write_sample_result_root(
    root: &Path,
    executor: &str,
    run_id: &str,
    sign: bool,
) -> Result<PromotionMetadata> {
    let world = root.join("artifacts/world");
    file(&world, "bin/sh", b"\x7fELF sample shell\n", 0o555)?;
    file(&world, "usr/bin/su", b"\x7fELF sample su\n", 0o4555)?;
    file(&world, "etc/motd", b"FreeBSD 15.0-STABLE\n", 0o644)?;
    file(
        &world,
        "usr/include/sys/param.h",
        b"#define __FreeBSD_version 1500000\n",
        0o444,
    )?;
    file(&world, "boot/loader", b"loader\n", 0o555)?;
    symlink("/usr/share/zoneinfo/UTC", world.join("etc/localtime")).with_path("symlink", &world)?;
    symlink("su", world.join("usr/bin/su-link")).with_path("symlink", &world)?;
    fs::create_dir_all(world.join("var/tmp")).with_path("create", &world)?;
    fs::set_permissions(world.join("var/tmp"), fs::Permissions::from_mode(0o1777))
        .with_path("chmod", &world)?;
    let kernel = root.join("artifacts/kernel");
    file(
        &kernel,
        "boot/kernel/kernel",
        b"\x7fELF sample kernel\n",
        0o555,
    )?;
    file(&kernel, "boot/kernel/if_em.ko", b"\x7fELF module\n", 0o555)?;
    let headers = root.join("artifacts/headers");
    file(
        &headers,
        "usr/include/sys/param.h",
        b"#define __FreeBSD_version 1500000\n",
        0o444,
    )?;
    file(
        &headers,
        "usr/include/stdio.h",
        b"int printf(const char *, ...);\n",
        0o444,
    )?;
    let bootloader = root.join("artifacts/bootloader");
    file(&bootloader, "boot/loader", b"loader\n", 0o555)?;
    file(&bootloader, "boot/loader.efi", b"MZ loader.efi\n", 0o555)?;
    file(
        root,
        "logs/buildworld.log",
        b">>> World build started\n",
        0o644,
    )?;
    let mut metadata = sample_metadata(executor, run_id);
    if sign {
        for a in &mut metadata.artifacts {
            a.tree_signature = Some(tree_signature(&root.join(&a.path))?);
        }
    }
    metadata.write_to(root)?;
    Ok(metadata)
}

/// What a [`FnExecutor`]'s runs do.
type BuildFn = dyn Fn(&crate::executor::RunContext) -> Result<()> + Send + Sync;

/// A test executor: version `0`, default capabilities, each run calls its
/// function and has nothing to clean up. See [`fn_executor`].
pub struct FnExecutor {
    name: &'static str,
    build: Box<BuildFn>,
}

impl std::fmt::Debug for FnExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnExecutor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A test executor named `name` whose every run is `build`.
pub fn fn_executor(
    name: &'static str,
    build: impl Fn(&crate::executor::RunContext) -> Result<()> + Send + Sync + 'static,
) -> std::sync::Arc<dyn crate::executor::Executor> {
    std::sync::Arc::new(FnExecutor {
        name,
        build: Box::new(build),
    })
}

impl crate::executor::Executor for FnExecutor {
    fn name(&self) -> &str {
        self.name
    }

    fn version(&self) -> &str {
        "0"
    }

    fn capabilities(&self) -> crate::executor::Capabilities {
        crate::executor::Capabilities::default()
    }

    fn start(&self, _ctx: &crate::executor::RunContext) -> Box<dyn crate::executor::Run + '_> {
        Box::new(FnRun(&*self.build))
    }
}

/// One run of a [`FnExecutor`].
struct FnRun<'a>(&'a BuildFn);

#[async_trait::async_trait]
impl crate::executor::Run for FnRun<'_> {
    async fn build(&mut self, ctx: &crate::executor::RunContext) -> Result<()> {
        (self.0)(ctx)
    }

    async fn cleanup(self: Box<Self>, _ctx: &crate::executor::RunContext) -> Result<()> {
        Ok(())
    }
}
