//! Helpers shared by the end-to-end tests.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fruix_core::testing::write_sample_result_root;

use crate::sshd::Sshd;

/// Panics with a clear message when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("this test needs `{tool}` (Debian package {package}); install it, or run scripts/test.sh, which installs every tool the tests use")
    })
}

/// A `fruix` command, run from a scratch directory under the target
/// directory (so that the `./result` links of builds and promotions land
/// there, not in the source tree; a test that cares sets its own), with
/// the default store and state directory there too.
pub fn fruix() -> Command {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fruix-cwd");
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fruix"));
    // Never the machine's own store and state directory: a command a test
    // runs without --store or --state-dir uses these (tests of the defaults
    // remove them).
    cmd.current_dir(&scratch)
        .env("FRUIX_STORE", scratch.join("default-store"))
        .env("FRUIX_STATE_DIR", scratch.join("default-state"));
    cmd
}

/// The miniature FreeBSD source tree.
pub fn fixture_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/freebsd-src-mini")
        .canonicalize()
        .expect("tests/fixtures/freebsd-src-mini exists")
}

/// [`store_and_state`], the state directory made: a collection refuses one
/// that is not there.
pub fn made_state(dir: &Path) -> [OsString; 4] {
    std::fs::create_dir_all(dir.join("state")).expect("a state directory");
    store_and_state(dir)
}

/// `--store DIR/store --state-dir DIR/state`: the store and state directory
/// of a test's runs, both in `dir` (neither made: see [`made_state`]).
pub fn store_and_state(dir: &Path) -> [OsString; 4] {
    [
        "--store".into(),
        dir.join("store").into(),
        "--state-dir".into(),
        dir.join("state").into(),
    ]
}

/// The tests' fixed SOURCE_DATE_EPOCH and `-DNO_ROOT`, as `build` flags.
pub const FIXTURE_BUILD_FLAGS: [&str; 3] =
    ["--source-date-epoch", "1775420084", "--make-flag=-DNO_ROOT"];

/// `cmd` (`fruix`, with any global options) `build --executor EXECUTOR` of
/// the miniature tree, with the store `store` and the state directory
/// `state`.
pub fn fixture_build_into(mut cmd: Command, executor: &str, store: &Path, state: &Path) -> Command {
    cmd.args(["build", "--executor", executor, "--source"])
        .arg(fixture_source())
        .arg("--store")
        .arg(store)
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// [`fixture_build_into`] the store and state directory of
/// [`store_and_state`], with result root `name` in `dir`, and the
/// [`FIXTURE_BUILD_FLAGS`].
pub fn fixture_build(cmd: Command, executor: &str, dir: &Path, name: &str) -> Command {
    let mut cmd = fixture_build_into(cmd, executor, &dir.join("store"), &dir.join("state"));
    cmd.arg("--result-root")
        .arg(dir.join(name))
        .args(FIXTURE_BUILD_FLAGS);
    cmd
}

/// `fruix source add FLAGS --store STORE` of the miniature tree.
pub fn source_add(store: &Path, flags: &[&str]) -> Command {
    let mut cmd = on_store(&["source", "add"], flags, store);
    cmd.arg(fixture_source());
    cmd
}

/// `fruix WORDS FLAGS --store STORE`; the caller adds the operands.
pub fn on_store(words: &[&str], flags: &[&str], store: &Path) -> Command {
    let mut cmd = fruix();
    cmd.args(words).args(flags).arg("--store").arg(store);
    cmd
}

/// `fruix store export FLAGS --store STORE --output ARCHIVE OBJECT`.
pub fn store_export(
    store: &Path,
    archive: &Path,
    flags: &[&str],
    object: impl AsRef<OsStr>,
) -> Command {
    let mut cmd = on_store(&["store", "export"], flags, store);
    cmd.arg("--output").arg(archive).arg(object);
    cmd
}

/// `fruix store generate-key --name NAME --secret-key SECRET --public-key
/// PUBLIC`.
pub fn generate_key(name: &str, secret: &Path, public: &Path) -> Command {
    let mut cmd = fruix();
    cmd.args(["store", "generate-key", "--name", name, "--secret-key"])
        .arg(secret)
        .arg("--public-key")
        .arg(public);
    cmd
}

/// `fruix store copy FLAGS DIRECTION` (`--to` or `--from`) `sshd`'s guest,
/// whose store `remote_store` `remote_program` serves there, `--store
/// STORE`; the caller adds the objects.
pub fn ssh_store_copy(
    sshd: &Sshd,
    flags: &[&str],
    direction: &str,
    remote_program: &Path,
    remote_store: &Path,
    store: &Path,
) -> Command {
    let mut cmd = fruix();
    cmd.args(["store", "copy"])
        .args(flags)
        .arg(direction)
        .arg(format!("ssh://{}", sshd.guest()))
        .arg("--identity")
        .arg(sshd.identity())
        .arg("--known-hosts")
        .arg(sshd.known_hosts())
        .arg("--remote-program")
        .arg(remote_program)
        .arg("--remote-store")
        .arg(remote_store)
        .arg("--store")
        .arg(store);
    cmd
}

/// `fruix store import --store STORE FLAGS ARCHIVE`.
pub fn store_import(store: &Path, archive: &Path, flags: &[&str]) -> Command {
    let mut cmd = fruix();
    cmd.args(["store", "import", "--store"])
        .arg(store)
        .args(flags)
        .arg(archive);
    cmd
}

/// `fruix native-build promote OPTIONS --store STORE ROOT`.
pub fn promote_command(store: &Path, root: &Path, options: &[&str]) -> Command {
    promote_with_paths(store, &[], root, options)
}

/// `fruix native-build promote OPTIONS --store STORE --state-dir STATE
/// --out-link LINK ROOT`.
pub fn promote_linked(
    store: &Path,
    state: &Path,
    link: &Path,
    root: &Path,
    options: &[&str],
) -> Command {
    let paths = [("--state-dir", state), ("--out-link", link)];
    promote_with_paths(store, &paths, root, options)
}

/// [`promote_linked`] with `--quiet`, which must succeed; returns its
/// stdout.
pub fn promote_linked_quietly(store: &Path, state: &Path, link: &Path, root: &Path) -> String {
    run_ok(&mut promote_linked(store, state, link, root, &["--quiet"]))
}

/// `fruix native-build promote OPTIONS --store STORE`, each of `paths` (an
/// option and its path), then `ROOT`.
fn promote_with_paths(
    store: &Path,
    paths: &[(&str, &Path)],
    root: &Path,
    options: &[&str],
) -> Command {
    let mut cmd = on_store(&["native-build", "promote"], options, store);
    for (option, path) in paths {
        cmd.arg(option).arg(path);
    }
    cmd.arg(root);
    cmd
}

/// Promotes `root` into `store` with `--json --no-out-link` and `options`,
/// which must succeed; returns its JSON report.
pub fn promote_report(store: &Path, root: &Path, options: &[&str]) -> serde_json::Value {
    let options = [&["--json", "--no-out-link"], options].concat();
    run_json(&mut promote_command(store, root, &options))
}

/// Promotes `root` into `store` with `--quiet --no-out-link`, which must
/// succeed.
pub fn promote_quietly(store: &Path, root: &Path) {
    run_ok(&mut promote_command(
        store,
        root,
        &["--quiet", "--no-out-link"],
    ));
}

/// Writes the sample result root of `fruix_core::testing` (executor
/// guest-self-hosted, signed) at `dir/name`.
pub fn sample_root(dir: &Path, name: &str) -> PathBuf {
    sample_root_of(dir, name, "guest-self-hosted")
}

/// [`sample_root`] with the executor `executor`.
pub fn sample_root_of(dir: &Path, name: &str, executor: &str) -> PathBuf {
    let root = dir.join(name);
    write_sample_result_root(&root, executor, "20260405T213444Z", true).unwrap();
    root
}

/// `cmd` run through `program` with `args` before it (`timeout 600`,
/// `sh -c SCRIPT sh`): its program and arguments after them, its working
/// directory and environment carried over.
pub fn run_through(program: impl AsRef<std::ffi::OsStr>, args: &[&str], cmd: &Command) -> Command {
    let mut wrapped = Command::new(program);
    wrapped
        .args(args)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(cwd) = cmd.get_current_dir() {
        wrapped.current_dir(cwd);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// Runs `fruix store verify --quiet` on `store`, which must pass.
pub fn verify_store(store: &Path) {
    run_ok(
        fruix()
            .args(["store", "verify", "--quiet", "--store"])
            .arg(store),
    );
}

/// The names of the objects in `store` (the entries whose names do not
/// start with `.`), sorted.
pub fn object_names(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Runs `cmd` to completion, killing it and failing when it outlives
/// `deadline`: a command that hangs fails its test instead of blocking
/// the suite.
pub fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    wait_with_deadline(child, deadline, &format!("{cmd:?}"))
}

/// Waits for `child` (`what`, for the message), stopping it and failing
/// when it outlives `deadline`: SIGTERM first, so that fruix stops what it
/// started (a build's make), then SIGKILL if it has not ended 30 s later.
pub fn wait_with_deadline(child: Child, deadline: Duration, what: &str) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(deadline) {
        Ok(output) => output.expect("waiting for fruix"),
        Err(_) => {
            // SAFETY: `pid` is our child, not yet reaped (the waiting
            // thread has not returned).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if rx.recv_timeout(Duration::from_secs(30)).is_err() {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            panic!("{what} did not finish within {deadline:?}: it hangs");
        }
    }
}

/// Checks that `out` failed with exit status `status` and that its stderr
/// holds each of `expected`; returns stderr. `what` names the case.
pub fn failed_with(what: &str, out: &Output, status: i32, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(status),
        "{what}: expected exit status {status}, got {}: {stderr}",
        out.status
    );
    for e in expected {
        assert!(
            stderr.contains(e),
            "{what}: stderr should contain {e:?}: {stderr}"
        );
    }
    stderr
}

/// Runs `cmd` and expects it to fail with exit status `status` and each of
/// `expected` in its stderr ([`failed_with`]); returns stderr.
pub fn run_failing(cmd: &mut Command, status: i32, expected: &[&str]) -> String {
    failed_with(&format!("{cmd:?}"), &run(cmd), status, expected)
}

/// Promotes `root` into `store` and checks that it is refused as invalid
/// input: exit status 4 within a minute (a hang fails the test), each of
/// `expected` in stderr, and no summary on stdout. Returns stderr.
pub fn promote_refused(what: &str, store: &Path, root: &Path, expected: &[&str]) -> String {
    let mut promote = promote_command(store, root, &["--quiet"]);
    let out = run_with_deadline(&mut promote, Duration::from_secs(60));
    let stderr = failed_with(what, &out, 4, expected);
    assert!(out.stdout.is_empty(), "{what}: no summary on failure");
    stderr
}

/// A temporary directory with a store already holding the objects of
/// [`sample_root`], which a refused promotion must leave as it was.
pub struct PopulatedStore {
    pub dir: tempfile::TempDir,
    store: PathBuf,
    before: Vec<String>,
}

impl PopulatedStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let good = sample_root(dir.path(), "good");
        run_ok(&mut promote_command(&store, &good, &["--quiet"]));
        let before = snapshot(&store);
        PopulatedStore { dir, store, before }
    }

    /// A new [`sample_root`] named `name`.
    pub fn sample(&self, name: &str) -> PathBuf {
        sample_root(self.dir.path(), name)
    }

    /// Checks that promoting `root` is [`promote_refused`] and leaves the
    /// store unchanged; returns stderr.
    pub fn refuses(&self, what: &str, root: &Path, expected: &[&str]) -> String {
        let stderr = promote_refused(what, &self.store, root, expected);
        assert_eq!(snapshot(&self.store), self.before, "{what}: store changed");
        stderr
    }

    /// Checks that promoting a new [`sample_root`] named `name`, changed by
    /// `change`, is refused as [`PopulatedStore::refuses`] says; returns
    /// stderr.
    pub fn refuses_changed(
        &self,
        what: &str,
        name: &str,
        change: impl FnOnce(&Path),
        expected: &[&str],
    ) -> String {
        let root = self.sample(name);
        change(&root);
        self.refuses(what, &root, expected)
    }
}

/// The `key` string of each element of the JSON array `array`.
pub fn strings_of<'a>(array: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .map(|e| {
            e[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key} in {e}"))
        })
        .collect()
}

/// Runs `cmd`, returning its output; panics when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Starts `cmd` with its stdout and stderr going nowhere.
pub fn spawn_silenced(cmd: &mut Command) -> Child {
    spawn_with(cmd, Stdio::null)
}

/// Starts `cmd` with its stdout and stderr piped.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    spawn_with(cmd, Stdio::piped)
}

/// Starts `cmd` with its stdin, stdout and stderr piped; returns it and
/// its stdin, to write to.
pub fn spawn_writing_stdin(cmd: &mut Command) -> (Child, ChildStdin) {
    let mut child = spawn_piped(cmd.stdin(Stdio::piped()));
    let stdin = child.stdin.take().expect("stdin is piped");
    (child, stdin)
}

fn spawn_with(cmd: &mut Command, output: fn() -> Stdio) -> Child {
    cmd.stdout(output())
        .stderr(output())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Runs `cmd`, which must succeed and print one JSON value; returns it.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = run_ok(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd:?} printed no JSON ({e}): {out}"))
}

/// Checks that `out` failed with exit status `status` and that the JSON
/// error on its stdout has a message holding `says`.
pub fn json_error(out: &Output, status: i32, says: &str) {
    assert_eq!(out.status.code(), Some(status), "{out:?}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains(says),
        "{error:#}"
    );
}

/// The element of the JSON array `array` whose `key` is `value`.
pub fn element_with<'a>(
    array: &'a serde_json::Value,
    key: &str,
    value: &str,
) -> &'a serde_json::Value {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no element with {key} {value:?} in {array:#}"))
}

/// Runs `cmd` and expects success, returning stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("fruix prints UTF-8")
}

/// Parses `key=value` lines.
pub fn key_values(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every path under `dir` with its type, mode and size, sorted: a snapshot to
/// prove that a failed command changed nothing. A store's locks, its registry and its
/// (empty) pool directory are left out: opening a store creates them.
pub fn snapshot(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let m = e.path().symlink_metadata().unwrap();
            // Opening a store creates its locks and its registry (whose
            // files SQLite creates and removes as it works); a build adds
            // its source object before it starts.
            let name = e.file_name().to_string_lossy().into_owned();
            if [".locks", ".lock", ".fruix"].contains(&name.as_str())
                || name
                    .get(40..)
                    .is_some_and(|r| r.starts_with("-freebsd-source-"))
            {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
            // An empty store has its pool directory: only pool entries count.
            if e.file_name() == ".links" {
                continue;
            }
            out.push(format!("{} {:o} {}", e.path().display(), m.mode(), m.len()));
        }
    }
    out.sort();
    out
}

pub use fruix_core::testing::wait_until;

/// Whether the store at `store` holds nothing promoted: no artifact object
/// and no bundle (a local build adds its source object before it runs, so
/// a failed build may leave that).
pub fn nothing_promoted(store: &Path) -> bool {
    !store.exists()
        || std::fs::read_dir(store).unwrap().flatten().all(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with('.')
                || name
                    .get(40..)
                    .is_some_and(|r| r.starts_with("-freebsd-source-"))
        })
}

/// A small tmpfs, unmounted on drop: a disk that fills up.
pub struct SmallFilesystem {
    pub path: PathBuf,
}

impl SmallFilesystem {
    /// A tmpfs of `size` (as tmpfs's `size=` takes it) at `path`.
    pub fn mount(path: PathBuf, size: &str) -> Self {
        Self::mount_with_options(path, &format!("size={size}"))
    }

    /// A tmpfs mounted at `path` with the tmpfs options `options`
    /// (`size=1m,nr_inodes=8`, say).
    pub fn mount_with_options(path: PathBuf, options: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&path));
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it and needs root (run scripts/test.sh as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFilesystem { path }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Runs `scripts/SCRIPT DIR` (a script that makes what some tests need in
/// `DIR`, below the workspace, and returns at once when it is there) and
/// returns `DIR`'s path. Callers keep the result in a `OnceLock`.
pub fn prepared(script: &str, dir: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join(dir);
    let status = Command::new("bash")
        .arg(root.join("scripts").join(script))
        .arg(&dir)
        .status()
        .unwrap_or_else(|e| panic!("bash cannot run scripts/{script}: {e}"));
    assert!(status.success(), "scripts/{script} failed");
    dir
}

/// Everything under `dir`, to prove a refused command created nothing.
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// A command started by [`spawn_reading_stderr`]: its stderr lines, and
/// the process, stopped (SIGTERM, then SIGKILL 30 s later) and reaped if
/// the test ends without [`Reading::finish`], as a failing one does: a
/// failed test leaves no fruix (nor what it started) running.
pub struct Reading {
    child: Option<Child>,
    /// Its stderr lines, as they are written.
    pub lines: mpsc::Receiver<String>,
}

impl Reading {
    /// The process.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("not finished")
    }

    /// Sends `signal` to the process.
    pub fn signal(&mut self, signal: libc::c_int) {
        let pid = self.child().id() as libc::pid_t;
        // SAFETY: signalling our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// [`wait_for_line`] on its stderr.
    pub fn wait_for_line(&self, says: &str) -> String {
        wait_for_line(&self.lines, says)
    }

    /// Waits for the process to end ([`wait_with_deadline`]).
    pub fn finish(mut self, deadline: Duration, what: &str) -> Output {
        let child = self.child.take().expect("not finished");
        wait_with_deadline(child, deadline, what)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait()));
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            // SAFETY: as above (the waiting thread has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv();
        }
    }
}

/// A new directory every user may enter (mode 0755), for a test of what
/// root does with another user's files, which must run as root: `does`
/// says what it does ("adds another user's tree").
pub fn dir_for_root_and_others(does: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        rustix::process::geteuid().is_root(),
        "this test {does} as root (run scripts/test.sh as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Root's private file `dir/secret` (mode 0600) holding `text`, hard linked
/// at `link` (as FreeBSD lets any user link another's file by default).
/// Returns the secret's path.
pub fn root_secret_linked_at(dir: &Path, text: &str, link: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("secret");
    std::fs::write(&secret, text).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&secret, link).unwrap();
    secret
}

/// Kills (by process id) what is left of a build whose every process
/// mentions `mark`, when a test fails before the build was stopped: a
/// failing test leaves nothing running.
pub struct Leftovers(pub PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for found in fruix_core::testing::conformance::processes_mentioning(&self.0) {
            if let Some(pid) = found.split(':').next().and_then(|p| p.parse().ok()) {
                // SAFETY: a process of this test's build, found by its
                // unique mark.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Starts a local build of the miniature tree into `dir/root` (one job,
/// with `extra` arguments), holding in its make (`HOLD_BUILD=yes`) once it
/// runs, then cancels it by `signal`: it must say `says` and exit 130
/// within two minutes. Returns the line saying `says` and the build's
/// output, with what kills what is left of the build (every make step's
/// command line holds `dir/make-holds`) when it is dropped: keep it until
/// the test has looked at what is left.
pub fn held_local_build_cancelled(
    dir: &Path,
    extra: &[&str],
    signal: libc::c_int,
    says: &str,
) -> (Leftovers, String, Output) {
    require_tool("bmake", "bmake");
    let mark = dir.join("make-holds");
    let leftovers = Leftovers(mark.clone());
    let mut cmd = fixture_build(fruix(), "local", dir, "root");
    cmd.args(["--jobs", "1", "--make-flag=HOLD_BUILD=yes"])
        .arg(format!("--make-flag=HOLD_MARK={}", mark.display()))
        .args(extra);
    let mut build = spawn_reading_stderr(&mut cmd);
    wait_until("make runs", || mark.exists());
    build.signal(signal);
    let said = build.wait_for_line(says);
    let out = build.finish(Duration::from_secs(120), "the interrupted build");
    assert_eq!(out.status.code(), Some(130), "{said}\n{out:?}");
    (leftovers, said, out)
}

/// Starts `cmd` with its stderr read a line at a time: the lines come on
/// [`Reading::lines`] as they are written.
pub fn spawn_reading_stderr(cmd: &mut Command) -> Reading {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Reading {
        child: Some(child),
        lines: rx,
    }
}

/// Waits for a line of `lines` holding `says`; fails if none comes before
/// the writer ends (or in a minute).
pub fn wait_for_line(lines: &mpsc::Receiver<String>, says: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(says) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line saying {says:?} ({e}) in:\n{}", seen.join("\n")),
        }
    }
}

/// Runs `cmd` with its standard output on `/dev/full`.
pub fn into_full_disk(cmd: &mut Command) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    cmd.stdout(full).output().unwrap()
}

/// What `store verify --json` found corrupt: the objects, and the pool
/// entries.
pub fn corrupt_counts(report: &serde_json::Value) -> (u64, usize) {
    let pool = report["pool"]["corrupt"].as_array().map_or(0, Vec::len);
    (report["corrupt"].as_u64().unwrap_or(u64::MAX), pool)
}

/// Holds the collector's lock of `store` exclusively, as `store gc` does,
/// until dropped: promotions, imports and exports wait for it, saying so.
pub fn hold_gc_lock(store: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(store.join(".fruix/gc.lock"))
        .unwrap();
    // SAFETY: a valid descriptor, owned by `file`.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    file
}

/// A store at `dir/store` holding the objects of the sample result root
/// `dir/root` (no root keeps them), and the promotion's JSON report.
pub fn promoted_store(dir: &Path) -> (PathBuf, serde_json::Value) {
    let (store, _, report) = promoted_sample(dir);
    (store, report)
}

/// [`promoted_store`], with the sample result root's path too, to promote
/// it again: the store, the root, and the promotion's JSON report.
pub fn promoted_sample(dir: &Path) -> (PathBuf, PathBuf, serde_json::Value) {
    let store = dir.join("store");
    let root = sample_root(dir, "root");
    let report = promote_report(&store, &root, &[]);
    (store, root, report)
}

/// Runs `store generate-key --name NAME` into a new directory, which must
/// be refused (exit 2, each of `expected` in stderr) leaving no key file
/// there; returns stderr.
pub fn key_name_refused(name: &str, expected: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = (dir.path().join("k.sec"), dir.path().join("k.pub"));
    let stderr = run_failing(&mut generate_key(name, &secret, &public), 2, expected);
    assert!(
        !secret.exists() && !public.exists(),
        "{name:?}: a key file made"
    );
    stderr
}

/// `fruix store verify FLAGS --store STORE`.
pub fn store_verify(store: &Path, flags: &[&str]) -> Command {
    on_store(&["store", "verify"], flags, store)
}

/// The fruix binary, for a test that runs it as another user: it must be
/// reachable by every user (each directory above it searchable by others,
/// itself executable by them), as the build's own target directory is
/// under a checkout made with the usual umask. Never a copy: a copy being
/// written while another test forks is busy (`ETXTBSY`) when run.
pub fn fruix_for_others() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = Path::new(env!("CARGO_BIN_EXE_fruix"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
    let unreachable: Vec<&Path> = bin
        .ancestors()
        .skip(1)
        .filter(|dir| !dir.as_os_str().is_empty() && mode(dir) & 0o001 == 0)
        .collect();
    assert!(
        unreachable.is_empty() && mode(bin) & 0o001 != 0,
        "this test runs {} as another user, who cannot reach it past {unreachable:?}: build in a target directory other users can enter",
        bin.display()
    );
    bin.to_path_buf()
}

/// The unprivileged user tests run fruix as (`nobody`).
pub const NOBODY: u32 = 65534;

/// A fruix command run as [`NOBODY`] in `dir`, with nothing of this
/// process's environment but `PATH`.
pub fn as_nobody(dir: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(fruix_for_others());
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .uid(NOBODY)
        .gid(NOBODY);
    cmd
}

/// `fruix native-build promote --quiet --no-out-link` of `root` into
/// `store`, run as [`NOBODY`] in `dir` ([`as_nobody`]).
pub fn promote_as_nobody(dir: &Path, store: &Path, root: &Path) -> Output {
    run(as_nobody(dir)
        .args([
            "native-build",
            "promote",
            "--quiet",
            "--no-out-link",
            "--store",
        ])
        .arg(store)
        .arg(root))
}

/// `out`'s stderr, after checking that it exited with `status`.
pub fn stderr_of_exit(out: &Output, status: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(status), "{stderr}");
    stderr
}
