//! Host key checking: a pinned key, or an OpenSSH `known_hosts` file.
//!
//! # Contract
//!
//! - [`HostKeyPolicy::Pinned`]: the server's key must equal the pinned one;
//!   anything else is refused as a changed key.
//! - [`HostKeyPolicy::KnownHosts`]: the file is read once, as a file the
//!   user names is (through its symlinks; a directory, FIFO or device is
//!   refused unread, `/dev/null` reads as empty; at most
//!   [`MAX_KNOWN_HOSTS_BYTES`], UTF-8). Its entries match the host as
//!   russh's `known_hosts` helpers match them (hashed `|1|` entries,
//!   `[host]:port` for ports other than 22, comma-separated host lists). An
//!   entry with the offered key accepts; else an entry of the same key type
//!   with another key is a changed key, always refused with a warning
//!   naming the file and line; no entry is an unknown host: refused with
//!   the key's `SHA256:` fingerprint and the line to add, or, with
//!   `accept_new`, recorded in the file (created if missing, in a directory
//!   that must exist: none is created) and accepted. A key that an
//!   `@revoked` line names (for any host) is refused first, whatever else
//!   the file says. A line naming this host, or an `@revoked` line, that is
//!   no entry (no key, a key that does not parse) is refused naming it.
//! - Certificates are refused (not supported).
//! - Every refusal is the caller's to fix ([`Error::HostKey`], exit status
//!   2, never retried): the known_hosts file or pinned key says no, or is
//!   not one. A failure of this host to read or write the file (an I/O
//!   error, a full disk) stays a system failure ([`Error::Io`]).
//! - A refusal is kept in the verifier's verdict so that the connection
//!   error the caller sees is this explanation, not russh's.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fruix_core::error::{HostKeyProblem, OfferedKey, RecordedKey};
use fruix_core::executor::EventSink;
use fruix_core::{Error, MetadataFileProblem};
use russh::client;
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Exactly this key (`ssh-ed25519 AAAA...`), known_hosts not consulted.
    Pinned(String),
    /// An OpenSSH known_hosts file.
    KnownHosts {
        /// The file read. A missing one refuses every host, unless
        /// `accept_new`: then it is created (its directory must exist).
        path: PathBuf,
        /// Record an unknown host's key instead of refusing it.
        accept_new: bool,
    },
}

impl HostKeyPolicy {
    /// The known_hosts file `path`, or `~/.ssh/known_hosts`.
    pub fn known_hosts(path: Option<PathBuf>, accept_new: bool) -> HostKeyPolicy {
        let path = path.unwrap_or_else(|| {
            fruix_core::fsutil::home_dir()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".ssh/known_hosts")
        });
        HostKeyPolicy::KnownHosts { path, accept_new }
    }
}

/// The russh client handler: checks the host key, keeps the reason of a
/// refusal.
pub struct HostKeyVerifier {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) policy: HostKeyPolicy,
    pub(crate) verdict: Arc<Mutex<Option<Error>>>,
    pub(crate) events: EventSink,
}

/// `host` as known_hosts names it: `host`, or `[host]:port` off port 22.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

impl HostKeyVerifier {
    /// The refusal of this host's key for `problem`.
    fn refused(&self, problem: HostKeyProblem) -> Error {
        Error::HostKey {
            host: known_hosts_name(&self.host, self.port),
            problem: Box::new(problem),
        }
    }

    /// [`Self::refused`] for a changed (or revoked) key, also said as a
    /// warning: it may be an attack.
    fn warned(&self, problem: HostKeyProblem) -> Error {
        let e = self.refused(problem);
        self.events.warn(e.to_string());
        e
    }

    fn check(&self, key: &PublicKey) -> Result<(), Error> {
        let name = known_hosts_name(&self.host, self.port);
        let openssh = key
            .to_openssh()
            .map_err(|e| Error::system(format!("cannot encode the host key of {name}: {e}")))?;
        let offered = OfferedKey {
            algorithm: key.algorithm().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            entry: format!("{name} {openssh}"),
        };
        match &self.policy {
            HostKeyPolicy::Pinned(pinned) => {
                let pinned_key = parse_pinned(pinned).map_err(|p| self.refused(p))?;
                if pinned_key.key_data() == key.key_data() {
                    return Ok(());
                }
                Err(self.warned(HostKeyProblem::Changed {
                    offered,
                    recorded: RecordedKey::Pinned {
                        fingerprint: pinned_key.fingerprint(HashAlg::Sha256).to_string(),
                    },
                }))
            }
            HostKeyPolicy::KnownHosts { path, accept_new } => {
                let refused = |problem| self.refused(problem);
                let text = match read_known_hosts(path).map_err(|r| r.into_error(&refused))? {
                    Some(text) => text,
                    None if *accept_new => String::new(),
                    None => {
                        return Err(refused(HostKeyProblem::KnownHostsNotFound {
                            path: path.clone(),
                            offered,
                        }))
                    }
                };
                let found = Entries::read(&text, path)
                    .and_then(|entries| entries.lookup(&self.host, self.port, key, path))
                    .map_err(|r| r.into_error(&refused))?;
                match found {
                    Lookup::Revoked { line } => Err(self.warned(HostKeyProblem::Revoked {
                        path: path.clone(),
                        line,
                        offered,
                    })),
                    Lookup::Known => Ok(()),
                    Lookup::Changed { line } => Err(self.warned(HostKeyProblem::Changed {
                        offered,
                        recorded: RecordedKey::Line {
                            path: path.clone(),
                            line,
                        },
                    })),
                    Lookup::Unknown if *accept_new => {
                        record(path, &text, &offered.entry).map_err(|r| r.into_error(&refused))?;
                        self.events.warn(format!(
                            "recorded the new host key of {} ({offered}) in {}",
                            fruix_core::escape::text(&name),
                            fruix_core::escape::path(path)
                        ));
                        Ok(())
                    }
                    Lookup::Unknown => Err(refused(HostKeyProblem::Unknown {
                        path: path.clone(),
                        offered,
                    })),
                }
            }
        }
    }
}

/// A failure to use a known_hosts file: the caller's (a [`HostKeyProblem`])
/// or this host's (an [`Error::Io`] or other system failure).
#[derive(Debug)]
enum Refusal {
    Problem(HostKeyProblem),
    System(Error),
}

impl Refusal {
    fn into_error(self, refused: &impl Fn(HostKeyProblem) -> Error) -> Error {
        match self {
            Refusal::Problem(problem) => refused(problem),
            Refusal::System(e) => e,
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::System(e)
    }
}

/// The largest known_hosts file read.
pub const MAX_KNOWN_HOSTS_BYTES: usize = 16 << 20;

/// Opened with, besides reading or appending: never waiting on a FIFO,
/// never taking a terminal.
const OPEN_FLAGS: i32 =
    (rustix::fs::OFlags::NONBLOCK.bits() | rustix::fs::OFlags::NOCTTY.bits()) as i32;

/// What the known_hosts file `path` is called in messages.
const KNOWN_HOSTS_FILE: &str = "known hosts file";

/// Whether `meta` is the null device's (`/dev/null`, which reads as empty
/// and takes any write: `--known-hosts /dev/null` remembers nothing).
fn is_null_device(meta: &Metadata) -> bool {
    meta.file_type().is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev())
}

/// `problem` with the known_hosts file `path`, when `meta` is neither a
/// regular file nor the null device.
fn unless_usable(path: &Path, meta: &Metadata) -> Result<(), Refusal> {
    if meta.is_file() || is_null_device(meta) {
        return Ok(());
    }
    Err(Refusal::Problem(HostKeyProblem::KnownHostsFile {
        path: path.to_path_buf(),
        problem: MetadataFileProblem::NotRegular {
            kind: fruix_core::fsutil::file_type_name(meta.file_type()),
            named: Some(KNOWN_HOSTS_FILE),
        },
    }))
}

/// The text of the known_hosts file `path` (through its symlinks: the
/// user named it), `None` when there is none. What is not a regular file
/// (but the null device) is refused unopened, and checked again on the
/// descriptor; a FIFO is never waited on.
fn read_known_hosts(path: &Path) -> Result<Option<String>, Refusal> {
    const READ: &str = "read known hosts file";
    match std::fs::metadata(path) {
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None)
        }
        Err(e) => return Err(Error::io(READ, path, e).into()),
        Ok(meta) => unless_usable(path, &meta)?,
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(READ, path, e).into()),
    };
    let meta = file.metadata().map_err(|e| Error::io(READ, path, e))?;
    unless_usable(path, &meta)?;
    let mut bytes = Vec::new();
    file.take(MAX_KNOWN_HOSTS_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(READ, path, e))?;
    let refused = |problem| {
        Refusal::Problem(HostKeyProblem::KnownHostsFile {
            path: path.to_path_buf(),
            problem,
        })
    };
    if bytes.len() > MAX_KNOWN_HOSTS_BYTES {
        return Err(refused(MetadataFileProblem::TooLarge {
            limit: MAX_KNOWN_HOSTS_BYTES,
        }));
    }
    String::from_utf8(bytes).map(Some).map_err(|e| {
        refused(MetadataFileProblem::NotUtf8 {
            offset: e.utf8_error().valid_up_to(),
        })
    })
}

/// One host entry of a known_hosts file.
struct HostEntry<'a> {
    /// Its 1-based line.
    line: usize,
    /// Its host patterns, as written.
    hosts: &'a str,
    /// Its key, or why it has none.
    key: Result<PublicKey, String>,
}

/// The entries of a known_hosts file.
struct Entries<'a> {
    hosts: Vec<HostEntry<'a>>,
    /// The keys `@revoked` lines name, with their lines.
    revoked: Vec<(usize, PublicKey)>,
}

/// What a known_hosts file says of a host's key.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    /// An entry of the host has the key.
    Known,
    /// No entry of the host has it; the first with a key of its type is
    /// on `line`.
    Changed { line: usize },
    /// No entry of the host has a key of its type.
    Unknown,
    /// An `@revoked` line on `line` names the key.
    Revoked { line: usize },
}

/// The key of an entry's `TYPE BASE64` fields, or why there is none.
fn entry_key(kind: Option<&str>, base64: Option<&str>) -> Result<PublicKey, String> {
    match (kind, base64) {
        (None, _) => Err("it names no key type and no key".into()),
        (Some(_), None) => Err("it has no key after its key type".into()),
        (Some(_), Some(base64)) => russh::keys::parse_public_key_base64(base64)
            .map_err(|e| format!("its key is not a public key ({e})")),
    }
}

impl<'a> Entries<'a> {
    /// The entries of known_hosts text `text`: comments and blank lines
    /// skipped, as are markers other than `@revoked` (`@cert-authority`:
    /// certificates are refused anyway). An `@revoked` line whose key
    /// cannot be read is refused: what it revokes is not known.
    fn read(text: &'a str, path: &Path) -> Result<Entries<'a>, Refusal> {
        let mut entries = Entries {
            hosts: Vec::new(),
            revoked: Vec::new(),
        };
        for (i, line) in text.split('\n').enumerate() {
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next().filter(|f| !f.starts_with('#')) else {
                continue;
            };
            match first {
                "@revoked" => {
                    let _patterns = fields.next();
                    let key = entry_key(fields.next(), fields.next()).map_err(|detail| {
                        Refusal::Problem(HostKeyProblem::MalformedLine {
                            path: path.to_path_buf(),
                            line: i + 1,
                            detail: format!("an @revoked line, but {detail}"),
                        })
                    })?;
                    entries.revoked.push((i + 1, key));
                }
                marker if marker.starts_with('@') => {}
                hosts => entries.hosts.push(HostEntry {
                    line: i + 1,
                    hosts,
                    key: entry_key(fields.next(), fields.next()),
                }),
            }
        }
        Ok(entries)
    }

    /// What these entries say of `key` as the host key of `host` on
    /// `port`.
    fn lookup(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
        path: &Path,
    ) -> Result<Lookup, Refusal> {
        if let Some((line, _)) = self
            .revoked
            .iter()
            .find(|(_, revoked)| revoked.key_data() == key.key_data())
        {
            return Ok(Lookup::Revoked { line: *line });
        }
        let mut changed = None;
        for entry in self.naming(host, port)? {
            match &entry.key {
                Err(detail) => {
                    return Err(Refusal::Problem(HostKeyProblem::MalformedLine {
                        path: path.to_path_buf(),
                        line: entry.line,
                        detail: format!("it names this host, but {detail}"),
                    }))
                }
                Ok(recorded) if recorded.key_data() == key.key_data() => return Ok(Lookup::Known),
                Ok(recorded) if recorded.algorithm() == key.algorithm() => {
                    changed = changed.or(Some(entry.line))
                }
                Ok(_) => {}
            }
        }
        Ok(changed.map_or(Lookup::Unknown, |line| Lookup::Changed { line }))
    }

    /// The host entries that name `host` on `port`, as russh matches them
    /// (hashed names included): russh reads each entry's host patterns,
    /// with a placeholder key, from a private copy, one entry a line.
    fn naming(&self, host: &str, port: u16) -> Result<Vec<&HostEntry<'a>>, Refusal> {
        /// Any key: russh reads it, fruix reads the entry's own.
        const PLACEHOLDER: &str =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
        if self.hosts.is_empty() {
            return Ok(Vec::new());
        }
        let copy = tempfile::NamedTempFile::new().map_err(|e| {
            Error::system(format!(
                "cannot make a temporary file to match known hosts entries: {e}"
            ))
        })?;
        let mut lines = String::new();
        for entry in &self.hosts {
            lines.push_str(entry.hosts);
            lines.push(' ');
            lines.push_str(PLACEHOLDER);
            lines.push('\n');
        }
        copy.as_file()
            .write_all(lines.as_bytes())
            .map_err(|e| Error::io("write", copy.path(), e))?;
        let matched = russh::keys::known_hosts::known_host_keys_path(host, port, copy.path())
            .map_err(|e| Error::system(format!("cannot match known hosts entries: {e}")))?;
        Ok(matched
            .into_iter()
            .filter_map(|(n, _)| self.hosts.get(n.checked_sub(1)?))
            .collect())
    }
}

/// Appends `entry` to the known_hosts file `path`, which held `text`
/// (empty when missing); creates the file, never its directory.
fn record(path: &Path, text: &str, entry: &str) -> Result<(), Refusal> {
    const RECORD: &str = "record a new host key in known hosts file";
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let no_directory = || {
        Refusal::Problem(HostKeyProblem::NoDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(no_directory()),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Err(no_directory())
        }
        Err(e) => return Err(Error::io(RECORD, path, e).into()),
    }
    if let Ok(meta) = std::fs::metadata(path) {
        unless_usable(path, &meta)?;
    }
    let file: File = match OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Err(no_directory())
        }
        Err(e) => return Err(Error::io(RECORD, path, e).into()),
    };
    let meta = file.metadata().map_err(|e| Error::io(RECORD, path, e))?;
    unless_usable(path, &meta)?;
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    (&file)
        .write_all(format!("{separator}{entry}\n").as_bytes())
        .map_err(|e| Error::io(RECORD, path, e).into())
}

/// Parses a pinned key, `ssh-ed25519 AAAA... [comment]`; what is wrong
/// with it otherwise.
pub fn parse_pinned(text: &str) -> Result<PublicKey, HostKeyProblem> {
    let base64 = text.split_whitespace().nth(1).unwrap_or(text.trim());
    russh::keys::parse_public_key_base64(base64).map_err(|e| HostKeyProblem::InvalidPinned {
        text: text.to_string(),
        detail: e.to_string(),
    })
}

impl client::Handler for HostKeyVerifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let outcome = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check(key),
            PublicKeyOrCertificate::Certificate(_) => {
                Err(self.refused(HostKeyProblem::Certificate))
            }
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(e) => {
                *self.verdict.lock().expect("verdict lock") = Some(e);
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::{ExitStatus, Failure};

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";

    fn verifier(policy: HostKeyPolicy) -> HostKeyVerifier {
        HostKeyVerifier {
            host: "127.0.0.1".into(),
            port: 2222,
            policy,
            verdict: Default::default(),
            events: EventSink::discard(),
        }
    }

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    /// A known_hosts file holding `text` (none when `None`), in a new
    /// directory.
    fn known_hosts(text: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        (dir, path)
    }

    /// Checks KEY, as the host key of `[127.0.0.1]:2222`, against the
    /// known_hosts file `path`.
    fn check_key(path: &std::path::Path, accept_new: bool) -> fruix_core::Result<()> {
        verifier(HostKeyPolicy::known_hosts(
            Some(path.to_path_buf()),
            accept_new,
        ))
        .check(&key(KEY))
    }

    #[test]
    fn unknown_host_names_fingerprint_and_line_then_accept_new_records_it() {
        let (_dir, path) = known_hosts(None);
        let e = check_key(&path, false).unwrap_err().to_string();
        assert!(e.contains("not found") && e.contains("SHA256:"), "{e}");
        assert!(
            e.contains(&format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}")),
            "{e}"
        );
        check_key(&path, true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}")),
            "{text}"
        );
        check_key(&path, false).unwrap();
    }

    #[test]
    fn changed_key_is_refused_even_with_accept_new() {
        let (_dir, path) = known_hosts(Some(&format!(
            "# c\n[127.0.0.1]:2222 ssh-ed25519 {OTHER}\n"
        )));
        let e = check_key(&path, true).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(
                problem(e),
                HostKeyProblem::Changed {
                    recorded: RecordedKey::Line { line: 2, .. },
                    ..
                }
            ),
            "{text}"
        );
        // The line counted as an editor counts it (russh's count skips
        // comments: it said line 1).
        assert!(
            text.contains("HAS CHANGED") && text.contains("line 2 of"),
            "{text}"
        );
        let e = verifier(HostKeyPolicy::Pinned(format!("ssh-ed25519 {OTHER}")))
            .check(&key(KEY))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HAS CHANGED") && e.contains("pinned"), "{e}");
        verifier(HostKeyPolicy::Pinned(format!("ssh-ed25519 {KEY} comment")))
            .check(&key(KEY))
            .unwrap();
    }

    #[test]
    fn a_revoked_key_is_refused_whatever_else_the_file_says() {
        // russh's reader skips `@revoked` lines: a revoked key that is also
        // listed (or is new, with accept_new) was accepted.
        for (entries, accept_new) in [
            (format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"), false),
            (String::new(), true),
        ] {
            let (_dir, path) = known_hosts(Some(&format!(
                "@revoked * ssh-ed25519 {KEY} old builder key\n{entries}"
            )));
            let e = check_key(&path, accept_new).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(problem(e), HostKeyProblem::Revoked { line: 1, .. }),
                "{text}"
            );
            assert!(
                text.contains("REVOKED") && text.contains("line 1"),
                "{text}"
            );
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), 1 + entries.lines().count(), "{text}");
        }
        // Another revoked key changes nothing.
        let (_dir, path) = known_hosts(Some(&format!(
            "@revoked * ssh-ed25519 {OTHER}\n[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"
        )));
        check_key(&path, false).unwrap();
    }

    #[test]
    fn hashed_entries_match() {
        let (_dir, path) = known_hosts(Some(&format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\n")));
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-H", "-f"])
            .arg(&path)
            .output()
            .expect("ssh-keygen (Debian package openssh-client) is needed");
        assert!(status.status.success());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("|1|"), "{text}");
        check_key(&path, false).unwrap();
    }

    /// The problem of a refusal, which must be the caller's to fix: exit
    /// status 2 before a run, never retried.
    fn problem(e: Error) -> HostKeyProblem {
        assert_eq!(e.failure(), Failure::Input, "{e:?}");
        assert_eq!(
            ExitStatus::of_failure(e.failure(), ExitStatus::Usage),
            ExitStatus::Usage
        );
        match e {
            Error::HostKey { host, problem } => {
                assert_eq!(host, "[127.0.0.1]:2222");
                *problem
            }
            e => panic!("not a host key refusal: {e:?}"),
        }
    }

    /// Regression: a missing known_hosts file was read as empty, and its
    /// host refused as unknown, a system failure (exit 3).
    #[test]
    fn a_missing_known_hosts_file_is_not_found_without_accept_new() {
        let (dir, path) = known_hosts(None);
        let e = check_key(&path, false).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(problem(e), HostKeyProblem::KnownHostsNotFound { path: p, .. } if p == path),
            "{text}"
        );
        assert!(
            text.contains("not found") && text.contains("SHA256:"),
            "{text}"
        );
        assert!(
            text.contains(&format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}")),
            "{text}"
        );
        assert!(!path.exists());
        drop(dir);
    }

    /// Regression: `--accept-new-host-key` created the missing directories
    /// of the known_hosts path (`/nonexistent/`, as root).
    #[test]
    fn accept_new_creates_no_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let path = missing.join("deeper/known_hosts");
        let e = check_key(&path, true).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(problem(e), HostKeyProblem::NoDirectory { dir: d, .. } if d == missing.join("deeper")),
            "{text}"
        );
        assert!(
            text.contains("does not exist") && text.contains("deeper"),
            "{text}"
        );
        assert!(!missing.exists());
        // A file in a directory that is a file: no directory either.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = check_key(&file.join("known_hosts"), true).unwrap_err();
        assert!(matches!(problem(e), HostKeyProblem::NoDirectory { .. }));
    }

    /// Regression: a known_hosts path that is a directory was a system
    /// failure (`failed to read ...: Is a directory`, exit 3).
    #[test]
    fn a_known_hosts_directory_is_refused_as_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        for accept_new in [false, true] {
            let e = check_key(dir.path(), accept_new).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(
                    problem(e),
                    HostKeyProblem::KnownHostsFile {
                        problem: MetadataFileProblem::NotRegular {
                            kind: "directory",
                            ..
                        },
                        ..
                    }
                ),
                "{text}"
            );
            assert!(text.contains("is a directory"), "{text}");
        }
    }

    /// A FIFO is refused without waiting for a writer.
    #[test]
    fn a_known_hosts_fifo_is_refused_unread() {
        let (_dir, path) = known_hosts(None);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = check_key(&path, false).unwrap_err();
        assert!(
            matches!(problem(e), HostKeyProblem::KnownHostsFile { .. }),
            "refused"
        );
    }

    /// `/dev/null` remembers nothing: every host is unknown, and accepted
    /// with accept_new.
    #[test]
    fn dev_null_reads_as_empty_and_takes_new_keys() {
        let path = Path::new("/dev/null");
        assert!(matches!(
            problem(check_key(path, false).unwrap_err()),
            HostKeyProblem::Unknown { .. }
        ));
        check_key(path, true).unwrap();
    }

    /// Regression: a malformed line naming the host was a system failure,
    /// naming no line.
    #[test]
    fn a_malformed_line_naming_the_host_is_refused_naming_it() {
        for (bad, accept_new) in [
            ("[127.0.0.1]:2222 ssh-ed25519 notakey", false),
            ("[127.0.0.1]:2222 ssh-ed25519", true),
            ("[127.0.0.1]:2222", false),
            ("@revoked * ssh-ed25519 notakey", false),
        ] {
            let (_dir, path) = known_hosts(Some(&format!(
                "# c\n\nother.example ssh-ed25519 nokey-but-another-host\n{bad}\n[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"
            )));
            let e = check_key(&path, accept_new).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(problem(e), HostKeyProblem::MalformedLine { line: 4, .. }),
                "{bad}: {text}"
            );
            assert!(
                text.contains("line 4 of") && text.contains("known_hosts"),
                "{text}"
            );
        }
        // A malformed line of another host is skipped, as OpenSSH skips it.
        let (_dir, path) = known_hosts(Some(&format!(
            "other.example ssh-ed25519 notakey\n[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"
        )));
        check_key(&path, false).unwrap();
    }

    #[test]
    fn unknown_changed_and_revoked_keys_are_the_callers_to_fix() {
        let (_dir, path) = known_hosts(Some(""));
        assert!(matches!(
            problem(check_key(&path, false).unwrap_err()),
            HostKeyProblem::Unknown { .. }
        ));
        let (_dir, path) = known_hosts(Some(&format!("[127.0.0.1]:2222 ssh-ed25519 {OTHER}\n")));
        assert!(matches!(
            problem(check_key(&path, true).unwrap_err()),
            HostKeyProblem::Changed { .. }
        ));
        // Another entry of the host with the key accepts it (as OpenSSH does).
        let (_dir, path) = known_hosts(Some(&format!(
            "[127.0.0.1]:2222 ssh-ed25519 {OTHER}\n[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"
        )));
        check_key(&path, false).unwrap();
        let pinned = |text: String| verifier(HostKeyPolicy::Pinned(text)).check(&key(KEY));
        assert!(matches!(
            problem(pinned(format!("ssh-ed25519 {OTHER}")).unwrap_err()),
            HostKeyProblem::Changed {
                recorded: RecordedKey::Pinned { .. },
                ..
            }
        ));
    }

    /// Regression: a pinned key that does not parse (a machine's
    /// `(host-key "ssh-ed25519 notakey")`) was a system failure.
    #[test]
    fn a_pinned_key_that_is_no_key_is_the_callers_to_fix() {
        let e = verifier(HostKeyPolicy::Pinned("ssh-ed25519 notakey\u{1b}[2J".into()))
            .check(&key(KEY))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(problem(e), HostKeyProblem::InvalidPinned { .. }),
            "{text}"
        );
        assert!(
            text.contains("is not a public key") && !text.contains('\u{1b}'),
            "{text}"
        );
        assert!(parse_pinned(&format!("ssh-ed25519 {KEY} comment")).is_ok());
    }

    #[test]
    fn a_certificate_is_the_callers_to_fix() {
        let e =
            verifier(HostKeyPolicy::known_hosts(None, false)).refused(HostKeyProblem::Certificate);
        assert!(matches!(problem(e), HostKeyProblem::Certificate));
    }

    /// A failure of this host to write the file stays a system failure.
    #[test]
    fn a_failed_write_while_recording_is_a_system_failure() {
        // A regular file no one may append to, root included (a file mode
        // would not stop root): `/proc/version`, whose text names no host.
        let path = Path::new("/proc/version");
        let e = check_key(path, true).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert_eq!(e.failure(), Failure::System);
    }
}
