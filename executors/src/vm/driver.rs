//! What a VM driver is: the steps of a throw-away guest's life, and the
//! commands they run on a [`Host`] (this machine, or an XCP-ng pool master),
//! so that the bhyve and XCP-ng drivers can be checked as recorded plans
//! (the recording host is in the tests).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use fruix_core::vm::VmSpec;
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

/// One guest: its name and where its files go on this machine.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `fruix-RUN_ID-SUFFIX` ([`super::executor::guest_name`]): names the
    /// guest, its disk and its files.
    pub name: String,
    /// A directory of this machine for the guest's files (overlay, pid
    /// files, sockets), removed after teardown.
    pub work_dir: PathBuf,
    /// Where the guest's serial console is written (within a cap, its
    /// last part kept, by the QEMU driver: see [`super::console`]).
    pub console: PathBuf,
}

/// Where a booted guest's sshd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address to connect to: `127.0.0.1` for QEMU, the machine's
    /// configured address for bhyve, the first IPv4 address the guest tools
    /// report for XCP-ng.
    pub host: String,
    /// The TCP port: for QEMU a free port of 127.0.0.1 forwarded to the
    /// guest's 22, else 22.
    pub port: u16,
}

/// The life of a throw-away guest, step by step. The lifecycle calls
/// [`VmDriver::stop`] whenever [`VmDriver::boot`] was attempted and
/// [`VmDriver::destroy`] whenever [`VmDriver::prepare`] was, so each must
/// undo a step that failed half-way, and tolerate having nothing to undo.
#[async_trait]
pub trait VmDriver: fmt::Debug + Send + Sync {
    /// Makes the throw-away disk (a qcow2 overlay, a ZFS clone, a VM
    /// clone). When `cancel` fires first, [`Error::Cancelled`], returned at
    /// once (a command under way stopped): what was made is the teardown's
    /// to destroy.
    async fn prepare(&self, vm: &Instance, cancel: &CancellationToken) -> Result<()>;
    /// Boots the guest; where its sshd will listen. When `cancel` fires
    /// first, [`Error::Cancelled`], returned at once (a command under way
    /// stopped): what was started is the teardown's to stop.
    async fn boot(&self, vm: &Instance, cancel: &CancellationToken) -> Result<Endpoint>;
    /// Whether the guest is still running (a guest that stopped while
    /// booting is not waited for).
    async fn running(&self, vm: &Instance) -> bool;
    /// Powers the guest off: ACPI first, a hard stop after `grace`.
    async fn stop(&self, vm: &Instance, grace: Duration) -> Result<()>;
    /// [`VmDriver::stop`], stopping the guest hard at once when `cancel`
    /// fires, before or during the grace period (Ctrl-C while a guest
    /// ignores its power button). The lifecycle calls this one. The
    /// default stops hard at once when `cancel` has fired already; when it
    /// fires during the grace period, it drops that stop (a command it was
    /// running is stopped as a dropped command is) and stops hard: a driver
    /// with a better way overrides it.
    async fn stop_until(
        &self,
        vm: &Instance,
        grace: Duration,
        cancel: &CancellationToken,
    ) -> Result<()> {
        if cancel.is_cancelled() || grace.is_zero() {
            return self.stop(vm, Duration::ZERO).await;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => self.stop(vm, Duration::ZERO).await,
            stopped = self.stop(vm, grace) => stopped,
        }
    }
    /// Destroys the throw-away disk.
    async fn destroy(&self, vm: &Instance) -> Result<()>;
    /// The driver's own log on this machine, if it has one (QEMU's stdout
    /// and stderr): a guest that stops while booting quotes its last
    /// lines, and it is kept beside the console as `RESULT_ROOT/logs/NAME`.
    fn own_log(&self, _vm: &Instance) -> Option<PathBuf> {
        None
    }
    /// The guest's console, when the driver copies it and could not write
    /// all of it to its file (a full disk): why, and its last lines.
    fn console_lost(&self) -> Option<super::console::ConsoleLost> {
        None
    }
}

/// A finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit status; -1 when the command was killed by a signal.
    pub status: i32,
    /// Its stdout as text, all of it: decoded lossily from [`LocalHost`];
    /// from an [`SshHost`](super::master::SshHost) line by line, each line
    /// ended by a newline, up to
    /// [`MASTER_STDOUT_MAX_BYTES`](super::master::MASTER_STDOUT_MAX_BYTES)
    /// (more is an error, never a cut output).
    pub stdout: String,
    /// Its stderr as text: all of it, decoded lossily, from [`LocalHost`];
    /// from an [`SshHost`](super::master::SshHost) only the last
    /// [`OUTPUT_TAIL_LINES`](crate::ssh::remote::OUTPUT_TAIL_LINES) lines,
    /// trimmed, after a note when earlier lines were dropped.
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Where a driver's commands run.
#[async_trait]
pub trait Host: fmt::Debug + Send + Sync {
    /// Runs `argv` to its end. A command that cannot be started is an
    /// error; one that fails is an [`Output`] with its status. Dropping the
    /// future does not necessarily stop the command (over SSH it runs on):
    /// to give up on a command, use [`Host::run_until`].
    async fn run(&self, argv: &[String]) -> Result<Output> {
        let out = self
            .run_until(argv, &CancellationToken::new())
            .await?
            .expect("an uncancellable command is never cancelled");
        Ok(out)
    }

    /// [`Host::run`], given up when `cancel` fires: then `None`, returned
    /// only once the command has been stopped (here its process killed and
    /// reaped; over SSH every process of its remote session, see
    /// [`crate::ssh::remote`]), so that what runs next never runs beside
    /// it.
    async fn run_until(
        &self,
        argv: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<Output>>;
}

/// Runs `argv` on `host`; a non-zero exit is a system failure naming the
/// command, its status and its stderr.
pub async fn must(host: &dyn Host, argv: &[String]) -> Result<String> {
    must_until(host, argv, &CancellationToken::new()).await
}

/// [`must`], given up when `cancel` fires ([`Host::run_until`]): then
/// [`Error::Cancelled`], once the command is stopped; a command is never
/// started once `cancel` has fired.
pub async fn must_until(
    host: &dyn Host,
    argv: &[String],
    cancel: &CancellationToken,
) -> Result<String> {
    let out = run_until(host, argv, cancel).await?;
    if out.success() {
        return Ok(out.stdout);
    }
    Err(Error::system(format!(
        "`{}` failed with exit status {}: {}",
        argv.join(" "),
        out.status,
        fruix_core::escape::text(out.stderr.trim())
    )))
}

/// [`Host::run_until`], a command given up on being
/// [`Error::Cancelled`]; a command is never started once `cancel` has
/// fired.
pub async fn run_until(
    host: &dyn Host,
    argv: &[String],
    cancel: &CancellationToken,
) -> Result<Output> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    host.run_until(argv, cancel).await?.ok_or(Error::Cancelled)
}

/// `argv` from words.
pub fn argv<const N: usize>(words: [&str; N]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// This machine: commands run as child processes.
#[derive(Debug, Default)]
pub struct LocalHost;

#[async_trait]
impl Host for LocalHost {
    async fn run_until(
        &self,
        argv: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<Output>> {
        let mut command = tokio::process::Command::new(&argv[0]);
        command.args(&argv[1..]);
        run_local_until(command, cancel, |e| {
            Error::system(format!(
                "cannot run {}: {e}; is it installed (and on PATH)?",
                argv[0]
            ))
        })
        .await
    }
}

/// Runs `command` on this machine to its end, stdin `/dev/null`, its
/// output read whole, as [`LocalHost`] does: given up when `cancel` fires,
/// then `None`, returned once the process is killed and reaped; never
/// started once `cancel` has fired. `cannot_run` says why it could not be
/// started (what to install).
pub async fn run_local_until(
    mut command: tokio::process::Command,
    cancel: &CancellationToken,
    cannot_run: impl FnOnce(std::io::Error) -> Error,
) -> Result<Option<Output>> {
    use tokio::io::AsyncReadExt;

    if cancel.is_cancelled() {
        return Ok(None);
    }
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(cannot_run)?;
    let (mut out, mut err) = (
        child.stdout.take().expect("piped stdout"),
        child.stderr.take().expect("piped stderr"),
    );
    let finished = tokio::select! {
        finished = async {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            let (read_out, read_err) = tokio::join!(
                out.read_to_end(&mut stdout),
                err.read_to_end(&mut stderr)
            );
            read_out.and(read_err)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, stdout, stderr))
        } => Some(finished),
        () = cancel.cancelled() => None,
    };
    let Some(finished) = finished else {
        // Killed and reaped before returning.
        let _ = child.kill().await;
        return Ok(None);
    };
    let (status, stdout, stderr) =
        finished.map_err(|e| Error::system(format!("cannot read the output of {program}: {e}")))?;
    Ok(Some(Output {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }))
}

/// Polls `check` every `every` until it holds or `limit` passes.
pub async fn poll<F, Fut>(limit: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// The size `spec` gives memory in, for command lines (`512M`).
pub fn memory(spec: &VmSpec) -> String {
    format!("{}M", spec.memory_mib)
}

/// The drivers' tests: steps that must succeed, with a token never fired.
#[cfg(test)]
pub(crate) mod steps {
    use super::{Endpoint, Instance, VmDriver};
    use tokio_util::sync::CancellationToken;

    /// [`VmDriver::prepare`], which must succeed.
    pub(crate) async fn prepared(driver: &impl VmDriver, vm: &Instance) {
        driver.prepare(vm, &CancellationToken::new()).await.unwrap();
    }

    /// [`VmDriver::prepare`] then [`VmDriver::boot`], which must succeed.
    pub(crate) async fn booted(driver: &impl VmDriver, vm: &Instance) -> Endpoint {
        prepared(driver, vm).await;
        driver.boot(vm, &CancellationToken::new()).await.unwrap()
    }
}
