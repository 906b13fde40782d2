//! The two guest executors: `host-initiated` (the host drives each make step
//! in the guest over SSH) and `guest-self-hosted` (the guest's own `fruix`
//! runs the build driver; the host starts it and imports the result).
//!
//! # Contract
//!
//! Both take the same configuration ([`GuestConfig`], in `config.rs`) naming the guest,
//! connect to it over SSH ([`crate::ssh`]), check that the request's source
//! store path exists there (the error names it), build into a guest result
//! root of their own in the guest's state directory, and import that result
//! root into the host's ([`crate::import`], retried up to
//! [`IMPORT_ATTEMPTS`] times on a dropped connection; a cancel ends the
//! wait before another try, and the connecting, at once). The guest result root
//! is `STATE/native-builds/RUN-ID/`, or, when another build has that name
//! (hosts sharing a guest may start builds in the same second), the first
//! free of `RUN-ID.1/`, `RUN-ID.2/`, ... up to `RUN-ID.999/`: the guest
//! takes it with `mkdir`, which is atomic, and says which it took. The guest
//! is untrusted: the host imports only a root of that shape
//! ([`GuestExecutor::check_guest_root`]). Both end with the
//! same normalized result root, and for the same source and policy the same
//! tree signatures, as the `local` executor.
//!
//! - `guest-self-hosted` first runs `HELPER --version` in the guest and
//!   refuses a missing helper, or one older than [`MIN_HELPER_VERSION`], with
//!   a message saying what to install. Then it runs
//!   `HELPER native-build self-hosted --state-dir STATE` with the request as
//!   JSON on stdin, streams its output live as stage `guest-build` (and,
//!   escaped, to the host's `logs/guest-build.log`, which a failure names),
//!   and imports the root the helper reported. A helper that says it was
//!   cancelled when the host was not is a system failure. The guest signs every artifact;
//!   the import refuses a tree whose signature does not match.
//! - `host-initiated` needs only make, cc, tar, cp and a POSIX sh in the
//!   guest. It creates the guest result root (marked unfinished) with a
//!   script that prints the name it took, and a work directory next to it
//!   (`ROOT.work`), runs the plan of `fruix-freebsd`
//!   ([`fruix_freebsd::BuildPlan`], rendered as sh by [`fruix_freebsd::sh`])
//!   step by step, each as its own stage, logged (escaped, see `log.rs`) to
//!   the host's `logs/STEP.log`, slices the install trees into `artifacts/` with the
//!   rendered slicing (the same slices as the driver's, with `tar` and
//!   `mv`), writes the guest's `promotion.scm`, clears the marker, removes
//!   the work directory, imports, then chooses the probes and computes the
//!   tree signatures on the host and writes the host's `promotion.scm`
//!   (executor `host-initiated`, the guest's host name).
//! - Cancellation stops the remote command's whole process tree
//!   ([`crate::ssh::remote`]), the import's `tar` included; cleanup removes a host-initiated work
//!   directory left in the guest and, when the run was cancelled (Ctrl-C,
//!   SIGTERM, fail-fast), the run's guest result root once the host knows
//!   it (a cancelled run's root is never imported, so nothing needs it;
//!   a failed or timed-out run's stays, for a look at what failed). A
//!   lost connection is made again, once, for a work directory, never for
//!   a cancelled run's root alone (a cancelled run ends promptly), nor
//!   when the guest stopped answering: the cleanup then fails, naming
//!   what it leaves there.
//!
//! The code follows these seams: `config.rs` (the configuration),
//! `self_hosted.rs` and `host_initiated.rs` (the two ways of running),
//! `log.rs` (the host's log of a stage run in the guest), and `in_guest.rs`
//! (the build the guest's helper runs).

mod config;
mod host_initiated;
mod in_guest;
mod log;
pub mod protocol;
mod self_hosted;
pub use self_hosted::GUEST_PROTOCOL_LINE;
mod source;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::at_exit::AtExit;
use fruix_core::executor::{BuildRequest, Capabilities, Executor, Run, RunContext, Stream};
use fruix_core::{escape, run_id, Error, Result};

pub use self::config::{
    GuestConfig, HostInitiatedConfig, ModeConfig, SelfHostedConfig, DEFAULT_HELPER,
    DEFAULT_STATE_DIR,
};
pub use self::in_guest::in_guest_build;
pub use self::self_hosted::MIN_HELPER_VERSION;
use crate::import::{self, ImportLimits, Staged};
use crate::ssh::{
    is_connection_lost, shell_quote, HostKeyPolicy, RemoteOutput, SshOptions, SshSession, SshTarget,
};

/// The executor version recorded in `promotion.scm`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How many times an import is tried when the connection drops.
pub const IMPORT_ATTEMPTS: u32 = 3;

/// How many last log lines a failed guest step reports.
const TAIL_LINES: usize = 20;

/// Which of the two guest executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `host-initiated`: the host runs each make step in the guest as POSIX
    /// sh, then signs the imported artifacts itself.
    HostInitiated,
    /// `guest-self-hosted`: the guest's own fruix runs the build driver and
    /// signs; the host checks those signatures on import.
    SelfHosted,
}

impl Mode {
    /// The registered name.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::HostInitiated => "host-initiated",
            Mode::SelfHosted => "guest-self-hosted",
        }
    }

    /// One line for `fruix executors list`.
    pub const fn description(self) -> &'static str {
        match self {
            Mode::HostInitiated => {
                "drives each make step in a guest over SSH, then imports the result root"
            }
            Mode::SelfHosted => {
                "runs fruix's build driver inside a guest (its own fruix), then imports the result root over SSH"
            }
        }
    }

    /// The shared configuration keys only the other mode uses: the helper
    /// and its signing key are the self-hosted mode's, make the
    /// host-initiated mode's.
    pub const fn foreign_keys(self) -> &'static [&'static str] {
        match self {
            Mode::HostInitiated => &["guest_helper", "guest_signing_key"],
            Mode::SelfHosted => &["make"],
        }
    }

    /// What the executor of this mode can do.
    pub fn capabilities(self) -> Capabilities {
        Capabilities {
            remote: true,
            boots_vms: false,
            signs_at_build_site: self == Mode::SelfHosted,
            cancellable: true,
            target_arches: Vec::new(),
        }
    }
}

/// Builds in a guest over SSH; see the module docs.
#[derive(Debug, Clone)]
pub struct GuestExecutor {
    mode: Mode,
    ssh: SshOptions,
    state_dir: String,
    /// Where source objects go in the guest.
    store_dir: String,
    helper: String,
    /// The secret key the helper signs the result with, in the guest.
    signing_key: Option<String>,
    make: Option<String>,
    limits: ImportLimits,
}

impl GuestExecutor {
    /// This executor, reaching its guest at `target` with its host key
    /// pinned to `host_key` (a VM fruix booted: see [`crate::vm`]).
    pub fn at(mut self, target: SshTarget, host_key: String) -> GuestExecutor {
        self.ssh.target = target;
        self.ssh.host_keys = HostKeyPolicy::Pinned(host_key);
        self
    }

    /// Where the guest result roots are: `STATE/native-builds`.
    fn guest_roots_dir(&self) -> String {
        format!("{}/native-builds", self.state_dir)
    }

    /// The guest result root `reported` (by the guest helper, or by the
    /// script that made it) if it is one of run `run_id`'s:
    /// `STATE/native-builds/RUN-ID` or `STATE/native-builds/RUN-ID.N`
    /// ([`run_id::run_dir_number`]). The guest is untrusted: any other path
    /// (another directory, `..`, a trailing `/`, another name) is a system
    /// failure, and nothing is imported from it.
    pub fn check_guest_root(&self, run_id: &str, reported: &str) -> Result<String> {
        let dir = self.guest_roots_dir();
        let name = reported
            .strip_prefix(dir.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        match name.and_then(|name| run_id::run_dir_number(name, run_id)) {
            Some(_) => Ok(reported.to_string()),
            None => Err(Error::system(format!(
                "the guest reported result root {}, which is not one of run {run_id}'s ({dir}/{run_id} or {dir}/{run_id}.N, N from 1 to {}); is the guest's fruix a matching one?",
                escape::quoted(reported),
                run_id::RUN_DIR_NAMES - 1
            ))),
        }
    }

    /// Runs a small script; a non-zero exit is a system failure saying `what`.
    async fn check(&self, session: &SshSession, what: &str, script: &str) -> Result<String> {
        let out = session.output(script, None).await?;
        checked(session, what, out)
    }

    async fn check_source(&self, session: &SshSession, request: &BuildRequest) -> Result<()> {
        let source = request.source_dir();
        let out = session
            .output(&format!("test -d {}", shell_quote(source)), None)
            .await?;
        if out.exit.success() {
            return Ok(());
        }
        // The caller's input, known before anything ran: a usage error.
        Err(Error::InvalidRequest {
            message: format!(
                "the source {} does not exist in the guest {}; give the path of a checkout the guest has with --guest-source, or a tree on this host with --source (its source object is sent)",
                escape::quoted(source),
                session.target()
            ),
        })
    }
}

/// The stdout of a small script's output `out`; a non-zero exit is a system
/// failure saying `what`.
fn checked(session: &SshSession, what: &str, out: RemoteOutput) -> Result<String> {
    if out.exit.success() {
        Ok(out.stdout_text())
    } else {
        Err(Error::system(format!(
            "cannot {what} on {} ({}): {}",
            session.target(),
            out.exit.describe(),
            escape::text(&out.stderr_text())
        )))
    }
}

/// Whether `path` is a source object on this host: named
/// `<40 hex digits>-freebsd-source-...`, holding `.fruix-source.scm`.
fn is_source_object(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.as_encoded_bytes()) else {
        return false;
    };
    name.len() > 40
        && name[..40].iter().all(|b| b.is_ascii_hexdigit())
        && name[40..].starts_with(b"-freebsd-source-")
        && path.join(".fruix-source.scm").is_file()
}

impl Executor for GuestExecutor {
    fn name(&self) -> &str {
        self.mode.name()
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn capabilities(&self) -> Capabilities {
        self.mode.capabilities()
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(GuestRun {
            executor: self,
            session: None,
            guest_work: None,
            guest_root: None,
            cancelled: false,
            source_dir: None,
            at_exit: Vec::new(),
        })
    }
}

/// One run of a guest executor; it owns what cleanup must undo.
pub(super) struct GuestRun<'a> {
    executor: &'a GuestExecutor,
    /// The connection, once made.
    session: Option<Arc<SshSession>>,
    /// A host-initiated work directory still in the guest.
    guest_work: Option<String>,
    /// The run's guest result root, once the host knows it (made by the
    /// host-initiated mode, reported by the self-hosted helper): removed
    /// by the cleanup of a cancelled run.
    guest_root: Option<String>,
    /// Whether the run ended cancelled ([`Run::ended`]).
    cancelled: bool,
    /// Where the guest has the request's source object, once delivered.
    source_dir: Option<String>,
    /// What a fast exit names as left in the guest (its result root and
    /// work directory), while the run lives.
    at_exit: Vec<AtExit>,
}

impl GuestRun<'_> {
    /// Notes `root` as the run's guest result root, made in the guest of
    /// `session`; a fast exit names it as left there.
    pub(super) fn guest_root_made(&mut self, session: &SshSession, root: &str) {
        self.guest_root = Some(root.to_string());
        let what = "the build's result root in the guest";
        self.at_exit
            .push(AtExit::left_on(what, session.target(), root));
    }

    /// Notes `work` as the run's guest work directory, made in the guest
    /// of `session`; a fast exit names it as left there.
    pub(super) fn guest_work_made(&mut self, session: &SshSession, work: &str) {
        self.guest_work = Some(work.to_string());
        let what = "the build's work directory in the guest";
        self.at_exit
            .push(AtExit::left_on(what, session.target(), work));
    }

    /// The request as the guest builds it: the source read from the
    /// guest's copy of the source object, when one was delivered.
    pub(super) fn request(&self, ctx: &RunContext) -> BuildRequest {
        let mut request = ctx.request.clone();
        if self.source_dir.is_some() {
            request.source_dir = self.source_dir.clone();
        }
        request
    }

    /// Sends the request's source object to the guest unless it has it
    /// (see [`source`]); a source that is not a source object on this host
    /// is a path in the guest, left as it is.
    async fn deliver_source(&mut self, session: &SshSession, ctx: &RunContext) -> Result<()> {
        let object = Path::new(&ctx.request.source.path);
        if !is_source_object(object) {
            return Ok(());
        }
        let store = &self.executor.store_dir;
        let (dest, delivery) = ctx
            .events
            .stage(
                "source",
                source::deliver(session, object, store, &ctx.cancel, &ctx.events),
            )
            .await?;
        let line = match delivery {
            source::Delivery::Present => format!("source {dest}: already in the guest"),
            source::Delivery::Sent(bytes) => format!("source {dest}: sent {bytes} bytes"),
        };
        ctx.events.log("source", Stream::Stdout, line);
        self.source_dir = Some(dest);
        Ok(())
    }

    /// Connects to the guest; ends at once when the run is cancelled.
    async fn connect(&mut self, ctx: &RunContext) -> Result<Arc<SshSession>> {
        let session = tokio::select! {
            connected = SshSession::connect(&self.executor.ssh, &ctx.events) => connected?,
            () = ctx.cancel.cancelled() => return Err(Error::Cancelled),
        };
        self.session = Some(session.clone());
        Ok(session)
    }

    /// Imports the guest result root `remote`, reconnecting on a dropped
    /// connection; the wait before another try, and the reconnection,
    /// end at once when the run is cancelled.
    async fn import(
        &mut self,
        mut session: Arc<SshSession>,
        ctx: &RunContext,
        remote: &str,
    ) -> Result<Staged> {
        let mut attempt = 1;
        loop {
            match import::fetch(&session, remote, ctx, &self.executor.limits).await {
                Err(e) if is_connection_lost(&e) && attempt < IMPORT_ATTEMPTS => {
                    ctx.events.warn(format!(
                        "import attempt {attempt} of {IMPORT_ATTEMPTS} failed: {e}; retrying"
                    ));
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(u64::from(attempt))) => {}
                        () = ctx.cancel.cancelled() => return Err(Error::Cancelled),
                    }
                    attempt += 1;
                    session = match self.connect(ctx).await {
                        Ok(s) => s,
                        Err(Error::Cancelled) => return Err(Error::Cancelled),
                        Err(e) if attempt < IMPORT_ATTEMPTS => {
                            ctx.events.warn(format!("cannot reconnect: {e}"));
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Run for GuestRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let session = ctx.events.stage("connect", self.connect(ctx)).await?;
        self.deliver_source(&session, ctx).await?;
        self.executor
            .check_source(&session, &self.request(ctx))
            .await?;
        match self.executor.mode {
            Mode::SelfHosted => self.run_self_hosted(session, ctx).await,
            Mode::HostInitiated => self.run_host_initiated(session, ctx).await,
        }
    }

    fn ended(&mut self, result: &Result<()>) {
        self.cancelled = matches!(result, Err(Error::Cancelled));
    }

    async fn cleanup(mut self: Box<Self>, ctx: &RunContext) -> Result<()> {
        let mut left = Vec::new();
        if let Some(work) = &self.guest_work {
            left.push(Left::WorkDir(work.clone()));
        }
        if let Some(root) = self.guest_root.as_ref().filter(|_| self.cancelled) {
            left.push(Left::ResultRoot(root.clone()));
        }
        if !left.is_empty() {
            self.remove_in_guest(&left, ctx).await?;
        }
        // What is left in the guest now is the build's (a result root
        // imported or fetched): no fast exit names it.
        self.at_exit.clear();
        if let Some(session) = self.session {
            session.disconnect().await;
        }
        Ok(())
    }
}

/// What a run's cleanup removes from the guest.
enum Left {
    /// A host-initiated work directory (`ROOT.work`).
    WorkDir(String),
    /// The guest result root of a cancelled run.
    ResultRoot(String),
}

impl Left {
    fn path(&self) -> &str {
        match self {
            Left::WorkDir(p) | Left::ResultRoot(p) => p,
        }
    }
}

/// `left`, said in a sentence, each path after `owner`'s (`its`, `the
/// guest`): `its work directory W and its result root R of the cancelled
/// build`.
fn describe(left: &[Left], owner: &str) -> String {
    let said: Vec<String> = left
        .iter()
        .map(|l| match l {
            Left::WorkDir(p) => format!("{owner} work directory {}", escape::text(p)),
            Left::ResultRoot(p) => format!(
                "{owner} result root {} of the cancelled build",
                escape::text(p)
            ),
        })
        .collect();
    said.join(" and ")
}

impl GuestRun<'_> {
    /// Removes `left` from the guest, on the run's connection (or, if it
    /// dropped, once on a new one). A guest that stopped answering is not
    /// connected to again (it would hold a new connection for its connect
    /// timeout): the error names what is left there.
    async fn remove_in_guest(&self, left: &[Left], ctx: &RunContext) -> Result<()> {
        let ssh = &self.executor.ssh;
        let session = match self.session.clone() {
            Some(s) => s,
            None => SshSession::connect(ssh, &ctx.events).await?,
        };
        let paths: Vec<String> = left.iter().map(|l| shell_quote(l.path())).collect();
        let remove = format!("rm -rf {}", paths.join(" "));
        let (is, them) = match left.len() {
            1 => ("is", "it"),
            _ => ("are", "them"),
        };
        let what = describe(left, "the guest");
        match session.output(&remove, None).await {
            Ok(out) if out.exit.success() => Ok(()),
            Err(_) if session.stopped_answering() => Err(Error::system(format!(
                "{} stopped answering, so {} {is} left; remove {them} once the guest answers again",
                session.target(),
                describe(left, "its"),
            ))),
            // The connection is gone, and only a cancelled run's result
            // root is left: a new connection could wait for the guest's
            // connect timeout, and a cancelled run ends promptly.
            Err(e)
                if crate::ssh::is_connection_lost(&e)
                    && !left.iter().any(|l| matches!(l, Left::WorkDir(_))) =>
            {
                Err(Error::system(format!(
                    "the connection to {} was lost ({e}), so {what} {is} left; remove {them} with rm -rf",
                    session.target(),
                )))
            }
            // The connection is gone: try once on a new one.
            Err(e) if crate::ssh::is_connection_lost(&e) => {
                let fresh = SshSession::connect(ssh, &ctx.events).await?;
                let removed = self
                    .executor
                    .check(&fresh, &format!("remove {what}"), &remove)
                    .await;
                fresh.disconnect().await;
                removed.map(drop)
            }
            // A timeout or a refusal would not go better a second time.
            Ok(out) => Err(Error::system(format!(
                "cannot remove {what} on {} ({}): {}",
                session.target(),
                out.exit.describe(),
                escape::text(&out.stderr_text())
            ))),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::Registry;
    use serde_json::json;

    /// Regression: the name was cut at byte 40 as text, so a path with a
    /// character of several bytes there panicked the executor.
    #[test]
    fn a_name_cut_inside_a_character_is_no_source_object() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}\u{e9}-freebsd-source-x", "a".repeat(39));
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join(".fruix-source.scm"), "").unwrap();
        assert!(!is_source_object(&path));
        let object = dir
            .path()
            .join(format!("{}-freebsd-source-x", "a".repeat(40)));
        std::fs::create_dir(&object).unwrap();
        std::fs::write(object.join(".fruix-source.scm"), "").unwrap();
        assert!(is_source_object(&object));
    }

    #[test]
    fn only_a_root_of_the_run_in_the_state_directory_is_imported() {
        let executor = GuestConfig {
            guest: Some("a@b".into()),
            guest_state_dir: Some("/srv/fruix/".into()),
            ..Default::default()
        }
        .build(Mode::HostInitiated)
        .unwrap();
        let id = "20260405T213444Z";
        for good in [
            format!("/srv/fruix/native-builds/{id}"),
            format!("/srv/fruix/native-builds/{id}.1"),
            format!("/srv/fruix/native-builds/{id}.999"),
        ] {
            assert_eq!(executor.check_guest_root(id, &good).unwrap(), good);
        }
        for bad in [
            String::new(),
            "/srv/fruix/native-builds".to_string(),
            "/srv/fruix/native-builds/".to_string(),
            format!("/srv/fruix/native-builds/{id}/"),
            format!("/srv/fruix/native-builds/{id}.0"),
            format!("/srv/fruix/native-builds/{id}.01"),
            format!("/srv/fruix/native-builds/{id}.1000"),
            format!("/srv/fruix/native-builds/{id}.1.work"),
            format!("/srv/fruix/native-builds/{id}.1/.."),
            format!("/srv/fruix/native-builds/../native-builds/{id}"),
            format!("/srv/fruix/native-builds//{id}"),
            format!("/srv/fruix/native-builds/./{id}"),
            "/srv/fruix/native-builds/20260405T213445Z".to_string(),
            format!("/srv/fruix/other/{id}"),
            format!("/srv/fruix/native-builds-x/{id}"),
            format!("/srv/other/native-builds/{id}"),
            format!("srv/fruix/native-builds/{id}"),
            format!("/srv/fruix/native-builds/{id}\n/etc"),
            format!(" /srv/fruix/native-builds/{id}"),
        ] {
            let e = executor.check_guest_root(id, &bad).unwrap_err();
            assert_eq!(e.failure(), fruix_core::Failure::System, "{bad:?}");
            assert!(
                e.to_string()
                    .contains("/srv/fruix/native-builds/20260405T213444Z.N"),
                "{e}"
            );
        }
    }

    #[test]
    fn both_are_registered_with_their_own_keys_and_capabilities() {
        let registry = Registry::compiled().unwrap();
        for (mode, own, foreign) in [
            (Mode::HostInitiated, "make", "guest_helper"),
            (Mode::SelfHosted, "guest_helper", "make"),
        ] {
            let entry = registry.get(mode.name()).unwrap();
            let has = |key: &str| entry.config_keys.iter().any(|k| k.name == key);
            assert!(
                has("guest") && has("import_max_bytes") && has(own),
                "{mode:?}"
            );
            assert!(!has(foreign), "{mode:?} lists {foreign}");
            assert_eq!(entry.capabilities, mode.capabilities());
            assert!(registry
                .create(mode.name(), json!({"guest": "a@b", foreign: "x"}))
                .unwrap_err()
                .to_string()
                .contains(&format!("`{foreign}` is not a key of {}", mode.name())));
            let e = registry
                .create(mode.name(), json!({"guest": "root@127.0.0.1:2222"}))
                .unwrap();
            assert_eq!(e.name(), mode.name());
            assert!(e.capabilities().remote);
        }
    }
}
