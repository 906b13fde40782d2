//! Builds in virtual machines whose whole life fruix owns: prepare a
//! throw-away disk, boot, wait for the SSH banner (the boot timeout, from
//! the start of the boot, bounds both: [`boot_deadline`]),
//! run the inner mode over SSH with the guest's pinned host key, then,
//! whatever happened, stop the guest (ACPI, then hard) and destroy the disk.
//!
//! The steps are a driver's ([`driver::VmDriver`]): [`qemu`] (this
//! machine's `qemu-system-x86_64`), [`bhyve`] (FreeBSD hosts) and [`xcpng`]
//! (`xe` on an XCP-ng pool master). [`bring_up`] runs a guest's life up to
//! its build; [`teardown`] undoes exactly what was started, and must be
//! called after it whatever it returned: a failure at any point, a
//! cancellation, a lost connection.
//!
//! A guest's serial console goes to its instance's console file, which
//! boot failures quote the end of ([`console_quote`]) and the cleanup keeps
//! in `RESULT_ROOT/logs`. The QEMU driver keeps that file within a cap
//! while the guest runs, its last part kept ([`console`]); bhyve's is
//! written by `daemon(8)` and not bounded, and XCP-ng writes none (see
//! their modules).

pub mod bhyve;
pub mod console;
pub mod driver;
pub mod executor;
mod group;
pub mod master;
pub mod qemu;
mod qmp;
pub mod workdir;
pub mod xcpng;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use fruix_core::executor::EventSink;
use fruix_core::vm::VmSpec;
use fruix_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use self::driver::{Endpoint, Instance, VmDriver};

/// How often the SSH banner is looked for while a guest boots.
const BANNER_POLL: Duration = Duration::from_millis(200);

/// How many of the console's last lines a boot failure quotes.
const CONSOLE_TAIL_LINES: usize = 20;

tokio::task_local! {
    /// When the boot of the guest [`bring_up`] brings up began.
    static BOOT_STARTED: tokio::time::Instant;
}

/// The one deadline of a guest's boot, up to its SSH banner: `timeout`
/// (the machine's boot timeout) after the start of the boot, when called
/// while [`bring_up`] boots a guest or waits for its SSH; else (a driver
/// or a wait used alone) `timeout` from now. The QEMU driver's boot and
/// [`wait_for_ssh_with_logs`] both end there, so a boot that takes part
/// of the timeout leaves the wait only the rest.
pub fn boot_deadline(timeout: Duration) -> tokio::time::Instant {
    let started = BOOT_STARTED
        .try_with(|started| *started)
        .unwrap_or_else(|_| tokio::time::Instant::now());
    started + timeout
}

/// What a guest's life has started so far: [`teardown`] undoes exactly that.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Preparing the disk was attempted (it may be half made).
    pub prepared: bool,
    /// Booting was attempted (a guest may be running).
    pub booted: bool,
}

/// Runs a guest's life up to and including `build` (the inner mode, given
/// the guest's SSH endpoint): prepare, boot, `wait` for SSH. Records in
/// `started` what needs undoing; call [`teardown`] after, always. A
/// failure before the guest answers (not a cancellation) is
/// [`Error::MachineUnavailable`]. When `cancel` fires while the guest's
/// disk is prepared or the guest boots, that step ends at once
/// ([`Error::Cancelled`]); `wait` and `build` are given it themselves.
/// The boot and `wait` share one deadline ([`boot_deadline`]).
pub async fn bring_up<W, WF, B, BF>(
    driver: &dyn VmDriver,
    vm: &Instance,
    started: &mut Started,
    events: &EventSink,
    cancel: &CancellationToken,
    wait: W,
    build: B,
) -> Result<()>
where
    W: FnOnce(Endpoint) -> WF,
    WF: Future<Output = Result<Endpoint>>,
    B: FnOnce(Endpoint) -> BF,
    BF: Future<Output = Result<()>>,
{
    // Until the guest answers, a failure is the machine's: it did not come up.
    let unavailable = |e: Error| match e {
        Error::Cancelled => e,
        e => Error::MachineUnavailable(Box::new(e)),
    };
    started.prepared = true;
    let prepare = events.stage("vm-prepare", driver.prepare(vm, cancel));
    prepare.await.map_err(unavailable)?;
    started.booted = true;
    let booting = tokio::time::Instant::now();
    let boot = events.stage("vm-boot", driver.boot(vm, cancel));
    let endpoint = BOOT_STARTED.scope(booting, boot).await;
    let wait = events.stage("vm-ssh", wait(endpoint.map_err(unavailable)?));
    let endpoint = BOOT_STARTED.scope(booting, wait).await;
    build(endpoint.map_err(unavailable)?).await
}

/// [`teardown_until`] that is never cancelled: the guest gets the whole
/// `grace`.
pub async fn teardown(
    driver: &dyn VmDriver,
    grace: Duration,
    vm: &Instance,
    started: Started,
) -> Result<()> {
    teardown_until(driver, grace, vm, started, &CancellationToken::new()).await
}

/// Stops the guest if booting was attempted (`grace` for the ACPI power
/// button: the machine's shutdown timeout), then destroys its disk if
/// preparing was; both are tried even when the first fails. The first
/// failure is returned. When `cancel` fires, before or during the grace
/// period, the guest is stopped hard at once: nothing in a throw-away guest
/// is worth waiting for then.
pub async fn teardown_until(
    driver: &dyn VmDriver,
    grace: Duration,
    vm: &Instance,
    started: Started,
    cancel: &CancellationToken,
) -> Result<()> {
    let stopped = if started.booted {
        driver.stop_until(vm, grace, cancel).await
    } else {
        Ok(())
    };
    let destroyed = if started.prepared {
        driver.destroy(vm).await
    } else {
        Ok(())
    };
    stopped.and(destroyed)
}

/// [`wait_for_ssh_with_logs`] naming the guest's logs where they are.
pub async fn wait_for_ssh(
    driver: &dyn VmDriver,
    spec: &VmSpec,
    vm: &Instance,
    endpoint: Endpoint,
    cancel: &CancellationToken,
) -> Result<Endpoint> {
    wait_for_ssh_with_logs(driver, spec, vm, endpoint, None, cancel).await
}

/// Waits until the guest's sshd says `SSH-` on `endpoint`: a connection
/// alone proves nothing (QEMU's user networking accepts one before the
/// guest listens). Fails when the guest stops (quoting the driver's own
/// log too), when `cancel` fires, or at the boot's deadline
/// ([`boot_deadline`]: the boot timeout after the start of the boot, when
/// [`bring_up`] calls it), quoting the console's last lines. The logs are
/// named where they will be kept, in `logs` (`RESULT_ROOT/logs`), else
/// where they are.
pub async fn wait_for_ssh_with_logs(
    driver: &dyn VmDriver,
    spec: &VmSpec,
    vm: &Instance,
    endpoint: Endpoint,
    logs: Option<&Path>,
    cancel: &CancellationToken,
) -> Result<Endpoint> {
    let deadline = boot_deadline(spec.boot_timeout);
    let timed_out = || Error::Timeout {
        what: format!(
            "the SSH banner of guest {} ({}:{})",
            vm.name, endpoint.host, endpoint.port
        ),
        limit: spec.boot_timeout,
        detail: console_quote(driver, vm, logs),
        log: None,
    };
    loop {
        let answered = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Error::Cancelled),
            answered = banner(&endpoint) => answered,
            () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
        };
        if answered {
            return Ok(endpoint);
        }
        if !driver.running(vm).await {
            let own_log = driver
                .own_log(vm)
                .map(|path| log_quote("log", &path, &shown(&path, logs)))
                .filter(|quote| !quote.is_empty())
                .map(|quote| quote + "\n")
                .unwrap_or_default();
            return Err(Error::system(format!(
                "guest {} stopped while booting{own_log}{}",
                vm.name,
                console_quote(driver, vm, logs)
            )));
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Error::Cancelled),
            () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
            () = tokio::time::sleep(BANNER_POLL) => {}
        }
    }
}

/// Whether `endpoint` answers with an SSH banner now.
async fn banner(endpoint: &Endpoint) -> bool {
    use tokio::io::AsyncReadExt;
    let attempt = async {
        let mut stream =
            tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        let mut first = [0u8; 4];
        stream.read_exact(&mut first).await?;
        Ok::<bool, std::io::Error>(&first == b"SSH-")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

/// The name a log of the guest's at `path` is kept under in
/// `RESULT_ROOT/logs`: its own file name (`console.log`, `qemu.log`).
pub fn kept_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// Where the guest's log at `path` is named: as kept in `logs`
/// (`RESULT_ROOT/logs`), when given, else where it is.
fn shown(path: &Path, logs: Option<&Path>) -> std::path::PathBuf {
    logs.map_or_else(|| path.to_path_buf(), |logs| logs.join(kept_name(path)))
}

/// `; its console (LOGS/console.log) ends with:\n...` (escaped), or `; its
/// console is empty`; the console is named as `shown` names it. A console
/// `driver` could not write to its file (a full disk) is said so instead,
/// and quoted from memory ([`console::ConsoleLost::quote`]).
pub fn console_quote(driver: &dyn VmDriver, vm: &Instance, logs: Option<&Path>) -> String {
    if let Some(lost) = driver.console_lost() {
        return lost.quote();
    }
    match log_quote("console", &vm.console, &shown(&vm.console, logs)) {
        quote if quote.is_empty() => "; its console is empty".into(),
        quote => quote,
    }
}

/// `; its WHAT (KEPT) ends with:\n...`: the last lines of the log at
/// `path`, escaped, naming the copy `kept`; nothing when it is empty.
fn log_quote(what: &str, path: &Path, kept: &Path) -> String {
    let lines = console_tail(path, CONSOLE_TAIL_LINES);
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "; its {what} ({}) ends with:\n{}",
        fruix_core::escape::path(kept),
        lines
            .iter()
            .map(|l| format!("  {}", fruix_core::escape::text(l)))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The last `n` lines of the file at `path`, reading at most its last 64 KiB.
pub fn console_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut bytes = Vec::new();
    let _ = file.take(64 << 10).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod deadline_tests {
    //! The boot and the wait for SSH share one deadline.

    use async_trait::async_trait;

    use super::*;
    use fruix_core::vm::{Accel, VmDriverSpec};

    /// A guest whose boot takes `boot` and whose sshd never answers.
    #[derive(Debug)]
    struct SlowBoot {
        boot: Duration,
        port: u16,
    }

    #[async_trait]
    impl VmDriver for SlowBoot {
        async fn prepare(&self, _vm: &Instance, _cancel: &CancellationToken) -> Result<()> {
            Ok(())
        }
        async fn boot(&self, _vm: &Instance, _cancel: &CancellationToken) -> Result<Endpoint> {
            tokio::time::sleep(self.boot).await;
            Ok(Endpoint {
                host: "127.0.0.1".into(),
                port: self.port,
            })
        }
        async fn running(&self, _vm: &Instance) -> bool {
            true
        }
        async fn stop(&self, _vm: &Instance, _grace: Duration) -> Result<()> {
            Ok(())
        }
        async fn destroy(&self, _vm: &Instance) -> Result<()> {
            Ok(())
        }
    }

    /// Regression: the boot was given the boot timeout, then the wait for
    /// SSH the whole of it again: a guest whose QEMU never greeted ran
    /// twice its boot timeout, failing "after" the boot timeout. The boot
    /// timeout bounds both, from the start of the boot.
    #[tokio::test(start_paused = true)]
    async fn the_boot_timeout_bounds_the_boot_and_the_wait_for_ssh_together() {
        let dir = tempfile::tempdir().unwrap();
        let vm = Instance {
            name: "fruix-test".into(),
            work_dir: dir.path().into(),
            console: dir.path().join("console.log"),
        };
        let spec = VmSpec {
            driver: VmDriverSpec::Qemu {
                image: None,
                kernel: Some("/vmlinuz".into()),
                initrd: None,
                append: None,
                accel: Accel::Tcg,
            },
            memory_mib: 512,
            cpus: 1,
            boot_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(2),
            host_key: String::new(),
        };
        // Nothing listens there: no banner, ever.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for boot in [Duration::from_secs(4), Duration::from_secs(7)] {
            let driver = SlowBoot { boot, port };
            let cancel = CancellationToken::new();
            let began = tokio::time::Instant::now();
            let up = bring_up(
                &driver,
                &vm,
                &mut Started::default(),
                &EventSink::discard(),
                &cancel,
                |endpoint| wait_for_ssh(&driver, &spec, &vm, endpoint, &cancel),
                |_| async { unreachable!("no banner") },
            )
            .await;
            let took = began.elapsed();
            let Err(Error::MachineUnavailable(e)) = up else {
                panic!("{up:?}");
            };
            let Error::Timeout { limit, .. } = *e else {
                panic!("{e:?}");
            };
            assert_eq!(limit, spec.boot_timeout);
            let expected = boot.max(spec.boot_timeout);
            assert!(
                took >= expected && took < expected + BANNER_POLL,
                "a boot of {boot:?}: {took:?} in all"
            );
        }
    }

    /// Alone (outside a bring-up), the wait's deadline is the boot timeout
    /// from its own start.
    #[tokio::test(start_paused = true)]
    async fn outside_a_bring_up_the_deadline_is_from_now() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            boot_deadline(Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let within = BOOT_STARTED.scope(now, async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            boot_deadline(Duration::from_secs(5))
        });
        assert_eq!(within.await, now + Duration::from_secs(5));
    }
}
