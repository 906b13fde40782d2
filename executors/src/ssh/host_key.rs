//! Host key checking: a pinned key, or an OpenSSH `known_hosts` file.
//!
//! # Contract
//!
//! - [`HostKeyPolicy::Pinned`]: the server's key must equal the pinned one;
//!   anything else is refused as a changed key.
//! - [`HostKeyPolicy::KnownHosts`]: the file is read with russh's
//!   `known_hosts` helpers (hashed `|1|` entries, `[host]:port` for ports
//!   other than 22, comma-separated host lists). A matching entry accepts; an
//!   entry of the same key type with another key is a changed key, always
//!   refused with a warning naming the file and line; no entry is an unknown
//!   host: refused with the key's `SHA256:` fingerprint and the line to add,
//!   or, with `accept_new`, recorded in the file and accepted. A key that an
//!   `@revoked` line names (for any host) is refused first, whatever else
//!   the file says; russh's reader skips those lines.
//! - Certificates are refused (not supported).
//! - A refusal is kept in the verifier's verdict so that the connection
//!   error the caller sees is this explanation, not russh's.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fruix_core::executor::EventSink;
use fruix_core::Error;
use russh::client;
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Exactly this key (`ssh-ed25519 AAAA...`), known_hosts not consulted.
    Pinned(String),
    /// An OpenSSH known_hosts file.
    KnownHosts {
        /// The file read; a missing or unreadable one holds no entry. With
        /// `accept_new` an unknown host's key is appended to it (file and
        /// parent directories created as needed).
        path: PathBuf,
        /// Record an unknown host's key instead of refusing it.
        accept_new: bool,
    },
}

impl HostKeyPolicy {
    /// The known_hosts file `path`, or `~/.ssh/known_hosts`.
    pub fn known_hosts(path: Option<PathBuf>, accept_new: bool) -> HostKeyPolicy {
        let path = path.unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
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
    fn check(&self, key: &PublicKey) -> Result<(), Error> {
        let name = known_hosts_name(&self.host, self.port);
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let openssh = key
            .to_openssh()
            .map_err(|e| Error::system(format!("cannot encode the host key of {name}: {e}")))?;
        let changed = |against: String| {
            let message = format!(
                "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for {name}: it now presents {} key {fingerprint}, which does not match {against}; someone could be intercepting the connection (man in the middle), or the machine was reinstalled. Refusing to connect; if the change is legitimate, replace the old key",
                key.algorithm()
            );
            self.events.warn(message.clone());
            Error::system(message)
        };
        match &self.policy {
            HostKeyPolicy::Pinned(pinned) => {
                let pinned_key = parse_pinned(pinned)?;
                if pinned_key.key_data() == key.key_data() {
                    Ok(())
                } else {
                    Err(changed(format!(
                        "the pinned host-key ({})",
                        pinned_key.fingerprint(HashAlg::Sha256)
                    )))
                }
            }
            HostKeyPolicy::KnownHosts { path, accept_new } => {
                if let Some(line) = revoked_at(path, key)? {
                    let message = format!(
                        "the host key of {name} ({} {fingerprint}) is REVOKED by line {line} of {}; refusing to connect",
                        key.algorithm(),
                        path.display()
                    );
                    self.events.warn(message.clone());
                    return Err(Error::system(message));
                }
                match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                    Ok(true) => Ok(()),
                    Err(russh::keys::Error::KeyChanged { line }) => {
                        Err(changed(format!("line {line} of {}", path.display())))
                    }
                    Err(e) => Err(Error::system(format!(
                        "cannot read known hosts file {}: {e}; fix or remove the offending line",
                        path.display()
                    ))),
                    Ok(false) if *accept_new => {
                        russh::keys::known_hosts::learn_known_hosts_path(
                            &self.host, self.port, key, path,
                        )
                        .map_err(|e| {
                            Error::system(format!(
                                "cannot record the host key of {name} in {}: {e}",
                                path.display()
                            ))
                        })?;
                        self.events.warn(format!(
                            "recorded the new host key of {name} ({} {fingerprint}) in {}",
                            key.algorithm(),
                            path.display()
                        ));
                        Ok(())
                    }
                    Ok(false) => Err(Error::system(format!(
                        "the host key of {name} is not known: {} key {fingerprint} is in no entry of {}; if this is the right machine (compare the fingerprint with `ssh-keygen -lf` on its host key), add this line to that file:\n{name} {openssh}\nor run again with --accept-new-host-key to record it",
                        key.algorithm(),
                        path.display()
                    ))),
                }
            }
        }
    }
}

/// The largest known_hosts file read for `@revoked` lines.
const MAX_KNOWN_HOSTS_BYTES: u64 = 16 << 20;

/// The line of known_hosts file `path` that revokes `key`
/// (`@revoked PATTERNS TYPE BASE64`), whatever host it names; `None` when
/// no line does or there is no file. russh's reader skips such lines.
fn revoked_at(path: &std::path::Path, key: &PublicKey) -> Result<Option<usize>, Error> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read known hosts file", path, e)),
    };
    let mut text = Vec::new();
    file.take(MAX_KNOWN_HOSTS_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io("read known hosts file", path, e))?;
    if text.len() as u64 > MAX_KNOWN_HOSTS_BYTES {
        return Err(Error::system(format!(
            "known hosts file {} is larger than {MAX_KNOWN_HOSTS_BYTES} bytes",
            path.display()
        )));
    }
    let revokes = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        let mut fields = line.split_whitespace();
        fields.next() == Some("@revoked")
            && fields
                .nth(2)
                .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok())
                .is_some_and(|revoked| revoked.key_data() == key.key_data())
    };
    Ok(text.split(|b| *b == b'\n').position(revokes).map(|i| i + 1))
}

/// Parses a pinned key, `ssh-ed25519 AAAA... [comment]`.
pub fn parse_pinned(text: &str) -> Result<PublicKey, Error> {
    let base64 = text.split_whitespace().nth(1).unwrap_or(text.trim());
    russh::keys::parse_public_key_base64(base64).map_err(|e| {
        Error::system(format!(
            "pinned host-key {text:?} is not a public key ({e}); give it as in known_hosts: \"ssh-ed25519 AAAA...\""
        ))
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
            PublicKeyOrCertificate::Certificate(_) => Err(Error::system(format!(
                "{} presented a host certificate; fruix checks plain host keys only: configure its sshd without HostCertificate, or pin its key",
                known_hosts_name(&self.host, self.port)
            ))),
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
        assert!(e.contains("is not known") && e.contains("SHA256:"), "{e}");
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
        let e = check_key(&path, true).unwrap_err().to_string();
        assert!(e.contains("HAS CHANGED") && e.contains("line 1"), "{e}");
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
            assert!(matches!(e, Error::System { .. }), "{e:?}");
            let e = e.to_string();
            assert!(e.contains("REVOKED") && e.contains("line 1"), "{e}");
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
}
