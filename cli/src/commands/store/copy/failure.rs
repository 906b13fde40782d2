//! How a `store copy` fails: what went wrong ([`Failed`]), and its exit
//! status and message, with how the other side's `store serve` ended and
//! its last stderr lines ([`RemoteEnd::error`]).

use std::path::{Path, PathBuf};

use fruix_core::bounded::Tail;
use fruix_core::escape;
use fruix_core::ssh_target::SshTarget;
use fruix_core::ExitStatus;
use fruix_executors::ssh::RemoteExit;
use fruix_promote::error::ArchiveProblem;
use fruix_promote::serve::Client;

use super::serving::SERVE_END;
use crate::exit::CliError;

/// How the copy itself failed.
pub(super) enum Failed {
    /// As a store operation or the protocol fails.
    Store(fruix_promote::Error),
    /// The other side answered a request with this error: its own words,
    /// which its stderr repeats (not shown again).
    Answered(fruix_promote::Error),
    /// The other side's `store serve` has no store at this path (the
    /// other machine's): its answer to the hello said so.
    NoRemoteStore(PathBuf),
    /// The other side's `store serve` serves a store at this path (the
    /// other machine's), not at this store's: its objects' names and
    /// references name this store's path, so neither store would take
    /// the other's.
    OtherStore(PathBuf),
    /// The session did not end cleanly after its last answer
    /// ([`Client::finish`]), the other store having said that it imported
    /// `imported` objects (`--to`; none for `--from`).
    Unclean {
        e: fruix_promote::Error,
        imported: usize,
    },
}

/// `e`, from a request to `client`: the other side's when it answered it.
pub(super) fn answered<R, W>(client: &Client<R, W>, e: fruix_promote::Error) -> Failed {
    match client.answered_error() {
        true => Failed::Answered(e),
        false => Failed::Store(e),
    }
}

impl From<fruix_promote::Error> for Failed {
    fn from(e: fruix_promote::Error) -> Self {
        Failed::Store(e)
    }
}

/// How the other side's `store serve` ended, once the copy failed.
pub(super) struct RemoteEnd<'a> {
    /// The remote command line, and the machine it ran on.
    pub(super) command: &'a str,
    pub(super) target: &'a SshTarget,
    /// This store's path.
    pub(super) store: &'a Path,
    /// `to` or `from`.
    pub(super) direction: &'static str,
    /// Its stderr's last lines.
    pub(super) stderr: Tail,
    /// Its exit (`None`: the channel closed without one, the connection
    /// lost).
    pub(super) exit: Option<RemoteExit>,
    /// It neither sent nor took a byte for too long, or the copy ran out of
    /// time: it was stopped.
    pub(super) stalled: bool,
    /// It had not ended [`SERVE_END`] after its output did: it was stopped.
    pub(super) waited_out: bool,
}

impl RemoteEnd<'_> {
    /// The copy's failure `failed`, as its exit status and message.
    pub(super) fn error(&self, failed: Failed) -> CliError {
        let (target, store) = (self.target, self.store);
        // An error the other side answered is its own words: its stderr,
        // which says them again, is not shown.
        let (e, unclean, answered) = match failed {
            Failed::Store(e) => (e, None, false),
            Failed::Answered(e) => (e, None, true),
            Failed::Unclean { e, imported } => (e, Some(imported), false),
            // The other side's own words (its stderr) speak of its
            // `--store`: not shown.
            Failed::OtherStore(path) => {
                return CliError::usage(format!(
                    "the other machine ({target}) serves the store at {}, not one at this store's path {}: a store only takes objects of a store at its own path (their names and references name it), so nothing was copied; give --remote-store the path of a store at {} there (by default, this store's path)",
                    escape::path(&path),
                    escape::path(store),
                    escape::path(store),
                ))
            }
            Failed::NoRemoteStore(path) => {
                return CliError::usage(format!(
                    "no store at {} on the other machine ({target}); check --remote-store (by default, the other store's path is this one's)",
                    escape::path(&path)
                ))
            }
        };
        let (status, mut message) = match self.cut_short_by_its_death(&e, answered) {
            Some(cut) => (
                ExitStatus::SystemFailure,
                format!(
                    "the connection was lost: the other side ended in the middle of the archive it was sending ({cut}); nothing was copied, and this store was not changed"
                ),
            ),
            None => (e.exit_status(), e.to_string()),
        };
        // The other side's last stderr lines, one escaped line each.
        let stderr = &self.stderr;
        let dropped = (stderr.dropped() > 0)
            .then(|| format!("[earlier lines dropped: {}]", stderr.dropped()));
        let tail: String = dropped
            .into_iter()
            .chain(stderr.lines().map(escape::line))
            .map(|l| format!("\n  {l}"))
            .collect();
        // An unclean end says how it ended, or that nothing said so.
        let shown = match &self.exit {
            Some(exit) => !exit.success(),
            None => unclean.is_some(),
        };
        if !answered && (!tail.is_empty() || shown) {
            message.push_str(&format!(
                "\n`{}` on {target} {}{}{tail}",
                escape::text(self.command),
                self.how_it_ended(),
                if tail.is_empty() { "" } else { ":" },
            ));
        }
        // What an unclean end left: the other store keeps what it said
        // it imported; a fetch published nothing.
        match unclean {
            Some(0) if self.direction == "from" => {
                message.push_str("\nnothing was copied; this store was not changed")
            }
            Some(n) if n > 0 => message.push_str(&format!(
                "\nthe other store had answered that it imported {n} object(s), which it keeps; check them there with `fruix store verify`"
            )),
            _ => {}
        }
        CliError::new(status, anyhow::anyhow!(message))
    }

    /// When `e` (`answered`: the other side's answer) is an archive that
    /// ends early, and the other side ended as no server that sent it
    /// whole would (killed, its connection lost, an exit status other than
    /// 0 and than the 4 of a failure it found itself, such as an object of
    /// its own that is corrupt): what `e` said of where the archive ended.
    /// The copy then failed because the other side died, not because its
    /// archive was refused.
    fn cut_short_by_its_death<'e>(
        &self,
        e: &'e fruix_promote::Error,
        answered: bool,
    ) -> Option<&'e str> {
        let fruix_promote::Error::ArchiveRefused {
            problem: ArchiveProblem::Truncated,
            message,
            ..
        } = e
        else {
            return None;
        };
        let refusal = u32::from(ExitStatus::PromotionFailure.code());
        let died = match &self.exit {
            None => true,
            Some(RemoteExit::Signal(_)) => true,
            Some(RemoteExit::Code(code)) => *code != 0 && *code != refusal,
        };
        (died && !answered).then_some(message.as_str())
    }

    /// How the other side ended, after its command line.
    fn how_it_ended(&self) -> String {
        match (&self.exit, self.stalled) {
            (_, true) => "had not ended when the connection was closed".to_string(),
            (_, false) if self.waited_out => format!(
                "had not ended {}s after its output did, so it was stopped",
                SERVE_END.as_secs()
            ),
            (Some(RemoteExit::Signal(signal)), false) => format!("was killed by signal {signal}"),
            (Some(exit), false) => format!("ended with {}", exit.describe()),
            (None, false) => "ended with no exit status (the connection was lost)".to_string(),
        }
    }
}
