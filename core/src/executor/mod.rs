//! The `Executor` trait, build requests, run events, and the runner that
//! wraps every executor with the same guarantees.
//!
//! An executor is one way of running a native FreeBSD base build: on this
//! machine, in a guest over SSH, in a jail, through an external script. Every
//! executor ends with the same normalized result root (see
//! [`crate::result_root`]). Callers never call an executor directly: they call
//! [`run_executor`], which
//!
//! 1. creates the result root, private to this user, and marks it unfinished
//!    ([`crate::result_root::INCOMPLETE_MARKER`]). An empty directory already
//!    there is taken (run id allocation, [`crate::run_id::allocate_run_dir`],
//!    makes one for each run) when this user owns it; anything else is
//!    refused before anything is written: a non-empty directory, a file,
//!    another user's directory, and a symlink, which is never followed, even
//!    to an empty directory;
//! 2. starts a run ([`Executor::start`]): a handle ([`Run`]) that owns the
//!    run's state, and runs its [`Run::build`], passing cancellation through
//!    the context; [`run_executor_within`] also cancels it once one of its
//!    [`RunLimits`] passes (the run then fails as a timeout);
//! 3. always finishes it with [`Run::cleanup`], after success, failure,
//!    cancellation or a panic of the build (which is a system failure naming
//!    the executor, and where it panicked when a panic hook says so through
//!    [`panic_is_caught`]), having told the run how its build ended
//!    ([`Run::ended`]); a cleanup failure, or panic, is reported as an
//!    event, never hiding the run's result;
//! 4. validates the result root and checks that its `promotion.scm` agrees with
//!    the request and names the executor ([`check_agreement`]), and only then
//!    removes the unfinished marker.
//!
//! So what reaches the caller is a result root that passed the validator, and a
//! failed or cancelled run leaves a root that can never be promoted.
//!
//! Executors are registered by name ([`registry`]): each has a typed
//! configuration ([`ExecutorConfig`]) whose keys are derived from the struct,
//! and capabilities known without a configuration. The code follows these
//! seams: [`request`] (what to build), [`events`] (what happens), `runner.rs`
//! (the guarantees above) and [`registry`].

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

/// The cancellation token of [`RunContext::cancel`], re-exported so that
/// executor crates need not depend on `tokio-util` to name it.
pub use tokio_util::sync::CancellationToken;

use crate::error::{IoContext, Result};

pub mod events;
pub mod registry;
pub mod request;
mod runner;

pub use events::{Event, EventReceiver, EventSink, Phase, Stream, MAX_QUEUED_BYTES};
pub use registry::{
    config_keys, parse_config, ConfigKey, ExecutorConfig, ExecutorKind, ExecutorRegistration,
    Registry, RegistryEntry,
};
pub use request::{base_artifacts, default_jobs, BuildRequest, MAX_JOBS};
pub use runner::{
    check_agreement, panic_is_caught, run_executor, run_executor_within, RunLimits, CANCEL_GRACE,
    MAX_LIMIT,
};

/// What an executor can do, declared up front so callers can check it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// Builds on another machine (needs a guest or machines file).
    pub remote: bool,
    /// Boots a throw-away guest from a virtual machine template of the
    /// machines file (a machine with a `(vm ...)` record) for each build. In
    /// a matrix its cells take only such machines, and the cells of any
    /// other remote executor only machines with an address.
    pub boots_vms: bool,
    /// Computes tree signatures where it builds, so transfer is verified.
    pub signs_at_build_site: bool,
    /// Stops the build's whole process tree on cancellation.
    pub cancellable: bool,
    /// Target architectures it can build; empty means any.
    pub target_arches: Vec<String>,
}

impl Capabilities {
    /// What an executor building on the machine it runs on can do: sign
    /// where it builds, stop on cancellation, and cross-build to any
    /// target architecture (FreeBSD's build does).
    pub fn local() -> Capabilities {
        Capabilities {
            remote: false,
            boots_vms: false,
            signs_at_build_site: true,
            cancellable: true,
            target_arches: Vec::new(),
        }
    }

    /// Whether target architecture `arch` can be built.
    pub fn builds_arch(&self, arch: &str) -> bool {
        self.target_arches.is_empty() || self.target_arches.iter().any(|a| a == arch)
    }
}

/// Everything an executor gets for one run.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// What to build; [`BuildRequest::check`] and the executor's
    /// [`Executor::check_request`] have accepted it.
    pub request: BuildRequest,
    /// The result root to fill: it exists, is empty but for the unfinished
    /// marker, and is on this machine.
    pub result_root: PathBuf,
    /// Where the run's stages, log lines and warnings go.
    pub events: EventSink,
    /// Cancelled on Ctrl-C, SIGTERM, fail-fast, or by the caller. Executors stop
    /// their work (the whole process tree) and return [`Error::Cancelled`](crate::Error::Cancelled).
    pub cancel: CancellationToken,
}

impl RunContext {
    /// The `logs/` directory of the result root (created on first use).
    ///
    /// A guest's result root is moved into the result root whole, `logs/`
    /// included, so an existing `logs` must be a directory itself: a symlink
    /// there is refused, never followed. Write into it with
    /// [`write_atomic_with`](crate::fsutil::write_atomic_with) once guest
    /// output is in it, since its entries are the guest's.
    pub fn logs_dir(&self) -> Result<PathBuf> {
        let dir = self.result_root.join("logs");
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&dir).with_path("inspect", &dir)?;
                if !meta.is_dir() {
                    return Err(crate::Error::UnsafePath {
                        path: dir,
                        message: "is not a directory (a symlink?); fruix never writes through one"
                            .into(),
                    });
                }
            }
            other => other.with_path("create logs directory", &dir)?,
        }
        Ok(dir)
    }
}

/// One way of running a native FreeBSD base build.
///
/// # Contract
///
/// - [`Executor::start`] makes the handle of one run ([`Run`]), which owns
///   whatever the run acquires: two runs of one executor never share state.
/// - [`Run::build`] builds what `ctx.request` asks for and leaves a
///   normalized result root at `ctx.result_root`: `promotion.scm` (naming this
///   executor's [`name`](Executor::name), the version of what built (below),
///   the request's run id, base, source and policy, and every requested
///   artifact) and `artifacts/<name>/` trees. It may write `logs/`.
/// - `executor-version` in `promotion.scm` is the version of the software
///   that ran the build, as the build site records it. Where this executor
///   runs the build itself (`local`, `host-initiated`, `jail`, an external
///   executor's scripts), that is its [`version`](Executor::version). Where
///   the build site runs its own fruix (`guest-self-hosted`, and `vm` around
///   it), it is that fruix's version, which may differ from this one's: the
///   guest helper is accepted from a minimum version on, not only at this
///   host's. It is provenance, left out of artifact identities, and
///   [`run_executor`] does not compare it with [`Executor::version`].
/// - It reports stages and log lines through `ctx.events`, each stage's start
///   before its logs before its end.
/// - A failing build step returns [`Error::Build`](crate::Error::Build) (step, status, last log
///   lines, log path); trouble with machines, connections, disks or helpers
///   returns [`Error::System`](crate::Error::System) or [`Error::Io`](crate::Error::Io); cancellation (`ctx.cancel`)
///   stops all work it started and returns [`Error::Cancelled`](crate::Error::Cancelled) promptly.
/// - [`Run::cleanup`] releases what the run acquired (connections, jails,
///   VMs, temporary files). It is called exactly once per run, whatever
///   `build` returned, including when it was cancelled, panicked or never
///   got far; [`Run::ended`] just before, with how the runner judged the
///   build. A run that wraps another forwards both.
///
/// Executors do not validate their own output, create the result root, or
/// handle the unfinished marker: [`run_executor`] does that for all of them.
#[async_trait]
pub trait Executor: fmt::Debug + Send + Sync {
    /// The registered name (`local`, `host-initiated`, ...).
    fn name(&self) -> &str;

    /// The executor's version on this machine (what `fruix executors list`
    /// shows). It is recorded as `executor-version` by builds this executor
    /// runs itself; a build site running its own fruix records that fruix's
    /// version instead (see the contract above).
    fn version(&self) -> &str;

    /// What this executor can do.
    fn capabilities(&self) -> Capabilities;

    /// Refuses a request this executor cannot build, before anything is
    /// created for it (the runner and every caller check it first). The
    /// default refuses a target architecture outside
    /// [`Capabilities::target_arches`]; an executor with more constraints
    /// adds them, calling [`check_target_arch`].
    fn check_request(&self, request: &BuildRequest) -> Result<()> {
        check_target_arch(self, request)
    }

    /// Starts one run: its handle, owning the run's state. Acquiring
    /// anything belongs in [`Run::build`], so that cleanup always follows.
    fn start(&self, ctx: &RunContext) -> Box<dyn Run + '_>;
}

/// Refuses `request` when `executor` does not build its target architecture.
pub fn check_target_arch<E: Executor + ?Sized>(executor: &E, request: &BuildRequest) -> Result<()> {
    let arch = &request.freebsd_base.target_arch;
    let capabilities = executor.capabilities();
    if capabilities.builds_arch(arch) {
        return Ok(());
    }
    Err(crate::error::Error::InvalidRequest {
        message: format!(
            "executor `{}` builds for {}, not {}; choose another executor or --target-arch",
            executor.name(),
            capabilities.target_arches.join(", "),
            crate::escape::quoted(arch)
        ),
    })
}

/// One run of an executor, from [`Executor::start`]; see the contract there.
#[async_trait]
pub trait Run: Send {
    /// Runs the build and fills the result root.
    async fn build(&mut self, ctx: &RunContext) -> Result<()>;

    /// Told how the runner judged the build, before [`Run::cleanup`]:
    /// `result` is what the run fails with, or `Ok` when its build
    /// succeeded. It may differ from what [`Run::build`] returned: a build
    /// stopped because a [`RunLimits`] limit passed saw only `ctx.cancel`
    /// cancelled, and is told [`Error::Timeout`](crate::Error::Timeout); a
    /// build that panicked, or was dropped at the end of the
    /// [`CANCEL_GRACE`], returned nothing. The default ignores it.
    fn ended(&mut self, result: &Result<()>) {
        let _ = result;
    }

    /// Releases what the run acquired; called once per run, always.
    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()>;
}

#[cfg(test)]
mod tests;
