//! External executors: executors written as commands, in any language,
//! declared in an executors file ([`file`](mod@file)) and run stage by stage, in the
//! model of GitLab Runner's custom executor.
//!
//! # Contract
//!
//! - A run creates the work directory `RESULT_ROOT.work` (next to the result
//!   root; a stale one of fruix's is replaced, anything else there refused:
//!   [`create_work_dir`]), writes the request there as JSON
//!   (`request.json`), then runs the executor's `prepare`, `build` and
//!   `collect` commands in that order, each as an event stage of its name,
//!   with the work directory as current directory, stdin `/dev/null`, its
//!   output streamed to the events and to `logs/STAGE.log` of the result
//!   root, in its own process group ([`fruix_core::process`]).
//! - Every stage gets this process's environment plus the variables listed in
//!   [`ENVIRONMENT`] (the build request, paths, statuses) and one
//!   `FRUIX_CONFIG_KEY` per configuration value (`--config key=value`; only
//!   the keys the executor declares are accepted). Those variables, and any
//!   other `FRUIX_CONFIG_*`, are first removed from what it inherits: a
//!   stage sees only what this run set.
//! - A stage's exit status decides: 0 goes on; the executor's build-failure
//!   status (default 1) is a build failure ([`Error::Build`], exit status 1
//!   of `fruix build`); its system-failure status (default 2), any other
//!   status, or death by a signal is a system failure ([`Error::System`],
//!   exit status 3). A stage that runs past its timeout, or a cancelled run,
//!   has its process group stopped: `SIGTERM`, then `SIGKILL` after the
//!   executor's `term-grace`; a timeout is a system failure naming it.
//! - After `collect`, when the result root has no `promotion.scm`, fruix
//!   writes it (stage `sign`) from the request and the trees found at
//!   `artifacts/NAME` for every requested artifact, with tree signatures
//!   ([`fruix_freebsd::promotion::write_promotion`]). What is at `FRUIX_RESULT_ROOT`
//!   is then validated like any executor's output by
//!   [`fruix_core::executor::run_executor`].
//! - A run's cleanup ([`fruix_core::executor::Run::cleanup`]) runs the
//!   `cleanup` command once per run, whatever happened (success, failure,
//!   timeout, cancellation), with `FRUIX_OUTCOME` telling what did; it
//!   cannot be cancelled, but has its own timeout. Then the work directory
//!   is removed, if it is still fruix's (a stage that removed its marker
//!   leaves it, with a warning). A run that never had a work directory,
//!   because something fruix did not make was in its place, runs no
//!   cleanup. A failing cleanup is reported as a warning by the runner and
//!   never hides the build's result.
//! - `FRUIX_OUTCOME` says how the stages ended: `success` when prepare,
//!   build and collect exited 0, whatever fruix then finds in the root they
//!   left (judged after cleanup: missing artifacts, all listed, fail the run
//!   all the same); `timeout` after a stage's own timeout and after a limit
//!   of the run's ([`fruix_core::executor::RunLimits`], which the runner
//!   tells the run through [`fruix_core::executor::Run::ended`]);
//!   `invalid` when fruix refused to go on with what a stage left (a `logs`
//!   that is not a directory).
//! - Cleanup runs even when fruix cannot write `logs/cleanup.log` (a stage
//!   replaced `logs` with a symlink, which fruix never writes through, or
//!   removed the result root): its output is then only shown, with a
//!   warning.

pub mod file;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fruix_core::at_exit::AtExit;
use fruix_core::collect::host_name;
use fruix_core::error::{IoContext, LogRef};
use fruix_core::executor::{
    check_target_arch, BuildRequest, Capabilities, Executor, Run, RunContext,
};
use fruix_core::process::{describe_status, run_step, Ending, Finished, Step};
use fruix_core::promotion::PROMOTION_FILE;
use fruix_core::{escape, Error, Failure, Result};
use fruix_freebsd::promotion::{write_promotion, Builder};
use fruix_freebsd::work::{create_work_dir, work_dir_for, WORK_DIR_AT_EXIT, WORK_MARKER};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::driver::remove_work_dir;

pub use file::{ExternalSpec, Stage, StageCommand};

/// The variables every stage gets, with what they hold (the README lists
/// them from here).
pub const ENVIRONMENT: [(&str, &str); 25] = [
    ("FRUIX_STAGE", "the stage running: prepare, build, collect or cleanup"),
    ("FRUIX_EXECUTOR", "the executor's name"),
    ("FRUIX_EXECUTOR_VERSION", "the executor's version"),
    ("FRUIX_EXECUTOR_DIR", "the directory of the executors file that declares it"),
    ("FRUIX_RUN_ID", "the run id, e.g. 20260405T213444Z"),
    ("FRUIX_RESULT_ROOT", "absolute path of the result root to fill (exists; holds logs/ and the unfinished marker)"),
    ("FRUIX_WORK_DIR", "absolute path of a scratch directory for this run (the current directory; removed after cleanup)"),
    ("FRUIX_REQUEST_FILE", "absolute path of request.json in the work directory: the full build request as JSON (run_id, freebsd_base, source, policy, artifacts)"),
    ("FRUIX_SOURCE_STORE", "the source tree (store path) to build"),
    ("FRUIX_SOURCE_COMMIT", "the source's commit, or empty"),
    ("FRUIX_FREEBSD_NAME", "FreeBSD"),
    ("FRUIX_FREEBSD_VERSION", "e.g. 15.0-STABLE"),
    ("FRUIX_FREEBSD_BRANCH", "e.g. stable/15"),
    ("FRUIX_TARGET", "make's TARGET, e.g. amd64"),
    ("FRUIX_TARGET_ARCH", "make's TARGET_ARCH, e.g. amd64"),
    ("FRUIX_KERNCONF", "the kernel configuration, e.g. GENERIC"),
    ("FRUIX_JOBS", "parallel make jobs"),
    ("FRUIX_JOBS_PER_MACHINE", "1 when no job count was given: FRUIX_JOBS is then this host's CPU count, and a script that builds on another machine may use that machine's (promotion.scm records the count used); else 0"),
    ("FRUIX_MAKE_FLAGS", "extra make arguments, separated by single spaces (none contains white space)"),
    ("FRUIX_SOURCE_DATE_EPOCH", "SOURCE_DATE_EPOCH for the build, or empty"),
    ("FRUIX_ARTIFACTS", "the requested artifacts, separated by spaces: collect puts each at FRUIX_RESULT_ROOT/artifacts/NAME"),
    ("FRUIX_BUILD_FAILURE_EXIT_CODE", "the exit status that reports a build failure"),
    ("FRUIX_SYSTEM_FAILURE_EXIT_CODE", "the exit status that reports a system failure"),
    ("FRUIX_OUTCOME", "cleanup only: how the stages ended: success, build-failure, system-failure, timeout, cancelled or invalid"),
    ("FRUIX_CONFIG_KEY", "one per configuration value given with --config key=value (KEY upper-cased)"),
];

/// Whether `name` is a variable fruix sets for stages: one of
/// [`ENVIRONMENT`], or any `FRUIX_CONFIG_*`. Inherited, each is removed
/// from a stage's environment before fruix sets this run's.
fn is_stage_variable(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b"FRUIX_CONFIG_") || ENVIRONMENT.iter().any(|(v, _)| v.as_bytes() == name)
}

/// How a run ended, for cleanup's `FRUIX_OUTCOME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    BuildFailure,
    SystemFailure,
    Timeout,
    Cancelled,
    Invalid,
}

impl Outcome {
    fn of(result: &Result<()>) -> Outcome {
        if let Err(Error::Timeout { .. }) = result {
            return Outcome::Timeout;
        }
        match result.as_ref().map_err(Error::failure) {
            Ok(()) => Outcome::Success,
            Err(Failure::Build) => Outcome::BuildFailure,
            Err(Failure::System) => Outcome::SystemFailure,
            Err(Failure::Cancelled) => Outcome::Cancelled,
            Err(Failure::Input) => Outcome::Invalid,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::BuildFailure => "build-failure",
            Outcome::SystemFailure => "system-failure",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Invalid => "invalid",
        }
    }
}

/// An executor declared in an executors file.
#[derive(Debug)]
pub struct ExternalExecutor {
    spec: Arc<ExternalSpec>,
    /// `FRUIX_CONFIG_*` variables from the configuration.
    config: Vec<(String, String)>,
}

impl ExternalExecutor {
    /// Makes the executor of `spec` with `config`, a JSON object of the
    /// declared configuration keys (strings, numbers or booleans).
    pub fn new(spec: Arc<ExternalSpec>, config: serde_json::Value) -> Result<ExternalExecutor> {
        let invalid = |message: String| Error::InvalidConfig {
            executor: spec.name.clone(),
            message,
        };
        let object = match config {
            serde_json::Value::Null => Default::default(),
            serde_json::Value::Object(o) => o,
            other => {
                return Err(invalid(format!(
                    "expected an object of keys, got {}",
                    escape::text(&other.to_string())
                )))
            }
        };
        let mut vars = Vec::with_capacity(object.len());
        for (key, value) in object {
            if !spec.config_keys.iter().any(|k| k.name == key) {
                let known: Vec<_> = spec.config_keys.iter().map(|k| k.name.as_str()).collect();
                return Err(invalid(format!(
                    "unknown key `{}`; this executor declares: {}",
                    escape::text(&key),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            let value = match value {
                serde_json::Value::String(s) => s,
                v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => v.to_string(),
                other => {
                    return Err(invalid(format!(
                        "`{key}` must be a string, number or boolean, got {}",
                        escape::text(&other.to_string())
                    )))
                }
            };
            vars.push((format!("FRUIX_CONFIG_{}", key.to_ascii_uppercase()), value));
        }
        Ok(ExternalExecutor { spec, config: vars })
    }

    /// The declaration this executor runs.
    pub fn spec(&self) -> &ExternalSpec {
        &self.spec
    }

    /// The work directory of `ctx`'s run.
    fn work_dir(&self, ctx: &RunContext) -> Result<PathBuf> {
        work_dir_for(&ctx.result_root, &ctx.request.run_id, None)
    }

    /// The environment of every stage of `ctx`'s run (see [`ENVIRONMENT`]).
    pub fn environment(&self, ctx: &RunContext, work: &Path) -> Result<Vec<(String, String)>> {
        let root = std::fs::canonicalize(&ctx.result_root)
            .with_path("resolve result root", &ctx.result_root)?;
        let r = &ctx.request;
        let spec = &self.spec;
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = [
            ("FRUIX_EXECUTOR", spec.name.clone()),
            ("FRUIX_EXECUTOR_VERSION", spec.version.clone()),
            ("FRUIX_EXECUTOR_DIR", text(&spec.dir)),
            ("FRUIX_RUN_ID", r.run_id.clone()),
            ("FRUIX_RESULT_ROOT", text(&root)),
            ("FRUIX_WORK_DIR", text(work)),
            ("FRUIX_REQUEST_FILE", text(&work.join(REQUEST_FILE))),
            ("FRUIX_SOURCE_STORE", r.source.path.clone()),
            (
                "FRUIX_SOURCE_COMMIT",
                r.source.commit.clone().unwrap_or_default(),
            ),
            ("FRUIX_FREEBSD_NAME", r.freebsd_base.name.clone()),
            ("FRUIX_FREEBSD_VERSION", r.freebsd_base.version.clone()),
            ("FRUIX_FREEBSD_BRANCH", r.freebsd_base.branch.clone()),
            ("FRUIX_TARGET", r.freebsd_base.target.clone()),
            ("FRUIX_TARGET_ARCH", r.freebsd_base.target_arch.clone()),
            ("FRUIX_KERNCONF", r.policy.kernconf.clone()),
            ("FRUIX_JOBS", r.policy.jobs.to_string()),
            (
                "FRUIX_JOBS_PER_MACHINE",
                u8::from(r.jobs_per_machine).to_string(),
            ),
            ("FRUIX_MAKE_FLAGS", r.policy.make_flags.join(" ")),
            (
                "FRUIX_SOURCE_DATE_EPOCH",
                r.policy
                    .source_date_epoch
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            ),
            ("FRUIX_ARTIFACTS", r.artifacts.join(" ")),
            (
                "FRUIX_BUILD_FAILURE_EXIT_CODE",
                spec.exit_codes.build_failure.to_string(),
            ),
            (
                "FRUIX_SYSTEM_FAILURE_EXIT_CODE",
                spec.exit_codes.system_failure.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.config.iter().cloned());
        Ok(env)
    }

    /// Runs `stage` (when the executor has a command for it) as an event
    /// stage, stopped by `cancel` or its timeout.
    async fn run_stage(
        &self,
        stage: Stage,
        ctx: &RunContext,
        work: &Path,
        env: &[(String, String)],
        cancel: &CancellationToken,
    ) -> Result<()> {
        let Some(command) = self.spec.stages.get(stage) else {
            return Ok(());
        };
        let name = stage.name();
        let log = self.log_file(stage, ctx)?;
        let mut process = Command::new(&command.argv[0]);
        process.args(&command.argv[1..]).current_dir(work);
        // A stage sees only what this run set of the variables fruix sets
        // for stages, never a leftover of the shell that started fruix.
        for (var, _) in std::env::vars_os() {
            if is_stage_variable(&var) {
                process.env_remove(var);
            }
        }
        process
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("FRUIX_STAGE", name);
        let hint = format!(
            "check the {name} command of executor `{}` ({})",
            self.spec.name, self.spec.origin
        );
        // A stage whose log cannot be kept in the result root (a cleanup
        // after `logs` was replaced) logs into the work directory, removed
        // with it: a log is always a file of fruix's own.
        let unkept = work.join(format!(".{name}.log"));
        let step = Step {
            stage: name,
            log: log.as_deref().unwrap_or(&unkept),
            events: &ctx.events,
            cancel,
            timeout: Some(command.timeout),
            term_grace: self.spec.term_grace,
            hint: &hint,
        };
        ctx.events
            .stage(name, async {
                let finished = run_step(process, &step).await?;
                self.judge(stage, finished, log.as_deref())
            })
            .await
    }

    /// The log file of `stage`: `logs/STAGE.log` of the result root. When
    /// fruix cannot write there (a stage replaced `logs` with a symlink,
    /// which fruix never writes through, or removed the result root), the
    /// stage is refused, but for cleanup, which always runs: its output is
    /// then only shown (`None`), with a warning.
    fn log_file(&self, stage: Stage, ctx: &RunContext) -> Result<Option<PathBuf>> {
        match ctx.logs_dir() {
            Ok(dir) => Ok(Some(dir.join(format!("{}.log", stage.name())))),
            Err(e) if stage == Stage::Cleanup => {
                ctx.events.warn(format!(
                    "the log of the cleanup of executor `{}` is not kept: {e}",
                    self.spec.name
                ));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Maps how a stage ended to the run's result (see the module docs).
    fn judge(&self, stage: Stage, finished: Finished, log: Option<&Path>) -> Result<()> {
        let spec = &self.spec;
        let what = format!("external executor `{}`: stage {}", spec.name, stage.name());
        // The log (file and last lines, in arrival order) goes with the
        // error, typed: printers show its tail.
        let log_ref = LogRef {
            path: log.map(Path::to_path_buf),
            tail: finished.tail,
        };
        match finished.ending {
            Ending::Cancelled => Err(Error::Cancelled),
            Ending::Exited(status) if status.success() => Ok(()),
            Ending::Exited(status) if status.code() == Some(spec.exit_codes.build_failure) => {
                Err(Error::Build {
                    step: stage.name().to_string(),
                    status: Some(describe_status(status)),
                    log: log_ref,
                })
            }
            Ending::Exited(status) if status.code() == Some(spec.exit_codes.system_failure) => {
                Err(Error::System {
                    message: format!(
                        "{what} reported a system failure ({})",
                        describe_status(status)
                    ),
                    log: Some(log_ref),
                })
            }
            Ending::Exited(status) => Err(Error::System {
                message: format!(
                    "{what} failed with {}, which is neither its build-failure status ({}) nor its system-failure status ({}), so it counts as a system failure",
                    describe_status(status),
                    spec.exit_codes.build_failure,
                    spec.exit_codes.system_failure
                ),
                log: Some(log_ref),
            }),
            Ending::TimedOut(limit) => Err(Error::Timeout {
                what,
                limit,
                detail: format!(
                    "; its process group was stopped (SIGTERM, then SIGKILL after {}s)",
                    spec.term_grace.as_secs_f64()
                ),
                log: Some(log_ref),
            }),
        }
    }

    /// Creates the run's work directory (replacing a stale one of fruix's,
    /// refusing anything else there: [`create_work_dir`]) and writes
    /// `request.json` there: the work directory and the environment of the
    /// run's stages.
    async fn prepare_work(&self, ctx: &RunContext) -> Result<Prepared> {
        let work = self.work_dir(ctx)?;
        let _left = AtExit::left(WORK_DIR_AT_EXIT, &work);
        let created = work.clone();
        tokio::task::spawn_blocking(move || create_work_dir(&created))
            .await
            .map_err(|e| {
                Error::system(format!("creating the work directory did not finish: {e}"))
            })??;
        let request = work.join(REQUEST_FILE);
        let json = serde_json::to_vec_pretty(&ctx.request)
            .map_err(|e| Error::system(format!("cannot encode the request as JSON: {e}")))?;
        std::fs::write(&request, json).with_path("write request file", &request)?;
        let env = self.environment(ctx, &work)?;
        Ok(Prepared { work, env, _left })
    }

    /// Writes `promotion.scm` (stage `sign`) when collect did not. A
    /// requested artifact that collect did not leave at `artifacts/NAME`
    /// refuses the root, naming every one missing ([`write_promotion`]).
    async fn sign_unless_signed(&self, ctx: &RunContext) -> Result<()> {
        if ctx.result_root.join(PROMOTION_FILE).exists() {
            return Ok(());
        }
        ctx.events.stage("sign", self.sign(ctx)).await
    }

    /// Writes `promotion.scm` from the request and the collected artifacts.
    async fn sign(&self, ctx: &RunContext) -> Result<()> {
        let (root, request) = (ctx.result_root.clone(), ctx.request.clone());
        let (name, version) = (self.spec.name.clone(), self.spec.version.clone());
        let task = tokio::task::spawn_blocking(move || {
            let host = host_name()?;
            let builder = Builder {
                executor: &name,
                executor_version: &version,
                host_name: &host,
            };
            write_promotion(&root, &request, builder).map(drop)
        });
        tokio::select! {
            joined = task => joined.map_err(|e| Error::system(format!("signing the collected artifacts did not finish: {e}")))?,
            () = ctx.cancel.cancelled() => Err(Error::Cancelled),
        }
    }
}

/// The name of the request file in the work directory.
pub const REQUEST_FILE: &str = "request.json";

impl Executor for ExternalExecutor {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn version(&self) -> &str {
        &self.spec.version
    }

    fn capabilities(&self) -> Capabilities {
        self.spec.capabilities.clone()
    }

    fn check_request(&self, request: &BuildRequest) -> Result<()> {
        check_target_arch(self, request)?;
        match request
            .policy
            .make_flags
            .iter()
            .find(|f| f.contains(char::is_whitespace) || f.is_empty())
        {
            Some(flag) => Err(Error::InvalidRequest {
                message: format!(
                    "make flag {} is empty or contains white space, which FRUIX_MAKE_FLAGS cannot carry to external executor `{}`",
                    fruix_core::escape::quoted(flag),
                    self.spec.name
                ),
            }),
            None => Ok(()),
        }
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(ExternalRun {
            executor: self,
            prepared: None,
            outcome: None,
        })
    }
}

/// A run's work directory and the environment of its stages.
struct Prepared {
    work: PathBuf,
    env: Vec<(String, String)>,
    /// The work directory, named by a fast exit (a second Ctrl-C) that
    /// leaves it, until the run's cleanup has removed it.
    _left: AtExit,
}

/// One run of an external executor: its work directory and environment,
/// which its cleanup reuses (a stage may have removed the result root
/// they derive from), and how its stages ended, for its cleanup stage
/// (`FRUIX_OUTCOME`).
struct ExternalRun<'a> {
    executor: &'a ExternalExecutor,
    prepared: Option<Prepared>,
    outcome: Option<Outcome>,
}

impl ExternalRun<'_> {
    /// Prepares the work directory, then runs the prepare, build and
    /// collect stages in order; the first that fails ends the run with its
    /// failure.
    async fn run_stages(&mut self, ctx: &RunContext) -> Result<()> {
        let executor = self.executor;
        let prepared = self.prepared.insert(executor.prepare_work(ctx).await?);
        for stage in [Stage::Prepare, Stage::Build, Stage::Collect] {
            executor
                .run_stage(stage, ctx, &prepared.work, &prepared.env, &ctx.cancel)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Run for ExternalRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let stages = self.run_stages(ctx).await;
        self.outcome = Some(Outcome::of(&stages));
        stages?;
        let signed = self.executor.sign_unless_signed(ctx).await;
        // The stages succeeded: what they left is judged after cleanup,
        // which sees `success` (an invalid root fails the run all the same).
        if signed
            .as_ref()
            .is_err_and(|e| e.failure() != Failure::Input)
        {
            self.outcome = Some(Outcome::of(&signed));
        }
        signed
    }

    fn ended(&mut self, result: &Result<()>) {
        self.outcome = match (result, self.outcome) {
            // A limit of the run's (`--timeout`, `--max-silent-time`)
            // passed: the stage it stopped saw only a cancellation.
            (Err(Error::Timeout { .. }), _) => Some(Outcome::Timeout),
            (_, Some(outcome)) => Some(outcome),
            // The build was dropped at the end of the cancel grace.
            (result, None) => Some(Outcome::of(result)),
        };
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        let executor = self.executor;
        let outcome = self.outcome.unwrap_or(Outcome::SystemFailure);
        let Prepared {
            work,
            mut env,
            _left,
        } = match self.prepared {
            Some(prepared) => prepared,
            None => match executor.prepare_work(ctx).await {
                Ok(prepared) => prepared,
                // Something fruix did not make is where the work directory
                // goes: no stage ran, and the build said so.
                Err(Error::InvalidRequest { .. }) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let ran = async {
            // A stage removed it: cleanup still runs in a work directory.
            if work.symlink_metadata().is_err() {
                create_work_dir(&work)?;
            }
            env.push(("FRUIX_OUTCOME".into(), outcome.name().into()));
            // Cleanup is not cancellable: it is what runs after a cancel.
            let never = CancellationToken::new();
            executor
                .run_stage(Stage::Cleanup, ctx, &work, &env, &never)
                .await
        }
        .await;
        let removed = match remove_work_dir(&work).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::system(format!(
                "the work directory {} was left in place: it no longer holds {WORK_MARKER} (a stage removed it, or replaced the directory), and fruix removes only what it can tell is its own",
                fruix_core::escape::path(&work)
            ))),
            Err(e) => Err(e),
        };
        ran.and(removed)
    }
}

#[cfg(test)]
mod tests;
