//! Remote commands over an [`SshSession`]: output streamed as lines, exit
//! status or signal returned, and cancellation that stops the whole remote
//! process tree.
//!
//! # Contract
//!
//! - A command is a POSIX `sh` script. It runs as `exec /bin/sh -c SCRIPT`
//!   under the user's login shell, so it works whatever that shell is (`sh`
//!   on FreeBSD, `csh` for some users, `bash` on Debian).
//! - sshd starts every exec channel in a new session (`setsid`), so the
//!   script's shell leads a session holding every process the command
//!   starts, whatever process groups make creates inside it. Before running
//!   the script the shell prints its pid (the session id) on stderr as
//!   `fruix-session PID`; that line is consumed, never shown. What the
//!   login shell prints before it (an rc file's banner, at most
//!   `LINES_BEFORE_SESSION` lines) is passed on as the command's stderr.
//! - On cancellation a second channel runs a POSIX kill loop over that
//!   session ([`super::kill`]; `ps -A -o pid= -o sid= -o stat=`), each
//!   second, or as soon as no live member is left (it looks
//!   [`LOOKS_PER_SECOND`](super::kill::LOOKS_PER_SECOND) times a second):
//!   `SIGTERM` once to every live member (a fruix there cancels its build
//!   at the first, and would give up its cleanup at a second), then,
//!   after [`TERM_SECONDS`](super::kill::TERM_SECONDS) seconds, `SIGKILL` to
//!   every one left, until none is left (at most
//!   [`KILL_SECONDS`](super::kill::KILL_SECONDS) seconds). The call returns
//!   once the loop ended and the channel closed: no process of the command
//!   is left.
//!   Every command waits at a gate until its lifeline is armed
//!   (`ssh::gate`): its shell says its session id, then runs the script
//!   only once the host sends `go` on its stdin, followed by what the
//!   command is fed (the source archive, the helper's request). A cancel
//!   before the gate opened does not wait for the session id: it ends the
//!   command's stdin, and the shell exits at its gate, having run nothing
//!   (the call returns once it has, a round trip later). A command
//!   cancelled before it was started is not started.
//!   [`SshSession::stdio`] is the exception: it hands over the command's
//!   streams as they are, with neither gate nor lifeline; its caller stops
//!   it by its [`RemoteSessionId`]. Its stdin is sent as a gated
//!   command's is, though: once the command ended, nothing waits for room
//!   to send the rest of it.
//! - The loop never signals another session that came to have the same id.
//!   While any member of the session lives, its id cannot be given to a new
//!   process (Linux keeps the `struct pid`; FreeBSD's `fork_findpid` checks
//!   sessions), so members of session `sid` are the command's. The one
//!   stranger possible is a new session leader that got pid `sid` once the
//!   whole session ended, between two rounds of the loop. The loop records
//!   the start time of process `sid` when it begins (`ps -o lstart=`; none
//!   when the leader has already exited; a lifeline's loop, when the
//!   lifeline starts) and stops, its work done, as soon
//!   as a process `sid` with another start time (or one that appeared after
//!   the leader was gone) is there. A `ps` without `-p` or `lstart`
//!   (busybox's) shows no start time, and the loop goes on without the
//!   check.
//! - No command outlives this host. sshd does not stop a command whose
//!   connection ended (no terminal, no `SIGHUP`): a host killed, or a second
//!   Ctrl-C before the first one's kill loop had started, would leave it
//!   running. So once the session id is known, a *lifeline* is started on
//!   another channel (a session of its own): it reads its stdin, which this
//!   host keeps open, and runs the same kill loop over the command's session
//!   if its stdin ends before this host said `done`. The host says so once
//!   the command has ended, or has been stopped from here; when the host is
//!   gone, sshd closes the lifeline's stdin. A command that ends by itself
//!   keeps what it left running, unless that holds its output (see
//!   below). The lifeline is opened while the command's output is read,
//!   and the call returns once it has ended, so a command uses two
//!   sessions of the guest's sshd while it runs, and none is left behind. The script runs only once its lifeline does
//!   (the gate), so there is no moment when the host going away would leave
//!   it running: a shell held at its gate exits when sshd ends its stdin.
//!   It is best effort: a guest whose sshd refuses another session
//!   (`MaxSessions`) runs the command without one, as it does one whose
//!   stderr did not say its session id among its first lines (then a cancel has
//!   nothing to stop it by either).
//! - A command has ended once its shell has exited: output still coming
//!   [`EXIT_GRACE`] after its exit status is a leftover's, which is then
//!   stopped as on cancellation, and the exit status returned. (A build
//!   step's script stops what its make left running itself:
//!   [`fruix_freebsd::sh::step_script`].)
//! - The channel closing without an exit status (connection lost) is an
//!   [`Error::ConnectionLost`], which [`super::is_connection_lost`] recognises.
//! - Output is untrusted: a line longer than the session's cap
//!   ([`super::SshOptions::max_line_bytes`], configuration key
//!   `output_max_line_bytes`) is cut, saying so ([`fruix_core::bounded`]), and
//!   [`SshSession::output`] keeps only the last [`OUTPUT_TAIL_LINES`] lines of
//!   each stream: no command's output is held whole in memory. Nor are its
//!   lines: [`SshSession::stream_bytes`] reads no further while the events
//!   it feeds wait unread ([`EventSink::room`]).
//! - Lines are handed over as the bytes that came ([`SshSession::stream_bytes`],
//!   for a protocol spoken on stdout, which must be parsed from them), or
//!   as text with each byte that is not UTF-8 shown as `\ooo`
//!   ([`SshSession::stream`], [`fruix_core::escape::utf8_or_octal`]), to be
//!   shown; either way without the `\r` of a `\r\n` line end.

use std::sync::{Arc, OnceLock};

use fruix_core::executor::{EventSink, Stream};
use fruix_core::{Error, Result};
use russh::ChannelMsg;
use tokio_util::sync::CancellationToken;

use super::{lost, shell_quote, SshSession, LINE_CAP_KEY};
use fruix_core::bounded::{LineSplitter, Tail};

/// How many last lines of each stream [`SshSession::output`] keeps.
pub const OUTPUT_TAIL_LINES: usize = 20;

const SESSION_PREFIX: &str = "fruix-session ";

/// The smallest line cap a session may have
/// ([`super::SshOptions::max_line_bytes`]): the longest `fruix-session PID`
/// line, which a smaller cap would cut before it is read. Stderr is never
/// cut shorter, whatever the cap.
pub const MIN_LINE_BYTES: usize = SESSION_PREFIX.len() + 10;

/// How long a command's output may go on once its shell has exited (its
/// exit status came): what is still holding the channel open then is a
/// process the command left running, which is stopped (its session's kill
/// loop; one that left the session is out of reach) and read no further.
pub const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How many stderr lines may come before [`wrap`]'s session line: what the
/// user's login shell prints as it starts (a banner of its rc file, read
/// before it runs the command line), passed on as the command's output.
pub(crate) const LINES_BEFORE_SESSION: usize = 64;

/// Picks [`wrap`]'s `fruix-session PID` line out of a script's stderr: the
/// first line of that shape among the first [`LINES_BEFORE_SESSION`] + 1.
/// The lines before it are the login shell's (nothing of the script runs
/// before it: a gated command waits for its lifeline, and `wrap` prints it
/// first), shown like any other. A later line of that shape is the
/// script's own output, shown too, and never names the session to stop.
#[derive(Debug, Default)]
pub(crate) struct SessionLine {
    /// The verdict, once read: the session id, or `None` when the session
    /// line was garbled or did not come in time.
    said: Option<Option<u32>>,
    /// Lines seen before it.
    before: usize,
}

impl SessionLine {
    /// For the next stderr line `text`: `Some` when it is the session line
    /// (consumed, never shown), holding the id if it parses; `None` when the
    /// line is the login shell's or the script's.
    pub(crate) fn take(&mut self, text: &str) -> Option<Option<u32>> {
        if self.said.is_some() {
            return None;
        }
        let taken = text
            .strip_prefix(SESSION_PREFIX)
            .map(|pid| pid.trim().parse().ok());
        match taken {
            Some(id) => self.said = Some(id),
            None if self.before == LINES_BEFORE_SESSION => self.said = Some(None),
            None => self.before += 1,
        }
        taken
    }

    /// The verdict, once it is known: the session id, or `None` when no
    /// session line came in time (or it was garbled).
    pub(crate) fn said(&self) -> Option<Option<u32>> {
        self.said
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteExit {
    /// The script exited with this status (0 is success).
    Code(u32),
    /// The script's shell was killed by this signal, named as SSH reports
    /// it, without `SIG` (`TERM`, `KILL`).
    Signal(String),
}

impl RemoteExit {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        *self == RemoteExit::Code(0)
    }

    /// `exit status N` or `killed by signal S`, as local steps say it.
    pub fn describe(&self) -> String {
        match self {
            RemoteExit::Code(c) => format!("exit status {c}"),
            RemoteExit::Signal(s) => format!("killed by signal {s}"),
        }
    }
}

/// A finished command's status and the tails of its output.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    /// How the command ended.
    pub exit: RemoteExit,
    /// The last [`OUTPUT_TAIL_LINES`] lines of stdout, each cut at the
    /// session's line cap, bytes that are not UTF-8 shown as `\ooo`.
    pub stdout: Tail,
    /// The last [`OUTPUT_TAIL_LINES`] lines of stderr, as `stdout`, without
    /// the `fruix-session PID` line.
    pub stderr: Tail,
}

impl RemoteOutput {
    /// The tail of stdout as text, trimmed.
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// The tail of stderr as text, trimmed.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }
}

/// The first line of `script`, escaped and cut at 80 bytes, in backquotes:
/// how a timeout names the command.
fn first_line(script: &str) -> String {
    let line = script.lines().next().unwrap_or_default();
    format!("`{}`", fruix_core::escape::text(line).cut_at(80))
}

/// The command line that runs `script` under `/bin/sh`, whatever the
/// user's login shell.
pub(super) fn under_sh(script: &str) -> String {
    format!("exec /bin/sh -c {}", shell_quote(script))
}

/// The command line sent for `script`: runs it under `/bin/sh`, after
/// printing the session id.
pub fn wrap(script: &str) -> String {
    under_sh(&format!(
        "printf '{SESSION_PREFIX}%s\\n' \"$$\" >&2\n{script}"
    ))
}

impl SshSession {
    /// Runs `script` to its end, feeding it `stdin`, and returns the last
    /// [`OUTPUT_TAIL_LINES`] lines of its stdout and of its stderr. For short
    /// commands: one running longer than the session's
    /// [`command_timeout`](SshSession::command_timeout) is stopped (its
    /// whole remote session, as on cancellation) and is [`Error::Timeout`].
    pub async fn output(&self, script: &str, stdin: Option<&[u8]>) -> Result<RemoteOutput> {
        let limit = Some(self.command_timeout());
        self.output_within(script, stdin, &CancellationToken::new(), limit)
            .await
    }

    /// [`SshSession::output`] with stdin streamed from `input`, read to its
    /// end (memory stays flat however much it holds), until the command
    /// ends, `cancel` fires ([`Error::Cancelled`]) or `limit` passes
    /// ([`Error::Timeout`]). Either way the command's remote session is
    /// stopped before this returns. `None` sets no limit, for commands
    /// whose length depends on what they are sent.
    pub async fn output_within(
        &self,
        script: &str,
        input: Option<impl tokio::io::AsyncRead + Unpin + Send>,
        cancel: &CancellationToken,
        limit: Option<std::time::Duration>,
    ) -> Result<RemoteOutput> {
        let (mut stdout, mut stderr) = (Tail::new(OUTPUT_TAIL_LINES), Tail::new(OUTPUT_TAIL_LINES));
        let stop = cancel.child_token();
        let pace = EventSink::discard();
        let (exit, timed_out) = {
            let run = self.stream_from(script, input, &stop, &pace, |stream, line| {
                let line = fruix_core::escape::utf8_or_octal(line);
                match stream {
                    Stream::Stdout => stdout.push(&line),
                    Stream::Stderr => stderr.push(&line),
                }
            });
            tokio::pin!(run);
            let deadline = async {
                match limit {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = &mut run => (ended?, false),
                () = deadline => {
                    stop.cancel();
                    (run.await?, true)
                }
            }
        };
        match (exit, limit) {
            (Some(exit), _) => Ok(RemoteOutput {
                exit,
                stdout,
                stderr,
            }),
            (None, Some(limit)) if timed_out => Err(Error::Timeout {
                what: format!("the command {} on {}", first_line(script), self.target()),
                limit,
                detail: "; it was stopped".to_string(),
                log: None,
            }),
            (None, _) => Err(Error::Cancelled),
        }
    }

    /// Runs `script`, feeding it `stdin`, calling `on_line` for every line of
    /// its stdout and stderr as they arrive, as text: each byte that is not
    /// UTF-8 shown as `\ooo` ([`fruix_core::escape::utf8_or_octal`]), for
    /// lines that are shown. `None` when `cancel` fired (the remote session
    /// is then stopped, see the module docs). `on_line` feeds `pace`:
    /// nothing more is read while `pace` has no room.
    pub async fn stream(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        cancel: &CancellationToken,
        pace: &EventSink,
        mut on_line: impl FnMut(Stream, &str) + Send,
    ) -> Result<Option<RemoteExit>> {
        self.stream_bytes(script, stdin, cancel, pace, |stream, line| {
            on_line(stream, &fruix_core::escape::utf8_or_octal(line))
        })
        .await
    }

    /// [`SshSession::stream`], `on_line` getting each line as the bytes
    /// that came (cut at the session's line cap, without its `\r\n` or
    /// `\n`): for a protocol spoken on the command's stdout, parsed from
    /// its bytes, never from text made of them.
    pub async fn stream_bytes(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        cancel: &CancellationToken,
        pace: &EventSink,
        on_line: impl FnMut(Stream, &[u8]) + Send,
    ) -> Result<Option<RemoteExit>> {
        self.stream_from(script, stdin, cancel, pace, on_line).await
    }

    /// [`SshSession::stream`] with stdin streamed from `stdin`. The command
    /// waits at a gate until its lifeline is armed (`ssh::gate`), and is
    /// fed `stdin` once it may run: a command cancelled before then ends at
    /// once, having run nothing; one cancelled already is not started.
    async fn stream_from<'a>(
        &'a self,
        script: &str,
        stdin: Option<impl tokio::io::AsyncRead + Unpin + Send + 'a>,
        cancel: &CancellationToken,
        pace: &EventSink,
        mut on_line: impl FnMut(Stream, &[u8]) + Send,
    ) -> Result<Option<RemoteExit>> {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let Some((mut channel, mut gate)) = self.exec_gated(script, stdin, cancel).await? else {
            return Ok(None);
        };
        let (mut out, mut err) = (
            LineSplitter::new(self.max_line_bytes, Some(LINE_CAP_KEY)),
            LineSplitter::new(self.max_line_bytes.max(MIN_LINE_BYTES), Some(LINE_CAP_KEY)),
        );
        let mut session_line = SessionLine::default();
        let mut exit = None;
        let mut exited_at = None;
        let mut emit = |stream: Stream, line: &[u8], session_line: &mut SessionLine| {
            let line = without_cr(line);
            if stream == Stream::Stderr
                && session_line
                    .take(&fruix_core::escape::utf8_or_octal(line))
                    .is_some()
            {
                return;
            }
            on_line(stream, line);
        };
        let lingering = loop {
            let linger = async {
                match exited_at {
                    Some(at) => tokio::time::sleep_until(at + EXIT_GRACE).await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                () = gate.run() => continue,
                () = linger => break true,
                // Cancel-safe: a message is only taken once there is room.
                msg = async {
                    pace.room().await;
                    channel.wait().await
                } => msg,
                () = cancel.cancelled() => {
                    gate.stop(&mut channel).await;
                    return Ok(None);
                }
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    out.push(&data, |l| emit(Stream::Stdout, l, &mut session_line))
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    err.push(&data, |l| emit(Stream::Stderr, l, &mut session_line));
                    if let Some(said) = session_line.said() {
                        gate.said(said);
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    exit = Some(RemoteExit::Code(exit_status));
                    exited_at = Some(tokio::time::Instant::now());
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit = Some(RemoteExit::Signal(signal_label(&signal_name)));
                    exited_at = Some(tokio::time::Instant::now());
                }
                Some(_) => {}
                None => break false,
            }
        };
        out.finish(|l| emit(Stream::Stdout, l, &mut session_line));
        err.finish(|l| emit(Stream::Stderr, l, &mut session_line));
        match lingering {
            true => gate.stop(&mut channel).await,
            false => gate.release().await,
        }
        match exit {
            Some(exit) => Ok(Some(exit)),
            None => Err(lost(
                self.target(),
                "the remote command ended without an exit status",
            )),
        }
    }
}

/// A remote command's standard streams, for a protocol spoken over them
/// (`fruix store serve`): its stdout to read, its stdin to write (shutting
/// it down sends end-of-file), and, once the channel closes, the last lines
/// of its stderr and how it ended.
pub struct RemoteStdio {
    /// The command's stdout, byte for byte (neither split into lines nor
    /// capped); end-of-file once the remote side closes it.
    pub stdout: tokio::io::DuplexStream,
    /// The command's stdin, written under SSH flow control (through a
    /// buffer of the same size as stdout's); shutting it down sends
    /// end-of-file. Once the channel closed, a write fails
    /// ([`std::io::ErrorKind::BrokenPipe`]) instead of waiting for room.
    pub stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Ends when the channel closes: stderr's last [`OUTPUT_TAIL_LINES`]
    /// lines, and the exit (`None` when the channel closed without one: the
    /// connection was lost).
    pub finished: tokio::task::JoinHandle<(Tail, Option<RemoteExit>)>,
    /// The command's remote session id, once its stderr said it.
    pub session: RemoteSessionId,
}

/// A remote command's session id (see the module docs), known once the
/// command's stderr said it: what [`SshSession::kill_session`]
/// stops when the command must not outlive the connection (one that does
/// not answer will not end at end-of-file either).
#[derive(Debug, Clone, Default)]
pub struct RemoteSessionId(Arc<OnceLock<u32>>);

impl RemoteSessionId {
    /// The session id, once read.
    pub fn get(&self) -> Option<u32> {
        self.0.get().copied()
    }
}

impl SshSession {
    /// Starts `script` and hands over its standard streams. Its stdout is
    /// passed on through a buffer of `buffer` bytes, so a reader that stops
    /// reading stops the remote side (SSH flow control), never memory.
    pub async fn stdio(&self, script: &str, buffer: usize) -> Result<RemoteStdio> {
        let channel = self.exec(wrap(script)).await?;
        let (mut read, write) = channel.split();
        // Sent as a gated command's stdin is (`ssh::gate`): a command that
        // ended without reading it all leaves no writer waiting for window
        // space, which its end never gives: once the channel ended, a write
        // fails (the other end of this pipe is gone).
        let (stdin, fed) = tokio::io::duplex(buffer);
        let (ours, stdout) = tokio::io::duplex(buffer);
        let max_line = self.max_line_bytes;
        let session = RemoteSessionId::default();
        let said = session.0.clone();
        let finished = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut out = Some(ours);
            let (mut tail, mut err) = (
                Tail::new(OUTPUT_TAIL_LINES),
                LineSplitter::new(max_line.max(MIN_LINE_BYTES), Some(LINE_CAP_KEY)),
            );
            let mut session_line = SessionLine::default();
            let mut keep = |line: &[u8], tail: &mut Tail| {
                let text = fruix_core::escape::utf8_or_octal(without_cr(line));
                match session_line.take(&text) {
                    Some(sid) => {
                        if let Some(sid) = sid {
                            let _ = said.set(sid);
                        }
                    }
                    None => tail.push(&text),
                }
            };
            let mut exit = None;
            let reading = async {
                while let Some(msg) = read.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => {
                            if let Some(o) = &mut out {
                                if o.write_all(&data).await.is_err() {
                                    out = None; // the reader is gone
                                }
                            }
                        }
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            err.push(&data, |l| keep(l, &mut tail));
                        }
                        ChannelMsg::Eof => out = None,
                        ChannelMsg::ExitStatus { exit_status } => {
                            exit = Some(RemoteExit::Code(exit_status));
                        }
                        ChannelMsg::ExitSignal { signal_name, .. } => {
                            exit = Some(RemoteExit::Signal(signal_label(&signal_name)));
                        }
                        _ => {}
                    }
                }
            };
            super::gate::fed_while(&write, fed, reading).await;
            err.finish(|l| keep(l, &mut tail));
            (tail, exit)
        });
        Ok(RemoteStdio {
            stdout,
            stdin: Box::pin(stdin),
            finished,
            session,
        })
    }
}

/// `line` without the `\r`s it ends with (a `\r\n` line end).
fn without_cr(mut line: &[u8]) -> &[u8] {
    while let Some(rest) = line.strip_suffix(b"\r") {
        line = rest;
    }
    line
}

fn signal_label(sig: &russh::Sig) -> String {
    match sig {
        russh::Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_script_prints_its_session_first_under_any_shell() {
        let out = std::process::Command::new("sh")
            .args(["-c", &wrap("echo 'it''s'; echo err >&2; exit 3")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"its\n");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with(SESSION_PREFIX) && stderr.ends_with("\nerr\n"),
            "{stderr}"
        );
    }

    #[test]
    fn a_line_is_handed_over_without_its_carriage_returns_and_bytes_kept() {
        assert_eq!(without_cr(b"a\xff\r\r"), b"a\xff");
        assert_eq!(without_cr(b"\ra\rb"), b"\ra\rb");
        assert_eq!(without_cr(b""), b"");
    }

    #[test]
    fn the_session_line_is_the_first_of_its_shape_after_the_login_shell_s_lines() {
        let mut first = SessionLine::default();
        assert_eq!(first.take("fruix-session 42"), Some(Some(42)));
        assert_eq!(first.take("fruix-session 7"), None, "the script's own line");
        let mut garbled = SessionLine::default();
        assert_eq!(garbled.take("fruix-session x"), Some(None));
        assert_eq!(garbled.said(), Some(None));
        assert_eq!(garbled.take("fruix-session 7"), None, "never a second id");
        // A login shell's banner comes first: shown, and waited past.
        let mut banner = SessionLine::default();
        assert_eq!(banner.take("Welcome to the build guest"), None);
        assert_eq!(banner.said(), None, "decided on a banner line");
        assert_eq!(banner.take("fruix-session 7"), Some(Some(7)));
        assert_eq!(banner.said(), Some(Some(7)));
        // Only so many: then there is none.
        let mut endless = SessionLine::default();
        for _ in 0..LINES_BEFORE_SESSION {
            assert_eq!(endless.take("banner"), None);
            assert_eq!(endless.said(), None);
        }
        assert_eq!(endless.take("banner"), None);
        assert_eq!(endless.said(), Some(None));
        assert_eq!(endless.take("fruix-session 7"), None);
    }
}
