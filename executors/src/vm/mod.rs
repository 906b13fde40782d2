//! Builds in virtual machines whose whole life fruix owns: prepare a
//! throw-away disk, boot, wait for the SSH banner (within the boot timeout),
//! run the inner mode over SSH with the guest's pinned host key, then,
//! whatever happened, stop the guest (ACPI, then hard) and destroy the disk.
//!
//! The steps are a driver's ([`driver::VmDriver`]): [`qemu`] (this
//! machine's `qemu-system-x86_64`), [`bhyve`] (FreeBSD hosts) and [`xcpng`]
//! (`xe` on an XCP-ng pool master). [`bring_up`] runs a guest's life up to
//! its build; [`teardown`] undoes exactly what was started, and must be
//! called after it whatever it returned: a failure at any point, a
//! cancellation, a lost connection.

pub mod bhyve;
pub mod driver;
pub mod executor;
pub mod master;
pub mod qemu;
pub mod xcpng;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
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
/// [`Error::MachineUnavailable`].
pub async fn bring_up<W, WF, B, BF>(
    driver: &dyn VmDriver,
    vm: &Instance,
    started: &mut Started,
    events: &EventSink,
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
    let prepare = events.stage("vm-prepare", driver.prepare(vm));
    prepare.await.map_err(unavailable)?;
    started.booted = true;
    let endpoint = events.stage("vm-boot", driver.boot(vm));
    let endpoint = endpoint.await.map_err(unavailable)?;
    let endpoint = events.stage("vm-ssh", wait(endpoint));
    build(endpoint.await.map_err(unavailable)?).await
}

/// Stops the guest if booting was attempted (`grace` for the ACPI power
/// button: the machine's shutdown timeout, or none after a cancellation,
/// when nothing in a throw-away guest is worth waiting for), then destroys
/// its disk if preparing was; both are tried even when the first fails. The
/// first failure is returned.
pub async fn teardown(
    driver: &dyn VmDriver,
    grace: Duration,
    vm: &Instance,
    started: Started,
) -> Result<()> {
    let stopped = if started.booted {
        driver.stop(vm, grace).await
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

/// Waits until the guest's sshd says `SSH-` on `endpoint`: a connection
/// alone proves nothing (QEMU's user networking accepts one before the
/// guest listens). Fails when the guest stops, when `cancel` fires, or
/// after the boot timeout, quoting the console's last lines.
pub async fn wait_for_ssh(
    driver: &dyn VmDriver,
    spec: &VmSpec,
    vm: &Instance,
    endpoint: Endpoint,
    cancel: &CancellationToken,
) -> Result<Endpoint> {
    let deadline = tokio::time::Instant::now() + spec.boot_timeout;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if banner(&endpoint).await {
            return Ok(endpoint);
        }
        if !driver.running(vm).await {
            return Err(Error::system(format!(
                "guest {} stopped while booting{}",
                vm.name,
                console_quote(vm)
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "the SSH banner of guest {} ({}:{})",
                    vm.name, endpoint.host, endpoint.port
                ),
                limit: spec.boot_timeout,
                detail: console_quote(vm),
                log: None,
            });
        }
        tokio::select! {
            () = tokio::time::sleep(BANNER_POLL) => {}
            () = cancel.cancelled() => return Err(Error::Cancelled),
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

/// `; its console's last lines:\n...` (escaped), or nothing when the
/// console is empty.
pub fn console_quote(vm: &Instance) -> String {
    let lines = console_tail(&vm.console, CONSOLE_TAIL_LINES);
    if lines.is_empty() {
        return "; its console is empty".into();
    }
    format!(
        "; its console ({}) ends with:\n{}",
        vm.console.display(),
        lines
            .iter()
            .map(|l| format!("  {}", fruix_core::escape::text(l)))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The last `n` lines of the file at `path`, reading at most its last 64 KiB.
pub fn console_tail(path: &std::path::Path, n: usize) -> Vec<String> {
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
