//! An XCP-ng pool master as a [`Host`]: `xe` commands run over SSH (russh,
//! the host key pinned by the VM machine's `master-host-key`, else checked
//! against the user's known_hosts), on one connection made at the first
//! command and made again at the command after one that lost it. A
//! command's whole stdout comes back, up to
//! [`MASTER_STDOUT_MAX_BYTES`]: more is an error. A command given up on
//! ([`Host::run_until`]) is stopped on the master, its whole remote session,
//! before the call returns.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fruix_core::bounded::Tail;
use fruix_core::executor::{EventSink, Stream};
use fruix_core::ssh_target::SshTarget;
use fruix_core::{Error, Result};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::driver::{Host, Output};
use crate::ssh::remote::OUTPUT_TAIL_LINES;
use crate::ssh::{
    is_connection_lost, shell_quote, HostKeyPolicy, RemoteExit, SshOptions, SshSession,
};

/// The most of one command's stdout an [`SshHost`] holds (1 MiB of text):
/// more is an error, never a silent cut.
pub const MASTER_STDOUT_MAX_BYTES: usize = 1 << 20;

/// The pool master: each command's words are shell-quoted and run as one
/// remote command ([`SshSession::stream`]). Its [`Output`] holds the whole
/// stdout, line by line (each line ended by a newline, bytes that are not
/// UTF-8 shown as `\ooo`), up to [`MASTER_STDOUT_MAX_BYTES`]: more stops
/// the command and is an error. Of stderr only the last
/// [`OUTPUT_TAIL_LINES`] lines are kept, after a note when earlier lines
/// were dropped. A command that loses the connection fails (it is not run
/// again: it may have done its work), and the next command connects anew.
#[derive(Debug)]
pub struct SshHost {
    options: SshOptions,
    /// The connection, once made; none again once it was lost.
    session: Mutex<Option<Arc<SshSession>>>,
}

impl SshHost {
    /// The master `target`, authenticating with `identity` (else the
    /// agent's keys, then the default keys), its host key checked against
    /// `host_key` when pinned (known_hosts then not consulted), else against
    /// `~/.ssh/known_hosts` (an unknown host refused).
    pub fn new(target: SshTarget, identity: Option<PathBuf>, host_key: Option<String>) -> Self {
        let mut options = SshOptions::with_key(target, PathBuf::new(), PathBuf::new());
        options.identity = identity;
        // A line is never longer than the whole: a cut line (which says so)
        // is always past the cap on stdout, so an error, never a silent cut.
        options.max_line_bytes = MASTER_STDOUT_MAX_BYTES;
        options.host_keys = match host_key {
            Some(key) => HostKeyPolicy::Pinned(key),
            None => HostKeyPolicy::known_hosts(None, false),
        };
        SshHost {
            options,
            session: Mutex::new(None),
        }
    }

    /// How the master is reached: its target, the key and the host key
    /// check.
    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// The connection: the one made before, else a new one (commands
    /// wait for it, so that there is only one).
    async fn session(&self) -> Result<Arc<SshSession>> {
        let mut session = self.session.lock().await;
        if let Some(session) = &*session {
            return Ok(session.clone());
        }
        let connected = SshSession::connect(&self.options, &EventSink::discard())
            .await
            .map_err(|e| match e {
                // Say which machine, and which of its fields set the key
                // and host key: not the guest's.
                Error::System { message, log } => Error::System {
                    message: format!(
                        "the XCP-ng pool master (logged into with the VM machine's `master-key`, else the ssh-agent's keys, then ~/.ssh/id_*; its host key pinned by `master-host-key`, else checked in ~/.ssh/known_hosts): {message}"
                    ),
                    log,
                },
                other => other,
            })?;
        *session = Some(connected.clone());
        Ok(connected)
    }

    /// Lets go of `lost`, a connection that was lost, unless another took
    /// its place already: the next command connects anew.
    async fn forget(&self, lost: &Arc<SshSession>) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| Arc::ptr_eq(s, lost)) {
            *session = None;
        }
    }
}

#[async_trait]
impl Host for SshHost {
    async fn run_until(
        &self,
        argv: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<Output>> {
        let session = self.session().await?;
        let script: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        // Too much stdout stops the command, through a cancel of its own.
        let too_much = cancel.child_token();
        let mut stdout = WholeStdout::new(MASTER_STDOUT_MAX_BYTES);
        let mut stderr = Tail::new(OUTPUT_TAIL_LINES);
        let streamed = session
            .stream(
                &script.join(" "),
                None,
                &too_much,
                &EventSink::discard(),
                |stream, line| match stream {
                    Stream::Stdout => {
                        if !stdout.push(line) {
                            too_much.cancel();
                        }
                    }
                    Stream::Stderr => stderr.push(line),
                },
            )
            .await;
        let exit = match streamed {
            Err(e) if is_connection_lost(&e) => {
                self.forget(&session).await;
                return Err(e);
            }
            streamed => streamed?,
        };
        if stdout.over {
            return Err(Error::system(format!(
                "`{}` on the XCP-ng pool master {} printed more than {MASTER_STDOUT_MAX_BYTES} bytes on stdout, more than fruix reads of an `xe` command; it was stopped",
                fruix_core::escape::text(&argv.join(" ")),
                self.options.target
            )));
        }
        Ok(exit.map(|exit| Output {
            status: match exit {
                RemoteExit::Code(c) => i32::try_from(c).unwrap_or(-1),
                RemoteExit::Signal(_) => -1,
            },
            stdout: stdout.text,
            stderr: stderr.text(),
        }))
    }
}

/// A command's whole stdout, line by line, up to a cap on its bytes.
#[derive(Debug)]
struct WholeStdout {
    /// The lines so far, each ended by a newline.
    text: String,
    cap: usize,
    /// A line would have gone past the cap: the output is incomplete.
    over: bool,
}

impl WholeStdout {
    fn new(cap: usize) -> Self {
        WholeStdout {
            text: String::new(),
            cap,
            over: false,
        }
    }

    /// Adds `line` and its newline; false (and nothing kept from then on)
    /// once that would go past the cap.
    fn push(&mut self, line: &str) -> bool {
        if !self.over && self.text.len() + line.len() < self.cap {
            self.text.push_str(line);
            self.text.push('\n');
        } else {
            self.over = true;
        }
        !self.over
    }
}
