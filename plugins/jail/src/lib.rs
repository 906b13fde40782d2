//! `fruix-executor-jail`: the `jail` executor, an example Fruix executor
//! plugin written as a third party would write one. Of fruix it depends only
//! on `fruix-core` (the executor contract) and `fruix-freebsd` (the FreeBSD
//! build contract: make steps, slicing, probes, `promotion.scm`), and it
//! registers itself in one line (`fruix_core::register_executor!`); the
//! `fruix` command links it in through its `jail` cargo feature.
//!
//! # What it does
//!
//! With `runner = "jail"` (the default) it builds FreeBSD base inside a
//! throw-away FreeBSD jail ([`plan`] lists every command):
//!
//! 1. mounts the source tree read-only (nullfs) and the run's work directory
//!    (`RESULT_ROOT.work`) read-write into the jail root, each at its own path;
//! 2. creates a persistent jail (`jail -c name=... path=JAIL_ROOT
//!    host.hostname=... mount.devfs ip4=disable ip6=disable persist`);
//! 3. runs the make steps of the `fruix-freebsd` plan (`buildworld`,
//!    `buildkernel`, `installworld`, `distribution`, `installkernel`, as
//!    needed by the requested artifacts) with
//!    `jexec NAME env -i ... make -C SOURCE ...`, each as an event stage in
//!    its own process group;
//! 4. slices the install trees into the result root's artifacts with the
//!    plan's slicing, and writes `promotion.scm` with tree signatures, the
//!    jail's name as host name.
//!
//! The run's cleanup undoes what it set up, in reverse (`jail -r`,
//! `umount`, `umount`), then removes the directories it created in the
//! jail root as mount points (innermost first, each only if empty) and the
//! work directory; when an undo command fails, it keeps them all (they may
//! still be mounted).
//!
//! With `runner = "direct"` the same make invocations run on the host with
//! no jail: no isolation at all. It exists for machines without jails
//! (Linux CI) and is what fruix's tests run end to end; the jail commands
//! are checked there as recorded command lines, not run.
//!
//! # Configuration
//!
//! `runner` (`jail` or `direct`), `jail_root` (the jail's root directory, a
//! FreeBSD userland with `usr/bin/make`, never the host's `/`; default
//! [`DEFAULT_JAIL_ROOT`]) and `make` (default `make`, or `bmake` for a
//! direct runner off FreeBSD).

#![warn(missing_docs)]

pub mod mount_point;
pub mod plan;
pub mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fruix_core::at_exit::AtExit;
use fruix_core::collect::host_name;
use fruix_core::error::IoContext;
use fruix_core::executor::{
    CancellationToken, Capabilities, Executor, ExecutorConfig, ExecutorKind, Run, RunContext,
};
use fruix_core::process::{describe_status, Ending, Finished, Step, TERM_GRACE};
use fruix_core::{escape, Error, Result};
use fruix_freebsd::promotion::{write_promotion, Builder};
use fruix_freebsd::source::absolute_source;
use fruix_freebsd::work::{prepare_work_dir, remove_work_dir, work_dir_for, WORK_DIR_AT_EXIT};
use fruix_freebsd::BuildPlan;

use crate::plan::{Invocation, Jail, Layout, Purpose};
use crate::runner::{CommandRunner, SystemRunner};

/// The registered name.
pub const NAME: &str = "jail";

/// The executor version recorded in `promotion.scm`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The jail root used when none is configured.
pub const DEFAULT_JAIL_ROOT: &str = "/usr/local/fruix/jails/builder";

/// Where the build runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// Inside a FreeBSD jail.
    #[default]
    Jail,
    /// On the host, with no isolation (for machines without jails).
    Direct,
}

/// Configuration of the `jail` executor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// jail (default): build inside a jail; direct: run the same make steps
    /// on the host, without isolation (machines without jails)
    pub runner: Option<RunnerKind>,
    /// absolute root directory of the jail, a FreeBSD userland with
    /// usr/bin/make (default /usr/local/fruix/jails/builder)
    pub jail_root: Option<PathBuf>,
    /// the make program (default make; bmake for runner=direct off FreeBSD)
    pub make: Option<String>,
}

impl ExecutorConfig for JailConfig {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "builds FreeBSD base inside a throw-away FreeBSD jail (plugin example)";
    const KIND: ExecutorKind = ExecutorKind::Plugin;

    fn capabilities() -> Capabilities {
        Capabilities::local()
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        Ok(Arc::new(self.build_with(Arc::new(SystemRunner))?))
    }
}

fruix_core::register_executor!(JailConfig);

impl JailConfig {
    /// Like [`JailConfig::build`], running commands through `runner`.
    pub fn build_with(self, runner: Arc<dyn CommandRunner>) -> Result<JailExecutor> {
        let invalid = |message: String| Error::InvalidConfig {
            executor: NAME.to_string(),
            message,
        };
        let kind = self.runner.unwrap_or_default();
        let jail_root = match (kind, self.jail_root) {
            (RunnerKind::Direct, Some(_)) => {
                return Err(invalid(
                    "`jail_root` is only used with runner=jail; leave it out with runner=direct"
                        .into(),
                ))
            }
            (RunnerKind::Direct, None) => None,
            (RunnerKind::Jail, Some(root)) => Some(check_jail_root_value(root).map_err(invalid)?),
            (RunnerKind::Jail, None) => Some(PathBuf::from(DEFAULT_JAIL_ROOT)),
        };
        let make = match self.make {
            Some(m) if m.trim().is_empty() => {
                return Err(invalid(
                    "`make` is empty; name a make program or leave the key out".into(),
                ))
            }
            Some(m) => m,
            None if kind == RunnerKind::Direct && !cfg!(target_os = "freebsd") => "bmake".into(),
            None => "make".into(),
        };
        Ok(JailExecutor {
            runner,
            jail_root,
            make,
        })
    }
}

/// Builds FreeBSD base in a jail (or directly, see the crate docs).
#[derive(Debug)]
pub struct JailExecutor {
    runner: Arc<dyn CommandRunner>,
    /// `None` with the direct runner.
    jail_root: Option<PathBuf>,
    make: String,
}

impl JailExecutor {
    /// The layout of `ctx`'s run: jail, make, source, work directory.
    fn layout(&self, ctx: &RunContext) -> Result<Layout> {
        let source = absolute_source(ctx.request.source_dir())?;
        let root = std::fs::canonicalize(&ctx.result_root)
            .with_path("resolve result root", &ctx.result_root)?;
        Ok(Layout {
            jail: self.jail_root.as_ref().map(|jail_root| Jail {
                name: plan::jail_name(&ctx.request.run_id, &root),
                root: jail_root.clone(),
            }),
            build: fruix_freebsd::Layout {
                make: self.make.clone(),
                source_dir: source,
                work_dir: work_dir_for(&root, &ctx.request.run_id, None)?,
            },
        })
    }

    /// Runs `invocation` as an event stage, logging to `logs/STAGE.log`.
    async fn exec(
        &self,
        invocation: &Invocation,
        ctx: &RunContext,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let log = ctx.logs_dir()?.join(format!("{}.log", invocation.stage));
        let hint = match invocation.purpose {
            Purpose::Setup => {
                "jails need FreeBSD's jail(8), mount_nullfs(8) and root; elsewhere configure runner=direct"
            }
            Purpose::Build => "install the make program or set the executor's `make` configuration key",
        };
        let step = Step {
            stage: &invocation.stage,
            log: &log,
            events: &ctx.events,
            cancel,
            timeout: None,
            term_grace: TERM_GRACE,
            hint,
        };
        ctx.events
            .stage(&invocation.stage, async {
                let finished = self.runner.run(invocation, &step).await?;
                judge(invocation, finished, &log)
            })
            .await
    }

    /// Builds; what it sets up goes to `acquired`, for the cleanup to undo.
    async fn build(&self, ctx: &RunContext, acquired: &mut Acquired) -> Result<()> {
        let layout = self.layout(ctx)?;
        let plan = BuildPlan::new(&ctx.request, &layout.build)?;
        if let Some(jail) = &layout.jail {
            check_jail_root(&jail.root)?;
        }
        prepare_work_dir(&layout.build.work_dir)?;
        if let Some(jail) = &layout.jail {
            for path in [&layout.build.source_dir, &layout.build.work_dir] {
                mount_point::create(&jail.root, path, &mut acquired.mount_points)?;
            }
        }
        for (up, down) in plan::setup(&layout) {
            self.exec(&up, ctx, &ctx.cancel).await?;
            acquired.undo.push(down);
        }
        for step in plan::make_steps(layout.jail.as_ref(), &plan) {
            self.exec(&step, ctx, &ctx.cancel).await?;
        }
        let host = match &layout.jail {
            Some(jail) => jail.name.clone(),
            None => host_name()?,
        };
        let (work, root, slicing) = (
            layout.build.work_dir.clone(),
            ctx.result_root.clone(),
            plan.slicing,
        );
        ctx.events
            .stage(
                "collect",
                blocking(ctx, move || slicing.apply(&work, &root)),
            )
            .await?;
        let (root, request) = (ctx.result_root.clone(), ctx.request.clone());
        ctx.events
            .stage(
                "sign",
                blocking(ctx, move || {
                    let builder = Builder {
                        executor: NAME,
                        executor_version: VERSION,
                        host_name: &host,
                    };
                    write_promotion(&root, &request, builder).map(drop)
                }),
            )
            .await
    }
}

impl Executor for JailExecutor {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn capabilities(&self) -> Capabilities {
        JailConfig::capabilities()
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(JailRun {
            executor: self,
            acquired: Acquired::default(),
            _at_exit: None,
        })
    }
}

/// What a run set up, for its cleanup to undo.
#[derive(Debug, Default)]
struct Acquired {
    /// The undo command of each setup command that succeeded, in setup
    /// order.
    undo: Vec<Invocation>,
    /// The directories the run created in the jail root as mount points,
    /// outermost first ([`mount_point::create`]).
    mount_points: Vec<PathBuf>,
}

/// One run of the jail executor: what it set up.
struct JailRun<'a> {
    executor: &'a JailExecutor,
    acquired: Acquired,
    /// The work directory, named by a fast exit until the run is dropped
    /// (after its cleanup removed it, or kept it mounted).
    _at_exit: Option<AtExit>,
}

#[async_trait]
impl Run for JailRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let work_dir = self.executor.layout(ctx)?.build.work_dir;
        self._at_exit = Some(AtExit::left(WORK_DIR_AT_EXIT, &work_dir));
        self.executor.build(ctx, &mut self.acquired).await
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        let executor = self.executor;
        // Cleanup is what runs after a cancel: it is not cancellable itself.
        let never = CancellationToken::new();
        let mut first_error = None;
        for invocation in self.acquired.undo.iter().rev() {
            if let Err(e) = executor.exec(invocation, ctx, &never).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            // The work directory, and the mount points, may still be
            // mounted in the jail: keep them.
            return Err(e);
        }
        let layout = executor.layout(ctx)?;
        let work = layout.build.work_dir;
        let jail_root = layout.jail.map(|jail| jail.root);
        let mount_points = self.acquired.mount_points;
        tokio::task::spawn_blocking(move || {
            let unmounted = match &jail_root {
                Some(root) => mount_point::remove(root, &mount_points),
                None => Ok(()),
            };
            // One fruix did not make (refused by the build) is left as it is.
            let removed = remove_work_dir(&work).map(drop);
            unmounted.and(removed)
        })
        .await
        .map_err(|e| Error::system(format!("removing the work directory did not finish: {e}")))?
    }
}

/// Maps how a command ended to the run's result: a failed make step is a
/// build failure, a failed setup command a system failure.
fn judge(invocation: &Invocation, finished: Finished, log: &Path) -> Result<()> {
    let log_ref = finished.log_ref(log);
    match finished.ending {
        Ending::Cancelled => Err(Error::Cancelled),
        Ending::Exited(status) if status.success() => Ok(()),
        Ending::Exited(status) => match invocation.purpose {
            Purpose::Build => Err(Error::Build {
                step: invocation.stage.clone(),
                status: Some(describe_status(status)),
                log: log_ref,
            }),
            Purpose::Setup => Err(Error::System {
                message: format!(
                    "jail command `{}` failed with {}",
                    escape::text(&invocation.line()),
                    describe_status(status)
                ),
                log: Some(log_ref),
            }),
        },
        Ending::TimedOut(limit) => Err(Error::Timeout {
            what: format!("`{}`", escape::text(&invocation.line())),
            limit,
            detail: String::new(),
            log: Some(log_ref),
        }),
    }
}

/// Runs blocking `work` off the async threads, stopping the wait on cancel.
async fn blocking(
    ctx: &RunContext,
    work: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    let task = tokio::task::spawn_blocking(work);
    tokio::select! {
        joined = task => joined.map_err(|e| Error::system(format!("a file-system task did not finish: {e}")))?,
        () = ctx.cancel.cancelled() => Err(Error::Cancelled),
    }
}

/// `jail_root` as configured, or why it cannot be one: empty, relative,
/// or the host's root directory (which fruix would mount the source and
/// the work directory over, and build in with no isolation).
fn check_jail_root_value(root: PathBuf) -> Result<PathBuf, String> {
    if root.as_os_str().is_empty() {
        return Err(format!(
            "`jail_root` is empty; give the absolute root directory of the jail, or leave the key out for {DEFAULT_JAIL_ROOT}"
        ));
    }
    if !root.is_absolute() {
        return Err(format!(
            "`jail_root` {} is relative; give the absolute root directory of the jail",
            escape::path(&root)
        ));
    }
    if std::fs::canonicalize(&root).is_ok_and(|r| r == Path::new("/")) {
        return Err(format!(
            "`jail_root` {} is the host's root directory; give the root directory of a FreeBSD userland made for the jail (e.g. with `bsdinstall jail {DEFAULT_JAIL_ROOT}`), or configure runner=direct",
            escape::path(&root)
        ));
    }
    Ok(root)
}

fn check_jail_root(root: &Path) -> Result<()> {
    if root.join("usr/bin/make").is_file() {
        return Ok(());
    }
    let root = escape::path(root);
    Err(Error::system(format!(
        "jail root {root} has no usr/bin/make; give a FreeBSD userland as `jail_root` (e.g. made with `bsdinstall jail {root}`), or configure runner=direct"
    )))
}

/// Makes sure this crate, and with it its executor registration, is linked
/// into the calling binary. Does nothing at run time.
pub fn link() {}

/// The README's Rust examples, compiled and run as doctests of this crate
/// (the example plugin has every dependency they use).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fake::Recording;
    use fruix_core::executor::{run_executor, EventSink};
    use fruix_core::{Failure, Registry};
    use serde_json::json;

    /// A jail root that passes the check, a result root path, and the
    /// recording runner's executor.
    struct Setup {
        dir: tempfile::TempDir,
        runner: Arc<Recording>,
    }

    impl Setup {
        fn new(failing: &[&str]) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let make = dir.path().join("jail/usr/bin/make");
            std::fs::create_dir_all(make.parent().unwrap()).unwrap();
            std::fs::write(&make, "").unwrap();
            Setup {
                dir,
                runner: Arc::new(Recording::failing(failing)),
            }
        }

        async fn run(&self) -> Result<fruix_core::ResultRoot> {
            let config = JailConfig {
                jail_root: Some(self.dir.path().join("jail")),
                ..JailConfig::default()
            };
            let executor = config.build_with(self.runner.clone()).unwrap();
            let request = crate::plan::tests::request(&["world", "kernel"], None);
            run_executor(
                Arc::new(executor),
                request,
                &self.dir.path().join("result"),
                EventSink::discard(),
                CancellationToken::new(),
            )
            .await
        }

        /// What is in the jail root: only what the test made there when
        /// the cleanup removed the mount points.
        fn jail_listing(&self) -> Vec<PathBuf> {
            let mut out = Vec::new();
            let mut stack = vec![self.dir.path().join("jail")];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap().flatten() {
                    if e.file_type().unwrap().is_dir() {
                        stack.push(e.path());
                    }
                    out.push(
                        e.path()
                            .strip_prefix(self.dir.path())
                            .unwrap()
                            .to_path_buf(),
                    );
                }
            }
            out.sort();
            out
        }

        fn expected(&self) -> (String, String, String) {
            let base = self.dir.path().canonicalize().unwrap();
            let name = plan::jail_name("20260405T213444Z", &base.join("result"));
            let jail = self.dir.path().join("jail");
            let work = format!("{}/result.work", base.display());
            (name, jail.display().to_string(), work)
        }
    }

    #[tokio::test]
    async fn a_failing_make_step_is_a_build_failure_and_cleanup_undoes_the_jail() {
        let s = Setup::new(&["buildkernel"]);
        let e = s.run().await.unwrap_err();
        assert!(
            matches!(&e, Error::Build { step, .. } if step == "buildkernel"),
            "{e}"
        );
        let (name, jail, work) = s.expected();
        let jexec = format!(
            "/usr/sbin/jexec {name} /usr/bin/env -i PATH=/sbin:/bin:/usr/sbin:/usr/bin MAKEOBJDIRPREFIX={work}/obj \
             SRCCONF=/dev/null SRC_ENV_CONF=/dev/null __MAKE_CONF=/dev/null make -C /usr/src"
        );
        let expected = [
            format!("/sbin/mount -t nullfs -o ro /usr/src {jail}/usr/src"),
            format!("/sbin/mount -t nullfs {work} {jail}{work}"),
            format!(
                "/usr/sbin/jail -c name={name} path={jail} host.hostname={name} mount.devfs ip4=disable ip6=disable persist"
            ),
            format!("{jexec} -j8 buildworld KERNCONF=GENERIC TARGET=arm64 TARGET_ARCH=aarch64 -DNO_ROOT"),
            format!("{jexec} -j8 buildkernel KERNCONF=GENERIC TARGET=arm64 TARGET_ARCH=aarch64 -DNO_ROOT"),
            format!("/usr/sbin/jail -r {name}"),
            format!("/sbin/umount {jail}{work}"),
            format!("/sbin/umount {jail}/usr/src"),
        ];
        assert_eq!(s.runner.lines(), expected);
        assert!(
            !Path::new(&work).exists(),
            "cleanup removed the work directory"
        );
        assert_eq!(
            s.jail_listing(),
            ["jail/usr", "jail/usr/bin", "jail/usr/bin/make"].map(PathBuf::from),
            "cleanup removed the mount points it made"
        );
    }

    #[tokio::test]
    async fn mount_points_made_are_removed_when_the_first_mount_fails() {
        let s = Setup::new(&["mount-source"]);
        s.run().await.unwrap_err();
        assert_eq!(s.runner.lines().len(), 1);
        assert_eq!(
            s.jail_listing(),
            ["jail/usr", "jail/usr/bin", "jail/usr/bin/make"].map(PathBuf::from)
        );
    }

    #[tokio::test]
    async fn mount_points_are_kept_while_an_unmount_failed() {
        let s = Setup::new(&["buildkernel", "unmount-work"]);
        s.run().await.unwrap_err();
        let (_, _, work) = s.expected();
        let point = PathBuf::from("jail").join(work.strip_prefix('/').unwrap());
        assert!(s.jail_listing().contains(&point), "{:?}", s.jail_listing());
    }

    #[tokio::test]
    async fn a_failing_mount_is_a_system_failure_and_only_what_was_set_up_is_undone() {
        let s = Setup::new(&["mount-work"]);
        let e = s.run().await.unwrap_err();
        assert_eq!(e.failure(), Failure::System, "{e}");
        assert!(
            e.to_string()
                .contains("jail command `/sbin/mount -t nullfs"),
            "{e}"
        );
        let lines = s.runner.lines();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[2].starts_with("/sbin/umount ") && lines[2].ends_with("/jail/usr/src"));
    }

    #[tokio::test]
    async fn a_jail_root_without_make_is_a_system_failure_before_anything_runs() {
        let s = Setup::new(&[]);
        std::fs::remove_file(s.dir.path().join("jail/usr/bin/make")).unwrap();
        let e = s.run().await.unwrap_err();
        assert_eq!(e.failure(), Failure::System);
        assert!(e.to_string().contains("has no usr/bin/make"), "{e}");
        assert!(s.runner.lines().is_empty());
    }

    #[test]
    fn is_registered_as_a_plugin_with_its_keys() {
        link();
        let registry = Registry::compiled().unwrap();
        let entry = registry.get(NAME).unwrap();
        assert_eq!(entry.kind, ExecutorKind::Plugin);
        assert_eq!(entry.origin, "fruix-executor-jail");
        let keys: Vec<_> = entry.config_keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(keys, ["jail_root", "make", "runner"]);
        let executor = registry.create(NAME, serde_json::Value::Null).unwrap();
        assert_eq!((executor.name(), executor.version()), (NAME, VERSION));
        registry.create(NAME, json!({"runner": "direct"})).unwrap();
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        let registry = Registry::compiled().unwrap();
        for (config, expected) in [
            (json!({"runner": "vm"}), "unknown variant `vm`"),
            (
                json!({"jail_root": "jails/b"}),
                "`jail_root` jails/b is relative",
            ),
            (
                json!({"runner": "direct", "jail_root": "/j"}),
                "only used with runner=jail",
            ),
            (json!({"make": " "}), "`make` is empty"),
            (json!({"jail_root": ""}), "`jail_root` is empty;"),
            (
                json!({"jail_root": "j\n\u{1b}[31m"}),
                "`jail_root` j\\n\\033[31m is relative",
            ),
            (json!({"jail_root": "/"}), "is the host's root directory"),
            (
                json!({"jail_root": "/usr/.."}),
                "is the host's root directory",
            ),
            (
                json!({"jails": 1}),
                "unknown key `jails`; the keys of jail are",
            ),
        ] {
            let e = registry.create(NAME, config).unwrap_err();
            assert!(e.to_string().contains(expected), "{e}");
        }
    }
}
