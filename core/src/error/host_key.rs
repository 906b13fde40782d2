//! Why an SSH host key was refused ([`Error::HostKey`](super::Error::HostKey)):
//! the caller's known_hosts file or pinned key says no, or cannot be read as
//! one. Each is the caller's to fix, never a failure of this host.

use std::fmt;
use std::path::PathBuf;

use super::MetadataFileProblem;
use crate::escape;

/// The host key a server offered, as a refusal shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedKey {
    /// Its algorithm, as OpenSSH names it (`ssh-ed25519`).
    pub algorithm: String,
    /// Its `SHA256:` fingerprint, as `ssh-keygen -lf` shows it.
    pub fingerprint: String,
    /// The known_hosts entry that accepts it: `NAME ALGORITHM BASE64`, NAME
    /// as known_hosts names the host (`[host]:port` off port 22).
    pub entry: String,
}

impl fmt::Display for OfferedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key {}",
            escape::text(&self.algorithm),
            escape::text(&self.fingerprint)
        )
    }
}

/// Where the key a changed host key was compared with came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedKey {
    /// Line `line` of the known_hosts file `path`.
    Line {
        /// The known_hosts file.
        path: PathBuf,
        /// The 1-based line of the entry.
        line: usize,
    },
    /// The pinned key (a machine's `host-key`, a configuration's), whose
    /// `SHA256:` fingerprint this is.
    Pinned {
        /// The pinned key's fingerprint.
        fingerprint: String,
    },
}

/// Why a host key was refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyProblem {
    /// The known_hosts file does not exist, and no new key may be recorded
    /// (`--accept-new-host-key` was not given).
    KnownHostsNotFound {
        /// The known_hosts file.
        path: PathBuf,
        /// The key the server offered.
        offered: OfferedKey,
    },
    /// A new key was to be recorded in `path`, but its directory `dir` does
    /// not exist (or is not a directory): fruix creates no directory for it.
    NoDirectory {
        /// The known_hosts file.
        path: PathBuf,
        /// Its directory, as given.
        dir: PathBuf,
    },
    /// The known_hosts file is not one fruix can read: not a regular file,
    /// too large, not UTF-8.
    KnownHostsFile {
        /// The known_hosts file.
        path: PathBuf,
        /// What is wrong with it.
        problem: MetadataFileProblem,
    },
    /// A line of the known_hosts file that names this host, or revokes a
    /// key, cannot be read as an entry.
    MalformedLine {
        /// The known_hosts file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong with it, read after "but".
        detail: String,
    },
    /// No entry of the known_hosts file names this host with a key of the
    /// offered key's type, and no new key may be recorded.
    Unknown {
        /// The known_hosts file.
        path: PathBuf,
        /// The key the server offered.
        offered: OfferedKey,
    },
    /// The server offered another key than the one recorded or pinned.
    Changed {
        /// The key the server offered.
        offered: OfferedKey,
        /// The key it was compared with.
        recorded: RecordedKey,
    },
    /// An `@revoked` line of the known_hosts file names the offered key.
    Revoked {
        /// The known_hosts file.
        path: PathBuf,
        /// The 1-based line of the `@revoked` entry.
        line: usize,
        /// The key the server offered.
        offered: OfferedKey,
    },
    /// The server offered a host certificate, which fruix does not check.
    Certificate,
    /// The pinned key is not a public key.
    InvalidPinned {
        /// The pinned key as given (untrusted).
        text: String,
        /// Why it does not parse.
        detail: String,
    },
}

impl fmt::Display for HostKeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const COMPARE: &str = "if this is the right machine (compare the fingerprint with `ssh-keygen -lf` on its host key)";
        match self {
            HostKeyProblem::KnownHostsNotFound { path, offered } => write!(
                f,
                "known hosts file {}: not found; the machine offers {offered}: {COMPARE}, create that file holding this line:\n{}\nor run again with --accept-new-host-key to create it with that key",
                escape::path(path),
                escape::line(&offered.entry)
            ),
            HostKeyProblem::NoDirectory { path, dir } => write!(
                f,
                "cannot record it in known hosts file {}: directory {} does not exist (or is not a directory), and fruix creates none for --accept-new-host-key: create it, or name a file in an existing directory",
                escape::path(path),
                escape::path(dir)
            ),
            HostKeyProblem::KnownHostsFile { path, problem } => {
                write!(f, "known hosts file {}: {problem}", escape::path(path))
            }
            HostKeyProblem::MalformedLine { path, line, detail } => write!(
                f,
                "line {line} of known hosts file {} is not an entry: {}; fix or remove that line",
                escape::path(path),
                escape::text(detail)
            ),
            HostKeyProblem::Unknown { path, offered } => write!(
                f,
                "not known: {offered} is in no entry of {}; {COMPARE}, add this line to that file:\n{}\nor run again with --accept-new-host-key to record it",
                escape::path(path),
                escape::line(&offered.entry)
            ),
            HostKeyProblem::Changed { offered, recorded } => {
                write!(f, "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED: it now presents {offered}, which does not match ")?;
                match recorded {
                    RecordedKey::Line { path, line } => {
                        write!(f, "line {line} of {}", escape::path(path))?
                    }
                    RecordedKey::Pinned { fingerprint } => write!(
                        f,
                        "the pinned host-key ({})",
                        escape::text(fingerprint)
                    )?,
                }
                f.write_str("; someone could be intercepting the connection (man in the middle), or the machine was reinstalled. Refusing to connect; if the change is legitimate, replace the old key")
            }
            HostKeyProblem::Revoked { path, line, offered } => write!(
                f,
                "{offered} is REVOKED by line {line} of {}; refusing to connect",
                escape::path(path)
            ),
            HostKeyProblem::Certificate => f.write_str(
                "the machine presented a host certificate; fruix checks plain host keys only: configure its sshd without HostCertificate, or pin its key",
            ),
            HostKeyProblem::InvalidPinned { text, detail } => write!(
                f,
                "pinned host-key {} is not a public key ({}); give it as in known_hosts: \"ssh-ed25519 AAAA...\"",
                escape::quoted(text),
                escape::text(detail)
            ),
        }
    }
}
