//! The `Executor` trait, build requests, run events, and the runner that
//! wraps every executor with the same guarantees.
//!
//! An executor is one way of running a native FreeBSD base build: on this
//! machine, in a guest over SSH, in a jail, through an external script. Every
//! executor ends with the same normalized result root (see
//! [`crate::result_root`]). Callers never call an executor directly: they call
//! [`run_executor`], which
//!
//! 1. refuses a result root that already exists, creates it and marks it
//!    unfinished ([`crate::result_root::INCOMPLETE_MARKER`]);
//! 2. runs [`Executor::run`], passing cancellation through the context;
//! 3. always runs [`Executor::cleanup`], after success, failure or cancellation
//!    (a cleanup failure is reported as an event, never hiding the run's result);
//! 4. validates the result root and checks that its `promotion.scm` agrees with
//!    the request, and only then removes the unfinished marker.
//!
//! So what reaches the caller is a result root that passed the validator, and a
//! failed or cancelled run leaves a root that can never be promoted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

/// The cancellation token of [`RunContext::cancel`], re-exported so that
/// executor crates need not depend on `tokio-util` to name it.
pub use tokio_util::sync::CancellationToken;

use crate::error::{Error, IoContext, Result};
use crate::promotion::{check_name, BuildPolicy, FreebsdBase, PromotionMetadata, SourceStore};
use crate::result_root::{self, ResultRoot, INCOMPLETE_MARKER};

/// What to build. Carries everything `promotion.scm` needs from the caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildRequest {
    /// The run id (a UTC timestamp like `20260405T213444Z`).
    pub run_id: String,
    pub freebsd_base: FreebsdBase,
    /// The source tree, as a path on the machine that builds.
    pub source: SourceStore,
    pub policy: BuildPolicy,
    /// The artifacts requested, in order (usually the base four).
    pub artifacts: Vec<String>,
}

impl BuildRequest {
    /// Checks the request's names and values before anything runs.
    pub fn check(&self) -> Result<()> {
        let invalid = |message: String| Error::InvalidRequest { message };
        check_name("run id", &self.run_id).map_err(invalid)?;
        check_name("FreeBSD version", &self.freebsd_base.version).map_err(invalid)?;
        if self.artifacts.is_empty() {
            return Err(invalid("no artifact requested".into()));
        }
        for a in &self.artifacts {
            check_name("artifact name", a).map_err(invalid)?;
        }
        if self.policy.jobs == 0 {
            return Err(invalid("jobs must be at least 1".into()));
        }
        if self.policy.kernconf.is_empty() || self.policy.kernconf.contains(['/', ' ']) {
            return Err(invalid(format!(
                "kernconf {:?} is not a kernel configuration name",
                self.policy.kernconf
            )));
        }
        Ok(())
    }
}

/// The four artifacts of the FreeBSD base set, in their usual order.
pub fn base_artifacts() -> Vec<String> {
    crate::promotion::BASE_ARTIFACTS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Something that happened during a run, in the order it happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A stage (`buildworld`, `import`, `collect`, ...) started.
    StageStarted { stage: String },
    /// One line of output of the current stage.
    Log {
        stage: String,
        stream: Stream,
        line: String,
    },
    /// Progress within a stage (`done` of `total` units, e.g. bytes).
    Progress {
        stage: String,
        done: u64,
        total: Option<u64>,
    },
    /// A stage ended.
    StageFinished {
        stage: String,
        ok: bool,
        elapsed_ms: u64,
    },
    /// Something worth telling that did not stop the run (a failed cleanup).
    Warning { message: String },
}

/// Where executors send [`Event`]s. Cheap to clone; sending never blocks.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl EventSink {
    /// A sink and the receiver that gets its events.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink { tx: Some(tx) }, rx)
    }

    /// A sink that drops every event.
    pub fn discard() -> EventSink {
        EventSink { tx: None }
    }

    /// Sends `event` (ignored when nobody listens any more).
    pub fn emit(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// Sends a log line of `stage`.
    pub fn log(&self, stage: &str, stream: Stream, line: impl Into<String>) {
        self.emit(Event::Log {
            stage: stage.to_string(),
            stream,
            line: line.into(),
        });
    }

    /// Sends a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning {
            message: message.into(),
        });
    }

    /// Runs `work` as stage `stage`: emits its start, then its end with the
    /// outcome and elapsed time.
    pub async fn stage<T, F>(&self, stage: &str, work: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.emit(Event::StageStarted {
            stage: stage.to_string(),
        });
        let started = Instant::now();
        let result = work.await;
        self.emit(Event::StageFinished {
            stage: stage.to_string(),
            ok: result.is_ok(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        result
    }
}

/// What an executor can do, declared up front so callers can check it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// Builds on another machine (needs a guest or machines file).
    pub remote: bool,
    /// Computes tree signatures where it builds, so transfer is verified.
    pub signs_at_build_site: bool,
    /// Stops the build's whole process tree on cancellation.
    pub cancellable: bool,
    /// Target architectures it can build; empty means any.
    pub target_arches: Vec<String>,
}

/// Everything an executor gets for one run.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub request: BuildRequest,
    /// The result root to fill: it exists, is empty but for the unfinished
    /// marker, and is on this machine.
    pub result_root: PathBuf,
    pub events: EventSink,
    /// Cancelled on Ctrl-C, SIGTERM, fail-fast, or by the caller. Executors stop
    /// their work (the whole process tree) and return [`Error::Cancelled`].
    pub cancel: CancellationToken,
}

impl RunContext {
    /// The `logs/` directory of the result root (created on first use).
    pub fn logs_dir(&self) -> Result<PathBuf> {
        let dir = self.result_root.join("logs");
        std::fs::create_dir_all(&dir).with_path("create logs directory", &dir)?;
        Ok(dir)
    }
}

/// One way of running a native FreeBSD base build.
///
/// # Contract
///
/// - [`Executor::run`] builds what `ctx.request` asks for and leaves a
///   normalized result root at `ctx.result_root`: `promotion.scm` (naming this
///   executor's [`name`](Executor::name) and [`version`](Executor::version), the
///   request's run id, base, source and policy, and every requested artifact)
///   and `artifacts/<name>/` trees. It may write `logs/`.
/// - It reports stages and log lines through `ctx.events`, each stage's start
///   before its logs before its end.
/// - A failing build step returns [`Error::Build`] (step, status, last log
///   lines, log path); trouble with machines, connections, disks or helpers
///   returns [`Error::System`] or [`Error::Io`]; cancellation (`ctx.cancel`)
///   stops all work it started and returns [`Error::Cancelled`] promptly.
/// - [`Executor::cleanup`] releases what `run` acquired (connections, jails,
///   VMs, temporary files). It is called exactly once per run, whatever `run`
///   returned, including when `run` was cancelled or never got far.
///
/// Executors do not validate their own output, create the result root, or
/// handle the unfinished marker: [`run_executor`] does that for all of them.
#[async_trait]
pub trait Executor: fmt::Debug + Send + Sync {
    /// The registered name (`local`, `host-initiated`, ...).
    fn name(&self) -> &str;

    /// The executor's version, recorded as `executor-version`.
    fn version(&self) -> &str;

    /// What this executor can do.
    fn capabilities(&self) -> Capabilities;

    /// Runs the build and fills the result root.
    async fn run(&self, ctx: &RunContext) -> Result<()>;

    /// Releases what `run` acquired; called once per run, always.
    async fn cleanup(&self, ctx: &RunContext) -> Result<()>;
}

/// How long a cancelled executor gets to stop by itself before its run is dropped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// Runs `executor` for `request` into `result_root` with the guarantees listed
/// in the module docs, and returns the validated result root.
pub async fn run_executor(
    executor: Arc<dyn Executor>,
    request: BuildRequest,
    result_root: &Path,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<ResultRoot> {
    request.check()?;
    prepare_result_root(result_root)?;
    let ctx = RunContext {
        request,
        result_root: result_root.to_path_buf(),
        events,
        cancel,
    };
    let outcome = run_cancellable(executor.as_ref(), &ctx).await;
    if let Err(e) = executor.cleanup(&ctx).await {
        ctx.events.warn(format!(
            "cleanup of executor {} failed: {e}",
            executor.name()
        ));
    }
    outcome?;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let root = result_root::validate_with(result_root, true)?;
    check_agreement(
        executor.as_ref(),
        &ctx.request,
        root.metadata(),
        result_root,
    )?;
    let marker = result_root.join(INCOMPLETE_MARKER);
    std::fs::remove_file(&marker).with_path("remove unfinished marker", &marker)?;
    crate::fsutil::sync_dir(result_root)?;
    Ok(root)
}

async fn run_cancellable(executor: &dyn Executor, ctx: &RunContext) -> Result<()> {
    let run = executor.run(ctx);
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result,
        () = ctx.cancel.cancelled() => {
            // Give the executor time to stop its process tree by itself.
            match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                Ok(Err(e)) if !matches!(e, Error::Cancelled) => Err(e),
                _ => Err(Error::Cancelled),
            }
        }
    }
}

fn prepare_result_root(root: &Path) -> Result<()> {
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).with_path("create parent of result root", parent)?;
    }
    // An empty directory made by run id allocation is fine; anything else is not.
    let existing_empty = std::fs::read_dir(root)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !existing_empty {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(root)
            .map_err(|e| {
                match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                path: root.to_path_buf(),
                hint:
                    "a result root is never overwritten; choose another --result-root or remove it"
                        .into(),
            },
            _ => Error::io("create result root", root, e),
        }
            })?;
    }
    // Only this user may change the root before it is promoted, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .with_path("set mode of", root)?;
    let marker = root.join(INCOMPLETE_MARKER);
    std::fs::write(
        &marker,
        b"this run has not finished; this result root cannot be promoted\n",
    )
    .with_path("write unfinished marker", &marker)
}

/// Checks that `promotion.scm` agrees with the request and the executor.
pub fn check_agreement(
    executor: &dyn Executor,
    request: &BuildRequest,
    m: &PromotionMetadata,
    root: &Path,
) -> Result<()> {
    let path = root.join(crate::promotion::PROMOTION_FILE);
    let mismatch = |field: &str, found: String, expected: String| Error::InvalidMetadata {
        path: path.clone(),
        field: field.to_string(),
        line: None,
        message: format!(
            "says {found}, but the request was {expected}; the executor wrote wrong metadata"
        ),
    };
    if m.executor != executor.name() {
        return Err(mismatch(
            "executor",
            m.executor.clone(),
            executor.name().to_string(),
        ));
    }
    if m.run_id != request.run_id {
        return Err(mismatch("run-id", m.run_id.clone(), request.run_id.clone()));
    }
    if m.freebsd_base != request.freebsd_base {
        return Err(mismatch(
            "freebsd-base",
            format!("{:?}", m.freebsd_base),
            format!("{:?}", request.freebsd_base),
        ));
    }
    if m.build_policy != request.policy {
        return Err(mismatch(
            "build-policy",
            format!("{:?}", m.build_policy),
            format!("{:?}", request.policy),
        ));
    }
    if m.source_store.path != request.source.path {
        return Err(mismatch(
            "source-store.path",
            m.source_store.path.clone(),
            request.source.path.clone(),
        ));
    }
    if let Some(missing) = request.artifacts.iter().find(|a| m.artifact(a).is_none()) {
        return Err(Error::InvalidMetadata {
            path,
            field: "artifacts".into(),
            line: None,
            message: format!("requested artifact {missing} is not in the result root"),
        });
    }
    Ok(())
}

/// Whether an executor is compiled in, a plugin, or an external command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    BuiltIn,
    Plugin,
    External,
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutorKind::BuiltIn => "built-in",
            ExecutorKind::Plugin => "plugin",
            ExecutorKind::External => "external",
        })
    }
}

/// One configuration key an executor accepts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ConfigKey {
    pub name: &'static str,
    pub description: &'static str,
}

/// A configuration key as the registry lists it (owned, so that executors
/// added at run time, like external ones, can declare theirs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigKeyEntry {
    pub name: String,
    pub description: String,
}

impl From<&ConfigKey> for ConfigKeyEntry {
    fn from(key: &ConfigKey) -> Self {
        ConfigKeyEntry {
            name: key.name.to_string(),
            description: key.description.to_string(),
        }
    }
}

/// Makes an executor from its configuration (a JSON object; each executor
/// deserializes it into its own config struct with unknown keys refused).
pub type Factory = Arc<dyn Fn(serde_json::Value) -> Result<Arc<dyn Executor>> + Send + Sync>;

/// A compiled-in registration, submitted with `inventory::submit!`.
///
/// ```ignore
/// inventory::submit! {
///     fruix_core::executor::ExecutorRegistration {
///         name: "jail",
///         description: "runs the build driver inside a FreeBSD jail",
///         version: env!("CARGO_PKG_VERSION"),
///         origin: env!("CARGO_PKG_NAME"),
///         kind: fruix_core::executor::ExecutorKind::Plugin,
///         config_keys: &[],
///         factory: jail_factory,
///     }
/// }
/// ```
pub struct ExecutorRegistration {
    pub name: &'static str,
    pub description: &'static str,
    pub version: &'static str,
    /// Who registered it (a crate name), named when two registrations clash.
    pub origin: &'static str,
    pub kind: ExecutorKind,
    pub config_keys: &'static [ConfigKey],
    pub factory: fn(serde_json::Value) -> Result<Arc<dyn Executor>>,
}

inventory::collect!(ExecutorRegistration);

/// A registry entry: a compiled registration or one added at run time
/// (external executors).
#[derive(Clone)]
pub struct RegistryEntry {
    pub name: String,
    pub description: String,
    pub version: String,
    pub origin: String,
    pub kind: ExecutorKind,
    pub config_keys: Vec<ConfigKeyEntry>,
    pub factory: Factory,
}

impl fmt::Debug for RegistryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryEntry")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The executors known to this process, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, RegistryEntry>,
}

impl Registry {
    /// Every executor registered through `inventory`; two registrations with
    /// one name are an error naming both.
    pub fn compiled() -> Result<Registry> {
        let mut registry = Registry::default();
        for r in inventory::iter::<ExecutorRegistration> {
            let factory = r.factory;
            registry.add(RegistryEntry {
                name: r.name.to_string(),
                description: r.description.to_string(),
                version: r.version.to_string(),
                origin: r.origin.to_string(),
                kind: r.kind,
                config_keys: r.config_keys.iter().map(ConfigKeyEntry::from).collect(),
                factory: Arc::new(factory),
            })?;
        }
        Ok(registry)
    }

    /// Adds an entry; a name already present is an error naming both origins.
    pub fn add(&mut self, entry: RegistryEntry) -> Result<()> {
        if let Some(existing) = self.entries.get(&entry.name) {
            return Err(Error::DuplicateExecutor {
                name: entry.name.clone(),
                first: format!("{} ({})", existing.origin, existing.kind),
                second: format!("{} ({})", entry.origin, entry.kind),
            });
        }
        self.entries.insert(entry.name.clone(), entry);
        Ok(())
    }

    /// The entry named `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> Result<&RegistryEntry> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::UnknownExecutor {
                name: name.to_string(),
                available: self.names(),
            })
    }

    /// Makes executor `name` from `config`.
    pub fn create(&self, name: &str, config: serde_json::Value) -> Result<Arc<dyn Executor>> {
        (self.get(name)?.factory)(config)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &RegistryEntry> {
        self.entries.values()
    }
}

/// Deserializes an executor's config object into its config struct, naming the
/// executor in errors (unknown keys are refused by `deny_unknown_fields`).
pub fn parse_config<T: serde::de::DeserializeOwned>(
    executor: &str,
    config: serde_json::Value,
) -> Result<T> {
    let config = if config.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        config
    };
    serde_json::from_value(config).map_err(|e| Error::InvalidConfig {
        executor: executor.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::write_sample_result_root;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the in-tree test executor does when run.
    #[derive(Debug, Clone, Copy, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Behaviour {
        Succeed,
        FailBuild,
        Hang,
        WrongRunId,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestConfig {
        behaviour: Behaviour,
    }

    static CLEANUPS: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug)]
    struct TestExecutor {
        behaviour: Behaviour,
    }

    #[async_trait]
    impl Executor for TestExecutor {
        fn name(&self) -> &str {
            "core-test"
        }
        fn version(&self) -> &str {
            "0.0.1"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn run(&self, ctx: &RunContext) -> Result<()> {
            ctx.events
                .stage("build", async {
                    ctx.events.log("build", Stream::Stdout, "building");
                    match self.behaviour {
                        Behaviour::Succeed | Behaviour::WrongRunId => {
                            let run_id = match self.behaviour {
                                Behaviour::WrongRunId => "19700101T000000Z",
                                _ => ctx.request.run_id.as_str(),
                            };
                            let mut m = write_sample_result_root(
                                &ctx.result_root,
                                "core-test",
                                run_id,
                                true,
                            )?;
                            m.build_policy = ctx.request.policy.clone();
                            m.freebsd_base = ctx.request.freebsd_base.clone();
                            m.write_to(&ctx.result_root)
                        }
                        Behaviour::FailBuild => Err(Error::Build {
                            step: "buildworld".into(),
                            status: Some("exit status 2".into()),
                            log: None,
                            tail: vec!["error".into()],
                        }),
                        Behaviour::Hang => {
                            ctx.cancel.cancelled().await;
                            Err(Error::Cancelled)
                        }
                    }
                })
                .await
        }
        async fn cleanup(&self, _ctx: &RunContext) -> Result<()> {
            CLEANUPS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn test_factory(config: serde_json::Value) -> Result<Arc<dyn Executor>> {
        let config: TestConfig = parse_config("core-test", config)?;
        Ok(Arc::new(TestExecutor {
            behaviour: config.behaviour,
        }))
    }

    inventory::submit! {
        ExecutorRegistration {
            name: "core-test",
            description: "in-tree test executor of fruix-core",
            version: "0.0.1",
            origin: "fruix-core tests",
            kind: ExecutorKind::BuiltIn,
            config_keys: &[ConfigKey { name: "behaviour", description: "succeed, fail-build, hang or wrong-run-id" }],
            factory: test_factory,
        }
    }

    fn request() -> BuildRequest {
        let m = crate::testing::sample_metadata("core-test", "20260405T213444Z");
        BuildRequest {
            run_id: m.run_id,
            freebsd_base: m.freebsd_base,
            source: m.source_store,
            policy: m.build_policy,
            artifacts: base_artifacts(),
        }
    }

    fn executor(behaviour: &str) -> Arc<dyn Executor> {
        Registry::compiled()
            .unwrap()
            .create("core-test", serde_json::json!({ "behaviour": behaviour }))
            .unwrap()
    }

    async fn run(
        behaviour: &str,
        cancel: CancellationToken,
    ) -> (Result<ResultRoot>, Vec<Event>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (events, mut rx) = EventSink::channel();
        let result = run_executor(
            executor(behaviour),
            request(),
            &dir.path().join("root"),
            events,
            cancel,
        )
        .await;
        let mut seen = Vec::new();
        while let Ok(e) = rx.try_recv() {
            seen.push(e);
        }
        (result, seen, dir)
    }

    #[test]
    fn inventory_registration_is_found_by_name() {
        let registry = Registry::compiled().unwrap();
        let entry = registry.get("core-test").unwrap();
        assert_eq!(entry.description, "in-tree test executor of fruix-core");
        assert_eq!(executor("succeed").name(), "core-test");
    }

    #[test]
    fn unknown_name_lists_the_registered_ones() {
        let err = Registry::compiled().unwrap().get("jial").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown executor `jial`; available executors: core-test"),
            "{err}"
        );
    }

    #[test]
    fn unknown_config_key_is_refused() {
        let err = Registry::compiled()
            .unwrap()
            .create(
                "core-test",
                serde_json::json!({ "behaviour": "succeed", "colour": "red" }),
            )
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn duplicate_name_names_both_sources() {
        let mut registry = Registry::compiled().unwrap();
        let mut twin = registry.get("core-test").unwrap().clone();
        twin.origin = "/etc/fruix/executors.scm".into();
        twin.kind = ExecutorKind::External;
        let err = registry.add(twin).unwrap_err().to_string();
        assert!(
            err.contains("fruix-core tests (built-in)")
                && err.contains("/etc/fruix/executors.scm (external)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn successful_run_validates_and_clears_the_marker() {
        let (result, events, dir) = run("succeed", CancellationToken::new()).await;
        let root = result.unwrap();
        assert!(!dir.path().join("root").join(INCOMPLETE_MARKER).exists());
        assert_eq!(root.metadata().run_id, "20260405T213444Z");
        assert!(matches!(&events[0], Event::StageStarted { stage } if stage == "build"));
        assert!(matches!(&events[1], Event::Log { line, .. } if line == "building"));
        assert!(matches!(&events[2], Event::StageFinished { ok: true, .. }));
    }

    #[tokio::test]
    async fn build_failure_keeps_the_marker_and_runs_cleanup() {
        let before = CLEANUPS.load(Ordering::SeqCst);
        let (result, _, dir) = run("fail-build", CancellationToken::new()).await;
        let err = result.unwrap_err();
        assert_eq!(err.failure(), crate::Failure::Build);
        assert!(dir.path().join("root").join(INCOMPLETE_MARKER).exists());
        assert!(CLEANUPS.load(Ordering::SeqCst) > before);
    }

    #[tokio::test]
    async fn cancellation_stops_the_run_and_runs_cleanup() {
        let before = CLEANUPS.load(Ordering::SeqCst);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let dir = tempfile::tempdir().unwrap();
        let (events, mut rx) = EventSink::channel();
        // Cancelled once the build is under way (its first log line), not after a delay.
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if matches!(event, Event::Log { .. }) {
                    trigger.cancel();
                }
            }
        });
        let result = run_executor(
            executor("hang"),
            request(),
            &dir.path().join("root"),
            events,
            cancel,
        )
        .await;
        assert!(matches!(result, Err(Error::Cancelled)));
        assert!(dir.path().join("root").join(INCOMPLETE_MARKER).exists());
        assert!(CLEANUPS.load(Ordering::SeqCst) > before);
    }

    #[tokio::test]
    async fn metadata_disagreeing_with_the_request_is_refused() {
        let (result, _, _dir) = run("wrong-run-id", CancellationToken::new()).await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("run-id") && err.contains("19700101T000000Z"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn existing_result_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("keep"), b"x").unwrap();
        let err = run_executor(
            executor("succeed"),
            request(),
            &root,
            EventSink::discard(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert!(root.join("keep").exists());
    }

    #[test]
    fn result_root_is_private_to_its_user_whatever_it_was_created_with() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in ["made-by-run-id-allocation", "new"] {
            let root = dir.path().join(name);
            if name != "new" {
                std::fs::create_dir(&root).unwrap();
                std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
            prepare_result_root(&root).unwrap();
            let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{name}");
        }
    }
}
