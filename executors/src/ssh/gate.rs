//! A remote command held at a gate until its lifeline is armed: nothing of
//! its script runs before the guest can stop it without this host, so a
//! cancel that comes before its session id is known ends at once.
//!
//! # Contract
//!
//! - [`SshSession::exec_gated`] starts a script as [`super::remote::wrap`]
//!   does (its first stderr line says its session id); then the shell reads
//!   one line of its stdin, and runs the script only when that line is
//!   [`GO`]. When its stdin ends first, it exits having run nothing of it.
//! - The caller reads the command's output, and passes the verdict of its
//!   first stderr line on ([`Gate::said`]): with a session id, the command's
//!   lifeline ([`super::kill`]) is opened, and the gate opens
//!   ([`Gate::armed`], then [`Gate::open`]) once it is (or could not be:
//!   the guest's `MaxSessions`); without one, the gate opens at once and the
//!   command runs without a lifeline. From the moment the script runs, this
//!   host going away (killed, its connection dropped) stops its whole
//!   session in the guest.
//! - [`Gate::stop`] stops the command from here. Once the gate is open, the
//!   kill loop runs over its session, as for any cancelled remote command,
//!   its output drained meanwhile. Before, the command's stdin is ended and
//!   nothing is waited for: the shell, held at its gate, exits by itself
//!   once it reads that end (its script never run), whether or not it has
//!   said its session id yet. This host going away ends that stdin too.
//! - [`Gate::release`] ends the lifeline once the command has ended by
//!   itself (its channel read to its end).

use russh::client::Msg;
use russh::{ChannelReadHalf, ChannelWriteHalf};

use super::kill::Arming;
use super::remote::wrap;
use super::SshSession;
use fruix_core::Result;

/// The line that lets a gated script run.
const GO: &str = "go";

/// The command line sent for `script` held at a gate (see the module docs).
pub(crate) fn wrap_gated(script: &str) -> String {
    wrap(&format!(
        "IFS= read -r gate && [ \"$gate\" = {GO} ] || exit 1\n{script}"
    ))
}

/// A gated remote command's stdin and lifeline (see the module docs); its
/// output is the caller's to read.
pub(crate) struct Gate<'a> {
    session: &'a SshSession,
    input: ChannelWriteHalf<Msg>,
    /// The session line's verdict, once the first stderr line was read.
    said: Option<Option<u32>>,
    lifeline: Arming<'a>,
    /// Whether [`GO`] was sent.
    open: bool,
}

impl SshSession {
    /// Starts `script` held at a gate (see [`super::gate`]): its output to
    /// read, and its gate.
    pub(crate) async fn exec_gated(&self, script: &str) -> Result<(ChannelReadHalf, Gate<'_>)> {
        let (output, input) = self.exec(wrap_gated(script)).await?.split();
        let gate = Gate {
            session: self,
            input,
            said: None,
            lifeline: Arming::Waiting,
            open: false,
        };
        Ok((output, gate))
    }
}

impl<'a> Gate<'a> {
    /// The verdict of the command's first stderr line: its session id, or
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

    /// Ends once the gate may open: the lifeline opened, or there is none
    /// to open. Never before the session line was read, nor once the gate
    /// is open. Cancel-safe.
    pub(crate) async fn armed(&mut self) {
        if self.open || self.said.is_none() {
            return std::future::pending().await;
        }
        if matches!(self.lifeline, Arming::Opening(_)) {
            self.lifeline = Arming::Opened(self.lifeline.opened().await);
        }
    }

    /// Lets the script run: sends [`GO`], then ends its stdin.
    pub(crate) async fn open(&mut self) {
        self.open = true;
        let _ = self.input.data(format!("{GO}\n").as_bytes()).await;
        let _ = self.input.eof().await;
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
            open,
        } = self;
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
            lifeline.release().await;
        };
        drain_while(output, stopping).await;
        let _ = input.close().await;
    }
}

/// Runs `work` while reading `output` to its end, what it says dropped.
async fn drain_while(output: &mut ChannelReadHalf, work: impl std::future::Future<Output = ()>) {
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

    /// Runs [`wrap_gated`]`("echo ran")` under `sh`, fed `stdin`: its exit
    /// status and stdout.
    fn gated(stdin: &str) -> (Option<i32>, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", &wrap_gated("echo ran")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("fruix-session "), "{stderr}");
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    }

    /// A gated script says its session, then runs only once told `go`:
    /// its stdin ending first (the host gone, or stopping it) ends it,
    /// having run nothing.
    #[test]
    fn a_gated_script_runs_only_once_told_to_go() {
        assert_eq!(gated("go\n"), (Some(0), "ran\n".into()));
        for held in ["", "g", "go", "no\n"] {
            assert_eq!(gated(held), (Some(1), String::new()), "{held:?}");
        }
    }
}
