//! External executors: executors written as commands, in any language,
//! declared in an executors file ([`file`](mod@file)) and run stage by stage, in the
//! model of GitLab Runner's custom executor.
//!
//! # Contract
//!
//! - A run creates the work directory `RESULT_ROOT.work` (next to the result
//!   root; a stale one is removed first), writes the request there as JSON
//!   (`request.json`), then runs the executor's `prepare`, `build` and
//!   `collect` commands in that order, each as an event stage of its name,
//!   with the work directory as current directory, stdin `/dev/null`, its
//!   output streamed to the events and to `logs/STAGE.log` of the result
//!   root, in its own process group ([`fruix_core::process`]).
//! - Every stage gets this process's environment plus the variables listed in
//!   [`ENVIRONMENT`] (the build request, paths, statuses) and one
//!   `FRUIX_CONFIG_KEY` per configuration value (`--config key=value`; only
//!   the keys the executor declares are accepted).
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
//! - A run's cleanup ([`fruix_core::executor::Run::cleanup`]) runs the `cleanup` command once per run, whatever
//!   happened (success, failure, timeout, cancellation), with `FRUIX_OUTCOME`
//!   telling what did; it cannot be cancelled, but has its own timeout. Then
//!   the work directory is removed. A failing cleanup is reported as a warning
//!   by the runner and never hides the build's result.

pub mod file;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fruix_core::collect::host_name;
use fruix_core::error::IoContext;
use fruix_core::executor::{
    check_target_arch, BuildRequest, Capabilities, Executor, Run, RunContext,
};
use fruix_core::process::{describe_status, run_step, Ending, Finished, Step};
use fruix_core::promotion::PROMOTION_FILE;
use fruix_core::{Error, Failure, Result};
use fruix_freebsd::promotion::{write_promotion, Builder};
use fruix_freebsd::work::work_dir_for;
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
    ("FRUIX_OUTCOME", "cleanup only: success, build-failure, system-failure, timeout, cancelled or invalid"),
    ("FRUIX_CONFIG_KEY", "one per configuration value given with --config key=value (KEY upper-cased)"),
];

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
            other => return Err(invalid(format!("expected an object of keys, got {other}"))),
        };
        let mut vars = Vec::with_capacity(object.len());
        for (key, value) in object {
            if !spec.config_keys.iter().any(|k| k.name == key) {
                let known: Vec<_> = spec.config_keys.iter().map(|k| k.name.as_str()).collect();
                return Err(invalid(format!(
                    "unknown key `{key}`; this executor declares: {}",
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
                        "`{key}` must be a string, number or boolean, got {other}"
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
        let log = ctx.logs_dir()?.join(format!("{name}.log"));
        let mut process = Command::new(&command.argv[0]);
        process
            .args(&command.argv[1..])
            .current_dir(work)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("FRUIX_STAGE", name);
        let hint = format!(
            "check the {name} command of executor `{}` ({})",
            self.spec.name, self.spec.origin
        );
        let step = Step {
            stage: name,
            log: &log,
            events: &ctx.events,
            cancel,
            timeout: Some(command.timeout),
            term_grace: self.spec.term_grace,
            hint: &hint,
        };
        ctx.events
            .stage(name, async {
                let finished = run_step(process, &step).await?;
                self.judge(stage, finished, &log)
            })
            .await
    }

    /// Maps how a stage ended to the run's result (see the module docs).
    fn judge(&self, stage: Stage, finished: Finished, log: &Path) -> Result<()> {
        let spec = &self.spec;
        let what = format!("external executor `{}`: stage {}", spec.name, stage.name());
        // The log (file and last lines, in arrival order) goes with the
        // error, typed: printers show its tail.
        let log_ref = finished.log_ref(log);
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

    /// Creates the run's work directory, writes `request.json` there and
    /// runs the prepare, build, collect and sign stages in order; the first
    /// that fails ends the run with its failure.
    async fn run_stages(&self, ctx: &RunContext) -> Result<()> {
        let work = self.work_dir(ctx)?;
        remove_work_dir(&work).await?;
        std::fs::create_dir_all(&work).with_path("create work directory", &work)?;
        let request = work.join(REQUEST_FILE);
        let json = serde_json::to_vec_pretty(&ctx.request)
            .map_err(|e| Error::system(format!("cannot encode the request as JSON: {e}")))?;
        std::fs::write(&request, json).with_path("write request file", &request)?;
        let env = self.environment(ctx, &work)?;
        for stage in [Stage::Prepare, Stage::Build, Stage::Collect] {
            self.run_stage(stage, ctx, &work, &env, &ctx.cancel).await?;
        }
        if !ctx.result_root.join(PROMOTION_FILE).exists() {
            ctx.events.stage("sign", self.sign(ctx)).await?;
        }
        Ok(())
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
            outcome: None,
        })
    }
}

/// One run of an external executor: how its stages ended, for its cleanup
/// stage (`FRUIX_OUTCOME`).
struct ExternalRun<'a> {
    executor: &'a ExternalExecutor,
    outcome: Option<Outcome>,
}

#[async_trait]
impl Run for ExternalRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let result = self.executor.run_stages(ctx).await;
        self.outcome = Some(Outcome::of(&result));
        result
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        let executor = self.executor;
        // A build dropped at the cancel grace never said how it ended.
        let outcome = self.outcome.unwrap_or(if ctx.cancel.is_cancelled() {
            Outcome::Cancelled
        } else {
            Outcome::SystemFailure
        });
        let work = executor.work_dir(ctx)?;
        let ran = async {
            std::fs::create_dir_all(&work).with_path("create work directory", &work)?;
            let mut env = executor.environment(ctx, &work)?;
            env.push(("FRUIX_OUTCOME".into(), outcome.name().into()));
            // Cleanup is not cancellable: it is what runs after a cancel.
            let never = CancellationToken::new();
            executor
                .run_stage(Stage::Cleanup, ctx, &work, &env, &never)
                .await
        }
        .await;
        let removed = remove_work_dir(&work).await;
        ran.and(removed)
    }
}

#[cfg(test)]
mod tests;
