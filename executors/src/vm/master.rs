//! An XCP-ng pool master as a [`Host`]: `xe` commands run over SSH (russh,
//! the host key checked against the user's known_hosts), on one connection
//! made at the first command.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fruix_core::executor::EventSink;
use fruix_core::ssh_target::SshTarget;
use fruix_core::Result;
use tokio::sync::OnceCell;

use super::driver::{Host, Output};
use crate::ssh::{shell_quote, HostKeyPolicy, SshOptions, SshSession};

/// The pool master: each command's words are shell-quoted and run as one
/// remote command ([`SshSession::output`]: only the last lines of its
/// output are kept). The host key must be in `~/.ssh/known_hosts`.
#[derive(Debug)]
pub struct SshHost {
    options: SshOptions,
    session: OnceCell<Arc<SshSession>>,
}

impl SshHost {
    /// The master `target`, authenticating with `identity` (else the agent
    /// and default keys).
    pub fn new(target: SshTarget, identity: Option<PathBuf>) -> Self {
        let mut options = SshOptions::with_key(target, PathBuf::new(), PathBuf::new());
        options.identity = identity;
        options.host_keys = HostKeyPolicy::known_hosts(None, false);
        SshHost {
            options,
            session: OnceCell::new(),
        }
    }
}

#[async_trait]
impl Host for SshHost {
    async fn run(&self, argv: &[String]) -> Result<Output> {
        let session = self
            .session
            .get_or_try_init(|| async {
                SshSession::connect(&self.options, &EventSink::discard()).await
            })
            .await?;
        let script: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        let out = session.output(&script.join(" "), None).await?;
        Ok(Output {
            status: match out.exit {
                crate::ssh::RemoteExit::Code(c) => i32::try_from(c).unwrap_or(-1),
                crate::ssh::RemoteExit::Signal(_) => -1,
            },
            stdout: out.stdout_text(),
            stderr: out.stderr_text(),
        })
    }
}
