//! The FreeBSD build driver: runs the plan of `fruix-freebsd` on this machine
//! (make on a FreeBSD source tree) and turns what it installs into a
//! normalized result root.
//!
//! `local` runs it here, and `guest-self-hosted` runs it inside a FreeBSD
//! guest, so it uses nothing Linux-only.
//!
//! # Contract
//!
//! [`Driver::run`] takes a [`RunContext`] (request, result root, events,
//! cancellation) and:
//!
//! 1. Plans the build ([`BuildPlan::new`]: every requested artifact is a
//!    base artifact, none is requested twice, the target and target
//!    architecture are FreeBSD names) and checks the source directory
//!    ([`check_source_tree`]), before anything runs. Otherwise
//!    [`Error::InvalidRequest`].
//! 2. Creates the work directory (replacing a stale one left by a crashed
//!    run for the same result root, and refusing a directory there that
//!    fruix did not make; [`fruix_freebsd::work::create_work_dir`]), held
//!    by this process until its cleanup removed it, so that a later
//!    build or collection removes it once this process is gone
//!    ([`fruix_freebsd::work::prepare_held_work_dir`]).
//! 3. Runs the plan's make steps ([`fruix_freebsd::plan`] lists them with
//!    their arguments and environment), each as a stage named after its
//!    target, with the source directory as working directory and this
//!    process's environment changed as the step says. Each step runs in its
//!    own process group, its output goes line by line to the events and to
//!    `logs/<step>.log`, a non-zero exit is [`Error::Build`] with the last
//!    lines, and cancellation stops the whole group (details in
//!    `driver/step.rs`). A make program that is not found is
//!    [`Error::System`].
//! 4. Stage `collect` slices the installed trees into `artifacts/` of the
//!    result root ([`fruix_freebsd::slice`]).
//! 5. Stage `sign` computes each artifact's tree signature and writes
//!    `promotion.scm` ([`write_promotion`]), with this machine's host name.
//! 6. Removes the work directory; failing to is a warning, not an error.
//!
//! On failure or cancellation the work directory is left for the executor's
//! cleanup to remove with [`remove_work_dir`], which removes only a work
//! directory of fruix's.

mod step;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use fruix_core::at_exit::AtExit;
use fruix_core::collect::host_name;
use fruix_core::executor::{Capabilities, Executor, Run, RunContext};
use fruix_core::promotion::PromotionMetadata;
use fruix_core::{Error, Result};
use fruix_freebsd::promotion::{write_promotion, Builder};
use fruix_freebsd::source::{absolute_source, check_source_tree};
use fruix_freebsd::work::{
    self, prepare_held_work_dir, work_dir_for, HeldWorkDir, WORK_DIR_AT_EXIT,
};
use fruix_freebsd::{BuildPlan, Layout, MakeStep};
use tokio_util::sync::CancellationToken;

/// The make program used when none is configured: the base system's make on
/// FreeBSD, the `bmake` port of it elsewhere (FreeBSD trees need BSD make).
pub fn default_make() -> &'static str {
    if cfg!(target_os = "freebsd") {
        "make"
    } else {
        "bmake"
    }
}

/// One run of the build driver.
#[derive(Debug, Clone)]
pub struct Driver {
    /// The executor name recorded in `promotion.scm`.
    pub executor: String,
    /// The executor version recorded in `promotion.scm`.
    pub executor_version: String,
    /// The make program, the source tree and the work directory on the
    /// machine that builds. See [`fruix_freebsd::work::work_dir_for`].
    pub layout: Layout,
}

impl Driver {
    /// Runs the build described in the module docs and returns the metadata
    /// it wrote to `promotion.scm`. The hold on the work directory goes to
    /// `held`, for the caller to keep until the directory is removed.
    pub async fn run(
        &self,
        ctx: &RunContext,
        held: &mut Option<HeldWorkDir>,
    ) -> Result<PromotionMetadata> {
        let plan = BuildPlan::new(&ctx.request, &self.layout)?;
        check_source_tree(&self.layout.source_dir)?;
        let work = self.layout.work_dir.clone();
        *held = Some(blocking(&ctx.cancel, move || prepare_held_work_dir(&work)).await?);
        let logs = ctx.logs_dir()?;
        for step in &plan.steps {
            let log = logs.join(format!("{}.log", step.target));
            ctx.events
                .stage(
                    step.target,
                    step::run(command(step), step.target, &log, ctx),
                )
                .await?;
        }
        let (work, root) = (self.layout.work_dir.clone(), ctx.result_root.clone());
        let slicing = plan.slicing;
        ctx.events
            .stage(
                "collect",
                blocking(&ctx.cancel, move || slicing.apply(&work, &root)),
            )
            .await?;
        let (executor, version) = (self.executor.clone(), self.executor_version.clone());
        let (root, request) = (ctx.result_root.clone(), ctx.request.clone());
        let sign = blocking(&ctx.cancel, move || {
            let host_name = host_name()?;
            let builder = Builder {
                executor: &executor,
                executor_version: &version,
                host_name: &host_name,
            };
            write_promotion(&root, &request, builder)
        });
        let metadata = ctx.events.stage("sign", sign).await?;
        if let Err(e) = remove_work_dir(&self.layout.work_dir).await {
            ctx.events.warn(format!(
                "the build succeeded but its work directory was not removed: {e}"
            ));
        }
        Ok(metadata)
    }
}

/// The build driver on this machine as an executor, recorded as `name`:
/// `local`, and the build inside a guest that `fruix native-build
/// self-hosted` runs for `guest-self-hosted`.
#[derive(Debug, Clone)]
pub struct DriverExecutor {
    /// The executor name and version recorded in `promotion.scm`.
    pub name: &'static str,
    /// The executor version returned by [`Executor::version`] and recorded
    /// in `promotion.scm`: this crate's version, for `local` and for the
    /// build inside a guest alike.
    pub version: &'static str,
    /// The make program.
    pub make: String,
    /// Where work directories go (default: next to the result root).
    pub work_dir: Option<PathBuf>,
}

impl Executor for DriverExecutor {
    fn name(&self) -> &str {
        self.name
    }

    fn version(&self) -> &str {
        self.version
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::local()
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(DriverRun {
            executor: self,
            _at_exit: None,
            held: None,
        })
    }
}

/// One run of the build driver on this machine: the work directory follows
/// from the run's result root (under `work_dir` when given), so the run
/// needs no state of its own. Its cleanup removes the work directory.
#[derive(Debug)]
struct DriverRun<'a> {
    executor: &'a DriverExecutor,
    /// The work directory, named by a fast exit until the run is dropped
    /// (after its cleanup removed it).
    _at_exit: Option<AtExit>,
    /// The hold on the work directory, kept until the run is dropped
    /// (after its cleanup removed it).
    held: Option<HeldWorkDir>,
}

impl DriverRun<'_> {
    fn work_dir(&self, ctx: &RunContext) -> Result<PathBuf> {
        work_dir_for(
            &ctx.result_root,
            &ctx.request.run_id,
            self.executor.work_dir.as_deref(),
        )
    }
}

#[async_trait]
impl Run for DriverRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let work_dir = self.work_dir(ctx)?;
        self._at_exit = Some(AtExit::left(WORK_DIR_AT_EXIT, &work_dir));
        let driver = Driver {
            executor: self.executor.name.to_string(),
            executor_version: self.executor.version.to_string(),
            layout: Layout {
                make: self.executor.make.clone(),
                source_dir: absolute_source(ctx.request.source_dir())?,
                work_dir,
            },
        };
        driver.run(ctx, &mut self.held).await.map(drop)
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        // One fruix did not make (refused by the build) is left as it is.
        remove_work_dir(&self.work_dir(ctx)?).await.map(drop)
    }
}

/// The process of make step `step`: its program, arguments and working
/// directory, and this process's environment changed as the step says.
fn command(step: &MakeStep) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&step.program);
    command.current_dir(&step.working_dir).args(&step.args);
    for var in &step.env_removed {
        command.env_remove(var);
    }
    command.envs(step.env_set.iter().map(|(k, v)| (k, v)));
    command
}

/// Removes the work directory `dir` with everything in it when it is
/// fruix's own; a missing one is fine, and one fruix did not make is left
/// as it is: `false` ([`fruix_freebsd::work::remove_work_dir`]). Read-only
/// directories (and, on FreeBSD, immutable file flags set by an install as
/// root) do not stop it.
pub async fn remove_work_dir(dir: &Path) -> Result<bool> {
    let dir: PathBuf = dir.to_path_buf();
    tokio::task::spawn_blocking(move || work::remove_work_dir(&dir))
        .await
        .map_err(join_error)?
}

/// Runs blocking `work` on the blocking pool; returns [`Error::Cancelled`] as
/// soon as `cancel` fires (the work then finishes in the background).
async fn blocking<T, F>(cancel: &CancellationToken, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let task = tokio::task::spawn_blocking(work);
    tokio::select! {
        joined = task => joined.map_err(join_error)?,
        () = cancel.cancelled() => Err(Error::Cancelled),
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::system(format!(
        "a file-system task of the build driver did not finish: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn a_step_runs_as_planned() {
        let step = MakeStep {
            target: "buildworld",
            program: "bmake".into(),
            args: vec!["-j2".into(), "buildworld".into()],
            working_dir: "/usr/src".into(),
            env_set: vec![("SRCCONF", "/dev/null".into())],
            env_removed: vec!["MAKEFLAGS"],
        };
        let command = command(&step);
        let command = command.as_std();
        assert_eq!(command.get_program(), "bmake");
        assert_eq!(
            command.get_args().collect::<Vec<_>>(),
            [OsStr::new("-j2"), OsStr::new("buildworld")]
        );
        assert_eq!(command.get_current_dir(), Some(Path::new("/usr/src")));
        let envs: Vec<_> = command.get_envs().collect();
        assert!(envs.contains(&(OsStr::new("SRCCONF"), Some(OsStr::new("/dev/null")))));
        assert!(envs.contains(&(OsStr::new("MAKEFLAGS"), None)));
    }
}
