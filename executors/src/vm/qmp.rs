//! QEMU's QMP socket, in a guest's work directory: how fruix sees a
//! starting QEMU greet, presses the guest's power button, and quits a QEMU
//! a killed fruix left running.

use std::path::Path;
use std::time::Duration;

/// QEMU's QMP socket, in the instance's work directory.
pub(super) const SOCKET: &str = "qmp.sock";

/// How long a QEMU left running gets to exit once told to `quit`.
const QUIT_WAIT: Duration = Duration::from_secs(10);

/// How often a starting QEMU's QMP socket is tried.
const POLL: Duration = Duration::from_millis(50);

/// Ends once QEMU greets on the QMP socket at `path` (the socket exists
/// before QEMU listens there, and may be a dead one's until it does).
pub(super) async fn greeting(path: &Path) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Ok(mut stream) = tokio::net::UnixStream::connect(path).await {
            let mut first = [0u8; 1];
            if matches!(stream.read(&mut first).await, Ok(1)) {
                return;
            }
            // Closed before a greeting: that QEMU is exiting.
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A QMP session on `stream`, past its greeting and capabilities
/// negotiation: the lines QEMU sends, and where to send commands.
async fn qmp_session(
    stream: tokio::net::UnixStream,
) -> std::io::Result<(
    tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
    tokio::net::unix::OwnedWriteHalf,
)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await?; // the greeting
    write
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .await?;
    lines.next_line().await?;
    Ok((lines, write))
}

/// Sends `system_powerdown` on the QMP socket at `path`.
pub(super) async fn powerdown(path: &Path) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (mut lines, mut write) = qmp_session(stream).await?;
    write
        .write_all(b"{\"execute\":\"system_powerdown\"}\n")
        .await?;
    lines.next_line().await?;
    Ok(())
}

/// Quits a QEMU still running from the work directory `work_dir` of a run
/// whose fruix was killed: an emulator that a wrapper ran without `exec`,
/// which the kernel's death signal did not reach (it reaches the wrapper
/// alone). Through its QMP socket, which only that QEMU listens on, so no
/// other process can be taken for it; then waits (at most [`QUIT_WAIT`])
/// for it to close the connection as it exits. Whether one was running.
pub(super) async fn quit_left_running(work_dir: &Path) -> std::io::Result<bool> {
    use std::io::ErrorKind;
    use tokio::io::AsyncWriteExt;
    let stream = match tokio::net::UnixStream::connect(work_dir.join(SOCKET)).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(false)
        }
        Err(e) => return Err(e),
    };
    let quit = async {
        let (mut lines, mut write) = qmp_session(stream).await?;
        write.write_all(b"{\"execute\":\"quit\"}\n").await?;
        // Its answer, then the end of the connection as it exits (which
        // may reset it).
        loop {
            match lines.next_line().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(QUIT_WAIT, quit)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("it did not exit within {} s of `quit`", QUIT_WAIT.as_secs()),
            ))
        })
}
