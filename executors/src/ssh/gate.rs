//! A remote command held at a gate until its lifeline is armed: nothing of
//! its script runs before the guest can stop it without this host, so a
//! cancel that comes before its session id is known ends at once. Every
//! remote command runs so ([`super::remote`], the import's `tar`).
//!
//! # Contract
//!
//! - [`SshSession::exec_gated`] starts a script as [`super::remote::wrap`]
//!   does (its stderr says its session id, after what the login shell prints); then the shell reads
//!   one line of its stdin, and runs the script only when that line is
//!   [`GO`]. When its stdin ends first, it exits having run nothing of it.
//!   The shell's `read` takes exactly that line (it reads a pipe a byte at a
//!   time): what follows it is the script's stdin.
//! - The caller reads the command's output, and passes the verdict of its
//!   session line on ([`Gate::said`]): with a session id, the command's
//!   lifeline ([`super::kill`]) is opened, and the gate opens once it is (or
//!   could not be: the guest's `MaxSessions`); without one, the gate opens
//!   at once and the command runs without a lifeline. From the moment the
//!   script runs, this host going away (killed, its connection dropped)
//!   stops its whole session in the guest.
//! - [`Gate::run`], polled alongside the output, opens the gate: it sends
//!   [`GO`], then what the command's stdin is fed (read to its end while the
//!   output is read: memory stays flat), then the stdin's end. A command
//!   that ends without reading all of it (a guest refusing what it is sent)
//!   leaves no sender waiting for window space: once it has ended, what
//!   could not be sent no longer matters. Nor is a failure to send judged
//!   there: the channel's end says whether the command ended or the
//!   connection was lost. [`feed`] is that sender, and
//!   [`SshSession::stdio`]'s stdin is sent by it too ([`fed_while`]).
//! - [`Gate::stop`] stops the command from here. Once the gate is open, the
//!   kill loop runs over its session, as for any cancelled remote command,
//!   its output drained meanwhile; a command that said no session id has
//!   nothing to stop it by, and is left. Before, the command's stdin is
//!   ended, and its session id is not waited for: the shell, held at its
//!   gate, exits by itself once it reads that end (its script never run),
//!   whether or not it has said its session id yet. Its channel's end, which
//!   says it has, is waited for at most [`HELD_EXIT_WAIT`] (a round trip,
//!   unless the shell has not reached its gate yet), so that no process of
//!   the command is left once the call returns. This host going away ends
//!   that stdin too.
//! - [`Gate::release`] ends the lifeline once the command has ended by
//!   itself (its channel read to its end).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use russh::client::Msg;
use russh::{ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use super::kill::Arming;
use super::remote::wrap;
use super::SshSession;
use fruix_core::Result;

/// The line that lets a gated script run.
const GO: &str = "go";

/// How long a command stopped at its gate may take to exit there.
const HELD_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The command line sent for `script` held at a gate (see the module docs).
pub(crate) fn wrap_gated(script: &str) -> String {
    wrap(&format!(
        "IFS= read -r gate && [ \"$gate\" = {GO} ] || exit 1\n{script}"
    ))
}

/// What a gated command's stdin is sent.
enum Stdin<'a> {
    /// The gate is closed; what follows [`GO`] once it opens, if anything.
    Held(Option<Box<dyn AsyncRead + Unpin + Send + 'a>>),
    /// The gate is open: [`GO`], what follows it and the end being sent.
    Sending(Pin<Box<dyn Future<Output = ()> + Send + 'a>>),
    /// All sent, or given up.
    Sent,
}

/// A gated remote command's stdin and lifeline (see the module docs); its
/// output is the caller's to read.
pub(crate) struct Gate<'a> {
    session: &'a SshSession,
    input: Arc<ChannelWriteHalf<Msg>>,
    /// The session line's verdict, once known.
    said: Option<Option<u32>>,
    lifeline: Arming<'a>,
    stdin: Stdin<'a>,
}

impl SshSession {
    /// Starts `script` held at a gate (see [`super::gate`]), its stdin to be
    /// fed `stdin` once the gate opens: its output to read, and its gate.
    /// `None` when `cancel` fired before it was started
    /// ([`SshSession::exec_until`]): nothing of it ran.
    pub(crate) async fn exec_gated<'a>(
        &'a self,
        script: &str,
        stdin: Option<impl AsyncRead + Unpin + Send + 'a>,
        cancel: &CancellationToken,
    ) -> Result<Option<(ChannelReadHalf, Gate<'a>)>> {
        let Some(channel) = self.exec_until(wrap_gated(script), cancel).await? else {
            return Ok(None);
        };
        let (output, input) = channel.split();
        let gate = Gate {
            session: self,
            input: Arc::new(input),
            said: None,
            lifeline: Arming::Waiting,
            stdin: Stdin::Held(stdin.map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>)),
        };
        Ok(Some((output, gate)))
    }
}

impl<'a> Gate<'a> {
    /// The verdict of the command's session line: its session id, or
    /// `None` when that line did not say one. Only the first call counts.
    pub(crate) fn said(&mut self, sid: Option<u32>) {
        if self.said.is_some() {
            return;
        }
        self.said = Some(sid);
        if let Some(sid) = sid {
            self.lifeline = Arming::Opening(Box::pin(self.session.lifeline(sid)));
        }
    }

    /// Opens the gate once it may (the lifeline opened, or there is none to
    /// open), then sends the command's stdin (see the module docs). Ends
    /// once all of it is sent, or could not be; never before, nor again
    /// after. Cancel-safe.
    pub(crate) async fn run(&mut self) {
        if self.said.is_none() {
            return std::future::pending().await;
        }
        if matches!(self.lifeline, Arming::Opening(_)) {
            self.lifeline = Arming::Opened(self.lifeline.opened().await);
        }
        if let Stdin::Held(data) = &mut self.stdin {
            self.stdin = Stdin::Sending(Box::pin(send(self.input.clone(), data.take())));
        }
        match &mut self.stdin {
            Stdin::Sending(sending) => sending.await,
            _ => return std::future::pending().await,
        }
        self.stdin = Stdin::Sent;
    }

    /// The command ended by itself: its lifeline exits, stopping nothing.
    pub(crate) async fn release(self) {
        self.lifeline.release().await;
    }

    /// Stops the command (see the module docs), reading `output` meanwhile
    /// (a channel left full stalls the connection, and with it the kill
    /// loop's and the lifeline's channels), then closes its channel.
    pub(crate) async fn stop(self, output: &mut ChannelReadHalf) {
        let Gate {
            session,
            input,
            said,
            lifeline,
            stdin,
        } = self;
        // Whatever is left of its stdin is not sent.
        let open = !matches!(stdin, Stdin::Held(_));
        drop(stdin);
        let stopping = async {
            match (open, said.flatten()) {
                (true, Some(sid)) => session.kill_session(sid).await,
                // Running without a session id: nothing to stop it by.
                (true, None) => {}
                // Held at its gate: it exits once its stdin ends.
                (false, _) => {
                    let _ = input.eof().await;
                }
            }
            // A guest that stopped answering was not stopped: its lifeline
            // stays armed, to stop the command once the connection closes.
            if !session.stopped_answering() {
                lifeline.release().await;
            }
        };
        drain_while(output, stopping).await;
        if !open {
            let ended = async { while output.wait().await.is_some() {} };
            let _ = tokio::time::timeout(HELD_EXIT_WAIT, ended).await;
        }
        let _ = input.close().await;
    }
}

/// Sends [`GO`] on `input`, then `data`, then the end of the stream; stops
/// at the first failure (see the module docs).
async fn send(
    input: Arc<ChannelWriteHalf<Msg>>,
    data: Option<Box<dyn AsyncRead + Unpin + Send + '_>>,
) {
    use tokio::io::AsyncReadExt;
    let go = format!("{GO}\n").into_bytes();
    let _ = match data {
        Some(data) => feed(&input, go.as_slice().chain(data)).await,
        None => feed(&input, go.as_slice()).await,
    };
}

/// How much of a command's stdin is read at once, to be sent in packets as
/// large as the channel takes.
const FEED_BUFFER: usize = 256 << 10;

/// Sends `data` on `input` to its end, then the end of the stream; stops
/// at the first failure. Polled only while the channel is open (see the
/// module docs): a command that ended leaves it waiting for window space
/// it will never get, and it is dropped.
async fn feed(
    input: &ChannelWriteHalf<Msg>,
    data: impl AsyncRead + Unpin,
) -> std::result::Result<(), russh::Error> {
    let mut data = tokio::io::BufReader::with_capacity(FEED_BUFFER, data);
    tokio::io::copy_buf(&mut data, &mut input.make_writer()).await?;
    input.eof().await
}

/// Runs `reading` (a channel read to its end) while [`feed`] sends `data`
/// on the channel's `input`: the sending is dropped once the reading ends,
/// whatever it still waits for, so the channel's end ends both.
pub(super) async fn fed_while<T>(
    input: &ChannelWriteHalf<Msg>,
    data: impl AsyncRead + Unpin,
    reading: impl Future<Output = T>,
) -> T {
    let sending = feed(input, data);
    tokio::pin!(sending, reading);
    let mut sent = false;
    loop {
        tokio::select! {
            ended = &mut reading => return ended,
            _ = &mut sending, if !sent => sent = true,
        }
    }
}

/// Runs `work` while reading `output` to its end, what it says dropped.
async fn drain_while(output: &mut ChannelReadHalf, work: impl Future<Output = ()>) {
    tokio::pin!(work);
    let mut open = true;
    loop {
        tokio::select! {
            () = &mut work => break,
            msg = output.wait(), if open => open = msg.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`wrap_gated`]`(script)` under `sh`, fed `stdin`: its exit
    /// status and stdout.
    fn gated(script: &str, stdin: &str) -> (Option<i32>, String) {
        let out = crate::ssh::sh_fed(&wrap_gated(script), None, stdin);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("fruix-session "), "{stderr}");
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    }

    /// A gated script says its session, then runs only once told `go`:
    /// its stdin ending first (the host gone, or stopping it) ends it,
    /// having run nothing.
    #[test]
    fn a_gated_script_runs_only_once_told_to_go() {
        assert_eq!(gated("echo ran", "go\n"), (Some(0), "ran\n".into()));
        for held in ["", "g", "go", "no\n"] {
            assert_eq!(
                gated("echo ran", held),
                (Some(1), String::new()),
                "{held:?}"
            );
        }
    }

    /// The gate takes exactly its line of stdin: the script reads what the
    /// host sent after `go`, byte for byte (its own first line too).
    #[test]
    fn a_gated_script_reads_what_follows_go_on_its_stdin() {
        let data = "go\nline two\n\nno newline at the end";
        let sent = format!("go\n{data}");
        assert_eq!(gated("cat", &sent), (Some(0), data.to_string()));
        let first = "IFS= read -r line; printf '%s|' \"$line\"; cat";
        assert_eq!(gated(first, &sent), (Some(0), format!("go|{}", &data[3..])));
    }
}
