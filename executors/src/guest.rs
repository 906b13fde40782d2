//! The two guest executors: `host-initiated` (the host drives each make step
//! in the guest over SSH) and `guest-self-hosted` (the guest's own `fruix`
//! runs the build driver; the host starts it and imports the result).
//!
//! # Contract
//!
//! Both take the same configuration ([`GuestConfig`]) naming the guest,
//! connect to it over SSH ([`crate::ssh`]), check that the request's source
//! store path exists there (the error names it), build into the guest's
//! state directory, `STATE/native-builds/RUN-ID/`, and import that result
//! root into the host's ([`crate::import`], retried up to
//! [`IMPORT_ATTEMPTS`] times on a dropped connection). Both end with the
//! same normalized result root, and for the same source and policy the same
//! tree signatures, as the `local` executor.
//!
//! - `guest-self-hosted` first runs `HELPER --version` in the guest and
//!   refuses a missing helper, or one older than [`MIN_HELPER_VERSION`], with
//!   a message saying what to install. Then it runs
//!   `HELPER native-build self-hosted --state-dir STATE` with the request as
//!   JSON on stdin, streams its output live as stage `guest-build`, and
//!   imports the root the helper printed. The guest signs every artifact;
//!   the import refuses a tree whose signature does not match.
//! - `host-initiated` needs only make, cc, tar, cp and a POSIX sh in the
//!   guest. It creates the guest result root (marked unfinished) and a work
//!   directory next to it, runs the build driver's plan
//!   ([`crate::driver::Driver::plan`]) step by step, each as its own stage,
//!   logged to the host's `logs/STEP.log`, slices the install trees into
//!   `artifacts/` with `cp -RPp`/`mv` exactly as the driver does, writes the
//!   guest's `promotion.scm`, clears the marker, removes the work
//!   directory, imports, then computes the tree signatures on the host and
//!   writes the host's `promotion.scm` (executor `host-initiated`, the guest's
//!   host name).
//! - Cancellation stops the remote command's whole process tree
//!   ([`crate::ssh::remote`]); cleanup removes a host-initiated work
//!   directory left in the guest.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::executor::{
    parse_config, Capabilities, ConfigKey, Executor, ExecutorKind, ExecutorRegistration,
    RunContext, Stream,
};
use fruix_core::machines::Machines;
use fruix_core::promotion::{base_probes, ArtifactEntry, PromotionMetadata};
use fruix_core::result_root::INCOMPLETE_MARKER;
use fruix_core::{Error, Result};
use tokio::io::AsyncWriteExt;

use crate::bounded::Tail;
use crate::driver::{self, Driver, KERNEL_DESTDIR, OBJ_DIR, WORLD_DESTDIR};
use crate::import::{self, Cap, ImportLimits, Staged};
use crate::ssh::{
    is_connection_lost, shell_quote, HostKeyPolicy, RemoteExit, SshOptions, SshSession, SshTarget,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_LINE_BYTES,
};

/// The executor version recorded in `promotion.scm`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The oldest guest helper `guest-self-hosted` works with.
pub const MIN_HELPER_VERSION: &str = "0.1.0";

/// The guest state directory when none is configured.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fruix";

/// The guest helper when none is configured (looked up in the guest's PATH).
pub const DEFAULT_HELPER: &str = "fruix";

/// How many times an import is tried when the connection drops.
pub const IMPORT_ATTEMPTS: u32 = 3;

/// How many last log lines a failed guest step reports.
const TAIL_LINES: usize = 20;

/// Which of the two guest executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    HostInitiated,
    SelfHosted,
}

impl Mode {
    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::HostInitiated => "host-initiated",
            Mode::SelfHosted => "guest-self-hosted",
        }
    }
}

/// Configuration of both guest executors (JSON object; unknown keys are
/// refused). Either `guest` or `machines` with `machine` names the guest.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// `user@host[:port]`.
    pub guest: Option<String>,
    /// Private key file.
    pub identity: Option<PathBuf>,
    /// OpenSSH known_hosts file (default `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// Record an unknown host key instead of refusing it.
    #[serde(default)]
    pub accept_new_host_key: bool,
    /// The guest's state directory (absolute, in the guest).
    pub guest_state_dir: Option<String>,
    /// The guest's fruix (guest-self-hosted).
    pub guest_helper: Option<String>,
    /// A machines file.
    pub machines: Option<PathBuf>,
    /// The machine of the machines file.
    pub machine: Option<String>,
    /// Environment variable holding the identity's passphrase.
    pub passphrase_env: Option<String>,
    /// Seconds to connect and authenticate.
    pub connect_timeout_secs: Option<u64>,
    /// The make program in the guest (host-initiated; default: bmake if the
    /// guest has it, else make).
    pub make: Option<String>,
    /// The import's caps ([`crate::import::limits`]); each defaults to
    /// [`ImportLimits::default`].
    pub import_max_bytes: Option<u64>,
    pub import_max_entries: Option<u64>,
    pub import_max_path_bytes: Option<u64>,
    pub import_max_name_bytes: Option<u64>,
    pub import_max_link_bytes: Option<u64>,
    pub import_max_header_bytes: Option<u64>,
    /// Cap on one line of remote output (default
    /// [`DEFAULT_MAX_LINE_BYTES`]).
    pub output_max_line_bytes: Option<u64>,
}

/// The configuration keys, for `fruix executors describe`.
pub const CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "guest",
        description: "the guest as user@host[:port] (or use machines + machine)",
    },
    ConfigKey {
        name: "identity",
        description:
            "private key file (ed25519, ECDSA or RSA; default: ssh-agent, then ~/.ssh/id_*)",
    },
    ConfigKey {
        name: "known_hosts",
        description: "OpenSSH known_hosts file (default ~/.ssh/known_hosts)",
    },
    ConfigKey {
        name: "accept_new_host_key",
        description:
            "record an unknown host key instead of refusing it (a changed key is always refused)",
    },
    ConfigKey {
        name: "guest_state_dir",
        description: "the guest's state directory (default /var/lib/fruix)",
    },
    ConfigKey {
        name: "guest_helper",
        description: "the guest's fruix, for guest-self-hosted (default fruix on the guest's PATH)",
    },
    ConfigKey {
        name: "machines",
        description: "a machines file (fruix-machines ...)",
    },
    ConfigKey {
        name: "machine",
        description: "the machine of the machines file to build on",
    },
    ConfigKey {
        name: "passphrase_env",
        description: "environment variable holding the identity's passphrase",
    },
    ConfigKey {
        name: "connect_timeout_secs",
        description: "seconds to connect and authenticate (default 30)",
    },
    ConfigKey {
        name: "make",
        description:
            "make program in the guest, for host-initiated (default: bmake if present, else make)",
    },
    ConfigKey {
        name: "import_max_bytes",
        description: "cap on the bytes of the import's tar stream (default 68719476736, 64 GiB)",
    },
    ConfigKey {
        name: "import_max_entries",
        description: "cap on the import's archive entries, directories it creates included (default 10000000)",
    },
    ConfigKey {
        name: "import_max_path_bytes",
        description: "cap on the bytes of one imported path (default 4095: PATH_MAX less its NUL)",
    },
    ConfigKey {
        name: "import_max_name_bytes",
        description: "cap on the bytes of one component of an imported path (default 255, NAME_MAX)",
    },
    ConfigKey {
        name: "import_max_link_bytes",
        description: "cap on the bytes of an imported symlink target or hard link name (default 4095)",
    },
    ConfigKey {
        name: "import_max_header_bytes",
        description: "cap on one extended tar header (pax, GNU long name or link) of the import (default 1048576, 1 MiB)",
    },
    ConfigKey {
        name: "output_max_line_bytes",
        description: "longer lines of guest output are cut, saying so (default 1048576, 1 MiB)",
    },
];

impl GuestConfig {
    /// Checks the configuration and makes the executor of `mode`.
    pub fn build(self, mode: Mode) -> Result<GuestExecutor> {
        let invalid = |message: String| Error::InvalidConfig {
            executor: mode.name().to_string(),
            message,
        };
        let (target, machine) = match (&self.guest, &self.machines, &self.machine) {
            (Some(guest), None, None) => (SshTarget::parse(guest).map_err(invalid)?, None),
            (None, Some(file), Some(name)) => {
                let machines = Machines::read(file)?;
                let m = machines.get(name)?.clone();
                let target = SshTarget {
                    user: m.user.clone(),
                    host: m.host.clone(),
                    port: m.port,
                };
                (target, Some(m))
            }
            (None, Some(_), None) => {
                return Err(invalid("`machines` is given without `machine`; name the machine to build on".into()))
            }
            (None, None, Some(_)) => {
                return Err(invalid("`machine` is given without `machines`; give the machines file".into()))
            }
            (Some(_), _, _) => {
                return Err(invalid("give either `guest` or `machines` with `machine`, not both".into()))
            }
            (None, None, None) => {
                return Err(invalid("no guest: give `guest` (user@host[:port], --guest) or `machines` and `machine` (--machines, --machine)".into()))
            }
        };
        let identity = self
            .identity
            .or_else(|| machine.as_ref().and_then(|m| m.private_key.clone()));
        let host_keys = match machine.as_ref().and_then(|m| m.host_key.clone()) {
            Some(pinned) => HostKeyPolicy::Pinned(pinned),
            None => HostKeyPolicy::known_hosts(self.known_hosts, self.accept_new_host_key),
        };
        let state_dir = self
            .guest_state_dir
            .or_else(|| machine.as_ref().and_then(|m| m.state_dir.clone()))
            .unwrap_or_else(|| DEFAULT_STATE_DIR.to_string());
        if !state_dir.starts_with('/') {
            return Err(invalid(format!(
                "`guest_state_dir` {state_dir} is relative; give an absolute directory in the guest"
            )));
        }
        let helper = self
            .guest_helper
            .or_else(|| machine.as_ref().and_then(|m| m.helper.clone()))
            .unwrap_or_else(|| DEFAULT_HELPER.to_string());
        let connect_timeout = match self.connect_timeout_secs {
            Some(0) => return Err(invalid("`connect_timeout_secs` must be at least 1".into())),
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        for (key, value) in [
            ("guest_helper", Some(&helper)),
            ("make", self.make.as_ref()),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(format!("`{key}` is empty")));
            }
        }
        let mut limits = ImportLimits::default();
        for (cap, value) in Cap::ALL.into_iter().zip([
            self.import_max_bytes,
            self.import_max_entries,
            self.import_max_path_bytes,
            self.import_max_name_bytes,
            self.import_max_link_bytes,
            self.import_max_header_bytes,
        ]) {
            match value {
                Some(0) => return Err(invalid(format!("`{}` must be at least 1", cap.key()))),
                Some(v) => limits.set(cap, v),
                None => {}
            }
        }
        let max_line_bytes = match self.output_max_line_bytes {
            Some(0) => return Err(invalid("`output_max_line_bytes` must be at least 1".into())),
            Some(v) => usize::try_from(v).unwrap_or(usize::MAX),
            None => DEFAULT_MAX_LINE_BYTES,
        };
        Ok(GuestExecutor {
            mode,
            ssh: SshOptions {
                target,
                identity,
                passphrase_env: self.passphrase_env,
                host_keys,
                connect_timeout,
                max_line_bytes,
            },
            state_dir: state_dir.trim_end_matches('/').to_string(),
            helper,
            make: self.make,
            limits,
            state: Mutex::default(),
        })
    }
}

/// What cleanup must undo.
#[derive(Debug, Default)]
struct RunState {
    session: Option<Arc<SshSession>>,
    /// A host-initiated work directory still in the guest.
    guest_work: Option<String>,
}

/// Builds in a guest over SSH; see the module docs.
#[derive(Debug)]
pub struct GuestExecutor {
    mode: Mode,
    ssh: SshOptions,
    state_dir: String,
    helper: String,
    make: Option<String>,
    limits: ImportLimits,
    state: Mutex<RunState>,
}

impl GuestExecutor {
    /// The guest result root of run `run_id`.
    pub fn guest_root(&self, run_id: &str) -> String {
        format!("{}/native-builds/{run_id}", self.state_dir)
    }

    async fn connect(&self, ctx: &RunContext) -> Result<Arc<SshSession>> {
        let session = SshSession::connect(&self.ssh, &ctx.events).await?;
        self.state.lock().expect("state lock").session = Some(session.clone());
        Ok(session)
    }

    /// Runs a small script; a non-zero exit is a system failure saying `what`.
    async fn check(&self, session: &SshSession, what: &str, script: &str) -> Result<String> {
        let out = session.output(script, None).await?;
        if out.exit.success() {
            Ok(out.stdout_text())
        } else {
            Err(Error::system(format!(
                "cannot {what} on {} ({}): {}",
                session.target(),
                out.exit.describe(),
                out.stderr_text()
            )))
        }
    }

    async fn check_source(&self, session: &SshSession, ctx: &RunContext) -> Result<()> {
        let source = &ctx.request.source.path;
        let out = session
            .output(&format!("test -d {}", shell_quote(source)), None)
            .await?;
        if out.exit.success() {
            return Ok(());
        }
        Err(Error::NotFound {
            path: PathBuf::from(source),
            hint: format!(
                "the declared source store path does not exist in the guest {}; copy the source there (same path) or give the guest's path with --source",
                session.target()
            ),
        })
    }

    /// Imports the guest root, reconnecting on a dropped connection.
    async fn import(&self, mut session: Arc<SshSession>, ctx: &RunContext) -> Result<Staged> {
        let remote = self.guest_root(&ctx.request.run_id);
        let mut attempt = 1;
        loop {
            match import::fetch(&session, &remote, ctx, &self.limits).await {
                Err(e) if is_connection_lost(&e) && attempt < IMPORT_ATTEMPTS => {
                    ctx.events.warn(format!(
                        "import attempt {attempt} of {IMPORT_ATTEMPTS} failed: {e}; retrying"
                    ));
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    attempt += 1;
                    session = match self.connect(ctx).await {
                        Ok(s) => s,
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

    async fn run_self_hosted(&self, session: Arc<SshSession>, ctx: &RunContext) -> Result<()> {
        let helper = shell_quote(&self.helper);
        ctx.events
            .stage("helper", async {
                let out = session.output(&format!("{helper} --version"), None).await?;
                check_helper_version(
                    &self.helper,
                    session.target(),
                    &out.exit,
                    &out.stdout_text(),
                    &out.stderr_text(),
                )
            })
            .await?;
        let request = serde_json::to_vec(&ctx.request)
            .map_err(|e| Error::system(format!("cannot encode the build request: {e}")))?;
        let script = format!(
            "exec {helper} native-build self-hosted --state-dir {}",
            shell_quote(&self.state_dir)
        );
        // Only the last line of stdout (the result root) is used.
        let (mut last_stdout, mut tail) = (None::<String>, Tail::new(TAIL_LINES));
        // The helper's exit is judged inside the stage, so that a failed
        // guest build ends its stage as failed.
        ctx.events
            .stage("guest-build", async {
                let exit = session
                    .stream(&script, Some(&request), &ctx.cancel, |stream, line| {
                        if stream == Stream::Stdout {
                            last_stdout = Some(line.to_string());
                        }
                        tail.push(line);
                        ctx.events.log("guest-build", stream, line);
                    })
                    .await?
                    .ok_or(Error::Cancelled)?;
                if !exit.success() {
                    return Err(helper_failure(&exit, std::mem::take(&mut tail)));
                }
                Ok(())
            })
            .await?;
        let expected = self.guest_root(&ctx.request.run_id);
        if last_stdout.as_deref() != Some(expected.as_str()) {
            return Err(Error::system(format!(
                "the guest helper reported result root {:?}, expected {expected}; is the helper a matching fruix?",
                last_stdout.unwrap_or_default()
            )));
        }
        let staged = ctx
            .events
            .stage("import", async {
                let mut staged = self.import(session.clone(), ctx).await?;
                staged.verify()?;
                Ok(staged)
            })
            .await?;
        staged.place(&ctx.result_root)
    }

    async fn run_host_initiated(&self, session: Arc<SshSession>, ctx: &RunContext) -> Result<()> {
        let request = &ctx.request;
        let root = self.guest_root(&request.run_id);
        let work = format!("{root}.work");
        let make = match &self.make {
            Some(m) => m.clone(),
            None => {
                self.check(
                    &session,
                    "find make (install bmake, or set the `make` configuration key)",
                    "command -v bmake || command -v make",
                )
                .await?
            }
        };
        let driver = Driver {
            executor: Mode::HostInitiated.name().to_string(),
            executor_version: VERSION.to_string(),
            make: make.clone(),
            source_dir: PathBuf::from(&request.source.path),
            work_dir: PathBuf::from(&work),
        };
        let steps = driver.plan(request)?;
        let (q_root, q_work) = (shell_quote(&root), shell_quote(&work));
        let prepare = format!(
            "set -e\nmkdir -p {parent}\nif [ -e {q_root} ]; then echo \"guest result root {root} already exists\" >&2; exit 1; fi\nmkdir {q_root}\n: > {q_root}/{INCOMPLETE_MARKER}\nrm -rf {q_work}\nmkdir -p {q_work}/{OBJ_DIR} {q_work}/{WORLD_DESTDIR} {q_work}/{KERNEL_DESTDIR}\nuname -n",
            parent = shell_quote(&format!("{}/native-builds", self.state_dir)),
        );
        let host_name = self
            .check(&session, "prepare the guest result root", &prepare)
            .await?;
        self.state.lock().expect("state lock").guest_work = Some(work.clone());
        let logs = ctx.logs_dir()?;
        for step in &steps {
            let log_path = logs.join(format!("{}.log", step.target));
            let script = step_script(&make, &request.source.path, step);
            ctx.events
                .stage(
                    step.target,
                    self.remote_step(&session, step.target, &script, &log_path, ctx),
                )
                .await?;
        }
        let collect = collect_script(&work, &root, &request.artifacts);
        ctx.events
            .stage("collect", async {
                self.check(&session, "collect the artifacts in the guest", &collect)
                    .await
            })
            .await?;
        let mut metadata = PromotionMetadata {
            executor: Mode::HostInitiated.name().to_string(),
            executor_version: VERSION.to_string(),
            run_id: request.run_id.clone(),
            guest_host_name: host_name,
            closure_path: None,
            development_profile_path: None,
            freebsd_base: request.freebsd_base.clone(),
            source_store: request.source.clone(),
            build_policy: request.policy.clone(),
            artifacts: request
                .artifacts
                .iter()
                .map(|name| ArtifactEntry {
                    name: name.clone(),
                    path: format!("artifacts/{name}"),
                    probe: base_probes(name)
                        .and_then(|p| p.first())
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    tree_signature: None,
                })
                .collect(),
        };
        let finish = format!(
            "set -e\ncat > {q_root}/promotion.scm\nrm -f {q_root}/{INCOMPLETE_MARKER}\nrm -rf {q_work}"
        );
        let out = session
            .output(&finish, Some(metadata.to_scheme().as_bytes()))
            .await?;
        if !out.exit.success() {
            return Err(Error::system(format!(
                "cannot write promotion.scm in the guest: {}",
                out.stderr_text()
            )));
        }
        self.state.lock().expect("state lock").guest_work = None;
        let mut staged = ctx
            .events
            .stage("import", self.import(session.clone(), ctx))
            .await?;
        ctx.events
            .stage("sign", async {
                for a in &mut metadata.artifacts {
                    let dir = staged.path().join(&a.path);
                    a.probe = probe_in(&a.name, &dir, &a.probe);
                    a.tree_signature = Some(staged.signature(&a.path)?);
                    staged.signed_here(&a.path);
                }
                metadata.write_to(staged.path())
            })
            .await?;
        staged.place(&ctx.result_root)
    }

    /// Runs one make step in the guest, streaming to events and `log_path`.
    async fn remote_step(
        &self,
        session: &SshSession,
        stage: &str,
        script: &str,
        log_path: &std::path::Path,
        ctx: &RunContext,
    ) -> Result<()> {
        use fruix_core::error::IoContext;
        let file = std::fs::File::create(log_path).with_path("create log file", log_path)?;
        let mut log = std::io::BufWriter::new(file);
        let mut tail = Tail::new(TAIL_LINES);
        let mut write_error = None;
        let exit = session
            .stream(script, None, &ctx.cancel, |stream, line| {
                use std::io::Write;
                if let Err(e) = writeln!(log, "{line}") {
                    write_error.get_or_insert(e);
                }
                tail.push(line);
                ctx.events.log(stage, stream, line);
            })
            .await?;
        let mut file = tokio::fs::File::from_std(
            log.into_inner()
                .map_err(|e| Error::io("write log file", log_path, e.into_error()))?,
        );
        file.flush().await.with_path("write log file", log_path)?;
        if let Some(e) = write_error {
            return Err(Error::io("write log file", log_path, e));
        }
        match exit {
            None => Err(Error::Cancelled),
            Some(exit) if exit.success() => Ok(()),
            Some(exit) => Err(Error::Build {
                step: stage.to_string(),
                status: Some(exit.describe()),
                log: Some(log_path.to_path_buf()),
                tail: tail.into_lines(),
            }),
        }
    }
}

/// The error for a helper that exited non-zero: its exit statuses are
/// fruix's (1 build failure, 3 system failure, 130 cancelled, else input).
fn helper_failure(exit: &RemoteExit, tail: Tail) -> Error {
    let tail = tail.into_lines();
    let step = tail.iter().rev().find_map(|l| {
        l.split("build step `")
            .nth(1)?
            .split('`')
            .next()
            .map(str::to_string)
    });
    let last = tail.last().cloned().unwrap_or_default();
    match exit {
        RemoteExit::Code(1) => Error::Build {
            step: step.unwrap_or_else(|| "guest-build".into()),
            status: Some(format!("in the guest: {}", exit.describe())),
            log: None,
            tail,
        },
        RemoteExit::Code(130) => Error::Cancelled,
        RemoteExit::Code(2) => Error::InvalidRequest {
            message: format!("the guest helper refused the request: {last}"),
        },
        _ => Error::system(format!(
            "the guest helper failed ({}): {last}",
            exit.describe()
        )),
    }
}

/// Checks the output of `HELPER --version` (`fruix X.Y.Z`).
fn check_helper_version(
    helper: &str,
    target: &SshTarget,
    exit: &RemoteExit,
    stdout: &str,
    stderr: &str,
) -> Result<()> {
    let install = format!("install fruix {MIN_HELPER_VERSION} or newer in the guest, or give its path with --guest-helper");
    if !exit.success() {
        return Err(Error::system(format!(
            "the guest helper `{helper}` cannot run on {target} ({}: {stderr}); {install}",
            exit.describe()
        )));
    }
    let version = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("fruix "))
        .map(str::trim);
    match version {
        Some(v) if version_at_least(v, MIN_HELPER_VERSION) => Ok(()),
        Some(v) => Err(Error::system(format!(
            "the guest helper `{helper}` on {target} is fruix {v}, older than {MIN_HELPER_VERSION}; {install}"
        ))),
        None => Err(Error::system(format!(
            "the guest helper `{helper}` on {target} is not fruix (`--version` said {stdout:?}); {install}"
        ))),
    }
}

/// Whether dotted version `v` is at least `min` (numeric parts compared).
fn version_at_least(v: &str, min: &str) -> bool {
    let parts =
        |s: &str| -> Vec<u64> { s.split(['.', '-']).map_while(|p| p.parse().ok()).collect() };
    parts(v) >= parts(min)
}

/// The POSIX sh script of one make step, environment as the driver sets it.
fn step_script(make: &str, source: &str, step: &driver::PlannedStep) -> String {
    let mut script = format!("cd {} || exit 1\n", shell_quote(source));
    for var in &step.env_removed {
        script.push_str(&format!("unset {var}\n"));
    }
    for (var, value) in &step.env_set {
        script.push_str(&format!("{var}={}; export {var}\n", shell_quote(value)));
    }
    script.push_str("exec ");
    script.push_str(&shell_quote(make));
    for arg in &step.args {
        script.push(' ');
        script.push_str(&shell_quote(arg));
    }
    script.push('\n');
    script
}

/// The POSIX sh script that slices the install trees of `work` into
/// `root/artifacts/`, as the driver's collect stage does.
fn collect_script(work: &str, root: &str, artifacts: &[String]) -> String {
    let wants = |a: &str| artifacts.iter().any(|x| x == a);
    let world = shell_quote(&format!("{work}/{WORLD_DESTDIR}"));
    let kernel = shell_quote(&format!("{work}/{KERNEL_DESTDIR}"));
    let out = shell_quote(&format!("{root}/artifacts"));
    // Parts of the world are copied when the world is wanted whole.
    let take = if wants("world") { "cp -RPp" } else { "mv" };
    let mut s = format!("set -e\nmkdir -p {out}\n");
    if wants("headers") {
        s.push_str(&format!(
            "mkdir -p {out}/headers/usr\n{take} {world}/usr/include {out}/headers/usr/include\n"
        ));
    }
    if wants("bootloader") {
        s.push_str(&format!(
            "mkdir -p {out}/bootloader/boot\nfor e in {world}/boot/* {world}/boot/.[!.]* {world}/boot/..?*; do\n  [ -e \"$e\" ] || [ -L \"$e\" ] || continue\n  case \"${{e##*/}}\" in kernel*) continue ;; esac\n  {take} \"$e\" {out}/bootloader/boot/\ndone\n"
        ));
    }
    if wants("kernel") {
        s.push_str(&format!(
            "mkdir -p {out}/kernel/boot\nmv {kernel}/boot/kernel {out}/kernel/boot/kernel\nif [ -e {kernel}/METALOG ]; then mv {kernel}/METALOG {out}/kernel/METALOG; fi\n"
        ));
    }
    if wants("world") {
        s.push_str(&format!("mv {world} {out}/world\n"));
    }
    s
}

/// The probe of `name` in `dir`: the first allowed one that is a file there.
fn probe_in(name: &str, dir: &std::path::Path, fallback: &str) -> String {
    base_probes(name)
        .unwrap_or_default()
        .iter()
        .find(|p| dir.join(p).symlink_metadata().is_ok_and(|m| m.is_file()))
        .map(|p| p.to_string())
        .unwrap_or_else(|| fallback.to_string())
}

#[async_trait]
impl Executor for GuestExecutor {
    fn name(&self) -> &str {
        self.mode.name()
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            remote: true,
            signs_at_build_site: self.mode == Mode::SelfHosted,
            cancellable: true,
            target_arches: Vec::new(),
        }
    }

    async fn run(&self, ctx: &RunContext) -> Result<()> {
        let session = ctx.events.stage("connect", self.connect(ctx)).await?;
        self.check_source(&session, ctx).await?;
        match self.mode {
            Mode::SelfHosted => self.run_self_hosted(session, ctx).await,
            Mode::HostInitiated => self.run_host_initiated(session, ctx).await,
        }
    }

    async fn cleanup(&self, ctx: &RunContext) -> Result<()> {
        let (session, work) = {
            let mut state = self.state.lock().expect("state lock");
            (state.session.take(), state.guest_work.take())
        };
        if let Some(work) = work {
            let session = match session.clone() {
                Some(s) => s,
                None => SshSession::connect(&self.ssh, &ctx.events).await?,
            };
            let removed = session
                .output(&format!("rm -rf {}", shell_quote(&work)), None)
                .await;
            if !removed.is_ok_and(|o| o.exit.success()) {
                // The connection may be gone: try once on a new one.
                let fresh = SshSession::connect(&self.ssh, &ctx.events).await?;
                self.check(
                    &fresh,
                    "remove the guest work directory",
                    &format!("rm -rf {}", shell_quote(&work)),
                )
                .await?;
                fresh.disconnect().await;
            }
        }
        if let Some(session) = session {
            session.disconnect().await;
        }
        Ok(())
    }
}

fn host_initiated_factory(config: serde_json::Value) -> Result<Arc<dyn Executor>> {
    let config: GuestConfig = parse_config(Mode::HostInitiated.name(), config)?;
    Ok(Arc::new(config.build(Mode::HostInitiated)?))
}

fn self_hosted_factory(config: serde_json::Value) -> Result<Arc<dyn Executor>> {
    let config: GuestConfig = parse_config(Mode::SelfHosted.name(), config)?;
    Ok(Arc::new(config.build(Mode::SelfHosted)?))
}

inventory::submit! {
    ExecutorRegistration {
        name: "host-initiated",
        description: "drives each make step in a guest over SSH, then imports the result root",
        version: VERSION,
        origin: env!("CARGO_PKG_NAME"),
        kind: ExecutorKind::BuiltIn,
        config_keys: CONFIG_KEYS,
        factory: host_initiated_factory,
    }
}

inventory::submit! {
    ExecutorRegistration {
        name: "guest-self-hosted",
        description: "runs fruix's build driver inside a guest (its own fruix), then imports the result root over SSH",
        version: VERSION,
        origin: env!("CARGO_PKG_NAME"),
        kind: ExecutorKind::BuiltIn,
        config_keys: CONFIG_KEYS,
        factory: self_hosted_factory,
    }
}

/// The build that `fruix native-build self-hosted` runs inside the guest: the
/// build driver on that machine, recorded as executor `guest-self-hosted`.
#[derive(Debug, Clone)]
pub struct InGuestBuild {
    /// The make program.
    pub make: String,
}

#[async_trait]
impl Executor for InGuestBuild {
    fn name(&self) -> &str {
        Mode::SelfHosted.name()
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            remote: false,
            signs_at_build_site: true,
            cancellable: true,
            target_arches: Vec::new(),
        }
    }

    async fn run(&self, ctx: &RunContext) -> Result<()> {
        let driver = Driver {
            executor: Mode::SelfHosted.name().to_string(),
            executor_version: VERSION.to_string(),
            make: self.make.clone(),
            source_dir: PathBuf::from(&ctx.request.source.path),
            work_dir: driver::work_dir_for(&ctx.result_root, &ctx.request.run_id, None)?,
        };
        driver.run(ctx).await.map(drop)
    }

    async fn cleanup(&self, ctx: &RunContext) -> Result<()> {
        let work = driver::work_dir_for(&ctx.result_root, &ctx.request.run_id, None)?;
        driver::remove_work_dir(&work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::Registry;
    use serde_json::json;

    #[test]
    fn both_are_registered_with_the_same_keys() {
        let registry = Registry::compiled().unwrap();
        for mode in [Mode::HostInitiated, Mode::SelfHosted] {
            let entry = registry.get(mode.name()).unwrap();
            assert_eq!(entry.config_keys.len(), CONFIG_KEYS.len());
            let e = registry
                .create(mode.name(), json!({"guest": "root@127.0.0.1:2222"}))
                .unwrap();
            assert_eq!(e.name(), mode.name());
            assert!(e.capabilities().remote);
        }
    }

    #[test]
    fn bad_configuration_names_the_problem() {
        let registry = Registry::compiled().unwrap();
        for (config, expected) in [
            (json!({}), "no guest"),
            (json!({"guest": "nouser"}), "user@host"),
            (
                json!({"guest": "a@b", "colour": 1}),
                "unknown field `colour`",
            ),
            (
                json!({"guest": "a@b", "guest_state_dir": "var"}),
                "relative",
            ),
            (json!({"machines": "/m.scm"}), "without `machine`"),
            (json!({"guest": "a@b", "machine": "x"}), "not both"),
            (
                json!({"guest": "a@b", "connect_timeout_secs": 0}),
                "at least 1",
            ),
            (
                json!({"guest": "a@b", "import_max_entries": 0}),
                "`import_max_entries` must be at least 1",
            ),
            (
                json!({"guest": "a@b", "output_max_line_bytes": 0}),
                "`output_max_line_bytes` must be at least 1",
            ),
        ] {
            let e = registry
                .create("host-initiated", config)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn import_caps_and_the_line_cap_are_configuration_keys_with_defaults() {
        let registry = Registry::compiled().unwrap();
        let keys = &registry.get("guest-self-hosted").unwrap().config_keys;
        // What `fruix executors describe` shows names each key's default.
        let described = |name: &str, default: u64| {
            let key = keys.iter().find(|k| k.name == name);
            let key = key.unwrap_or_else(|| panic!("{name} is not a configuration key"));
            assert!(
                key.description.contains(&format!("(default {default}")),
                "{name}: {}",
                key.description
            );
        };
        for cap in Cap::ALL {
            described(cap.key(), ImportLimits::default().get(cap));
        }
        described(crate::bounded::LINE_CAP_KEY, DEFAULT_MAX_LINE_BYTES as u64);

        let e = GuestConfig {
            guest: Some("a@b".into()),
            ..Default::default()
        }
        .build(Mode::SelfHosted)
        .unwrap();
        assert_eq!(e.limits, ImportLimits::default());
        assert_eq!(e.ssh.max_line_bytes, DEFAULT_MAX_LINE_BYTES);

        let config = json!({"guest": "a@b", "import_max_bytes": 1024, "import_max_entries": 7,
            "import_max_path_bytes": 6, "import_max_name_bytes": 5, "import_max_link_bytes": 4,
            "import_max_header_bytes": 3, "output_max_line_bytes": 2});
        let config: GuestConfig = parse_config("guest-self-hosted", config).unwrap();
        let e = config.build(Mode::SelfHosted).unwrap();
        let expected = ImportLimits {
            max_bytes: 1024,
            max_entries: 7,
            max_path_bytes: 6,
            max_name_bytes: 5,
            max_link_bytes: 4,
            max_header_bytes: 3,
        };
        assert_eq!(e.limits, expected);
        assert_eq!(e.ssh.max_line_bytes, 2);
    }

    #[test]
    fn machines_file_supplies_target_key_state_dir_and_helper() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("machines.scm");
        std::fs::write(
            &file,
            r#"(fruix-machines (machine (name "b1") (host "10.0.0.5") (port 2200) (user "fruix")
                 (private-key "/k") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ")
                 (state-dir "/srv/fruix/") (helper "/usr/local/bin/fruix")))"#,
        )
        .unwrap();
        let e = GuestConfig {
            machines: Some(file),
            machine: Some("b1".into()),
            ..Default::default()
        }
        .build(Mode::SelfHosted)
        .unwrap();
        assert_eq!(e.ssh.target.to_string(), "fruix@10.0.0.5:2200");
        assert_eq!(e.ssh.identity.as_deref(), Some(std::path::Path::new("/k")));
        assert!(matches!(e.ssh.host_keys, HostKeyPolicy::Pinned(_)));
        assert_eq!(e.guest_root("r1"), "/srv/fruix/native-builds/r1");
        assert_eq!(e.helper, "/usr/local/bin/fruix");
    }

    #[test]
    fn helper_versions_are_checked() {
        let t = SshTarget::parse("root@h").unwrap();
        let ok = RemoteExit::Code(0);
        check_helper_version("fruix", &t, &ok, "fruix 0.1.0\n", "").unwrap();
        check_helper_version("fruix", &t, &ok, "fruix 1.2.0", "").unwrap();
        let e = check_helper_version("fruix", &t, &ok, "fruix 0.0.9", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("older than 0.1.0"), "{e}");
        let e = check_helper_version("fruix", &t, &RemoteExit::Code(127), "", "fruix: not found")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot run") && e.contains("--guest-helper"),
            "{e}"
        );
        let e = check_helper_version("/bin/true", &t, &ok, "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not fruix"), "{e}");
    }

    #[test]
    fn step_script_sets_the_driver_environment() {
        let step = driver::PlannedStep {
            target: "installworld",
            args: vec![
                "installworld".into(),
                "DESTDIR=/w/world".into(),
                "X=a b".into(),
            ],
            env_set: vec![("SRCCONF".into(), "/dev/null".into())],
            env_removed: vec!["MAKEFLAGS"],
        };
        assert_eq!(
            step_script("bmake", "/usr/src", &step),
            "cd /usr/src || exit 1\nunset MAKEFLAGS\nSRCCONF=/dev/null; export SRCCONF\nexec bmake installworld DESTDIR=/w/world 'X=a b'\n"
        );
    }

    #[test]
    fn collect_script_slices_like_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let (work, root) = (dir.path().join("w"), dir.path().join("r"));
        for d in [
            "world/usr/include/sys",
            "world/boot/kernel",
            "world/boot/defaults",
            "world/bin",
            "kernel/boot/kernel",
        ] {
            std::fs::create_dir_all(work.join(d)).unwrap();
        }
        for f in [
            "world/usr/include/sys/param.h",
            "world/boot/loader",
            "world/boot/.hidden",
            "world/bin/sh",
            "kernel/boot/kernel/kernel",
            "kernel/METALOG",
        ] {
            std::fs::write(work.join(f), f).unwrap();
        }
        std::fs::create_dir(&root).unwrap();
        let all: Vec<String> = ["world", "kernel", "headers", "bootloader"]
            .map(String::from)
            .to_vec();
        let script = collect_script(work.to_str().unwrap(), root.to_str().unwrap(), &all);
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let a = root.join("artifacts");
        for f in [
            "headers/usr/include/sys/param.h",
            "bootloader/boot/loader",
            "bootloader/boot/.hidden",
            "bootloader/boot/defaults",
            "world/bin/sh",
            "world/boot/loader",
            "kernel/boot/kernel/kernel",
            "kernel/METALOG",
        ] {
            assert!(a.join(f).symlink_metadata().is_ok(), "{f} missing");
        }
        assert!(!a.join("bootloader/boot/kernel").exists());
    }
}
