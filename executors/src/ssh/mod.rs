//! The SSH transport of the guest executors (russh): connecting with host key
//! checking, authenticating, and running remote commands.
//!
//! # Contract
//!
//! - [`SshSession::connect`] opens one connection within
//!   [`SshOptions::connect_timeout`] (TCP, key exchange and authentication
//!   together) and keeps it alive with SSH keepalives
//!   ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_MAX`] unanswered ones drop it).
//! - The guest's host key is checked before anything is sent
//!   ([`host_key`]): against a pinned key when one is configured, else
//!   against an OpenSSH `known_hosts` file (hashed entries and `[host]:port`
//!   forms). An unknown host is refused with the key's `SHA256:` fingerprint
//!   and the exact line to add, unless `accept_new_host_key` is set: then the
//!   key is appended to the file (OpenSSH's `StrictHostKeyChecking=accept-new`).
//!   A changed key is always refused, with a warning that says so.
//! - Authentication uses the configured private key file (ed25519, ECDSA or
//!   RSA; an encrypted key's passphrase is read from the environment variable
//!   named by `passphrase_env`), else every key of a running ssh-agent
//!   (`SSH_AUTH_SOCK`), else the user's default keys (`~/.ssh/id_ed25519`,
//!   `id_ecdsa`, `id_rsa`). Refusal names the user, host and keys tried.
//! - Remote commands ([`remote`]) stream stdout and stderr as lines (each cut
//!   at [`SshOptions::max_line_bytes`]) and return the exit status or signal;
//!   cancelling one stops its whole remote session (every process the command
//!   started), not only the channel. A short command
//!   ([`SshSession::output`]) is stopped so after
//!   [`SshOptions::command_timeout`]: a guest that answers keepalives but
//!   whose command never ends (a hung disk) cannot hang the host.
//! - A guest that stops answering (its sshd stopped, its machine paused)
//!   holds a cancel for at most [`kill::ANSWER_WAIT`]: the channel of the
//!   kill loop that stops a cancelled command must open by then, or the
//!   session is taken to have stopped answering
//!   ([`SshSession::stopped_answering`]). Its lifeline is then left armed,
//!   to stop the command once the connection closes, and every later
//!   command on the session fails at once as a lost connection, instead of
//!   waiting for the keepalives to give the connection up (a minute).
//! - Every failure here is a system failure ([`Error::System`] and its
//!   kin): the machine, the network or its SSH setup is at fault, not the
//!   build. A connection that drops is reported as such
//!   ([`is_connection_lost`] tells callers that may retry). The exceptions
//!   are the caller's own: a configured private key file that cannot be
//!   used (absent, no key, encrypted without its passphrase) is
//!   [`Error::InvalidIdentity`], and a host key refused by the caller's
//!   known_hosts file or pinned key (or either not being one) is
//!   [`Error::HostKey`] ([`host_key`]): configuration errors, never retried.

pub(crate) mod gate;
pub mod host_key;
pub mod kill;
pub mod remote;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fruix_core::executor::EventSink;
use fruix_core::{Error, Result};
use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use tokio_util::sync::CancellationToken;

pub use self::host_key::{HostKeyPolicy, HostKeyVerifier};
pub use self::remote::{RemoteExit, RemoteOutput, RemoteSessionId, RemoteStdio};

/// How often a silent connection is probed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How many unanswered keepalives drop the connection.
pub const KEEPALIVE_MAX: usize = 4;

/// Ciphers in order of preference: AES-GCM first (hardware-accelerated on
/// the machines fruix runs on, and faster than ChaCha20-Poly1305 there),
/// then russh's defaults.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// The default connection timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default limit on one short command ([`SshSession::output`]).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// The default cap on one line of a remote command's output (1 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// The configuration key of the line cap, named in the note on a cut line.
pub const LINE_CAP_KEY: &str = "output_max_line_bytes";

pub use fruix_core::ssh_target::SshTarget;

/// Everything needed to open a session.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Who to log in as, and where (`user@host[:port]`, port 22 unless
    /// given).
    pub target: SshTarget,
    /// The private key file; `None` uses the agent, then the default keys.
    pub identity: Option<PathBuf>,
    /// The environment variable holding the identity's passphrase.
    pub passphrase_env: Option<String>,
    /// How the server's host key is checked, before anything is sent.
    pub host_keys: HostKeyPolicy,
    /// The limit on TCP connection, key exchange and authentication
    /// together (default [`DEFAULT_CONNECT_TIMEOUT`]); going over it is
    /// [`Error::Timeout`].
    pub connect_timeout: Duration,
    /// The limit on one short command ([`SshSession::output`]: probes,
    /// preparing and finishing a result root, removing a work directory;
    /// default [`DEFAULT_COMMAND_TIMEOUT`]). Going over it stops the
    /// command's remote session and is [`Error::Timeout`].
    pub command_timeout: Duration,
    /// Longer lines of remote output are cut (see [`remote`]).
    pub max_line_bytes: usize,
}

impl SshOptions {
    /// Options to reach `target` with the private key `identity` (without a
    /// passphrase), checking the host key against `known_hosts` and refusing
    /// an unknown one, with the default connect timeout and line cap.
    pub fn with_key(target: SshTarget, identity: PathBuf, known_hosts: PathBuf) -> Self {
        SshOptions {
            target,
            identity: Some(identity),
            passphrase_env: None,
            host_keys: HostKeyPolicy::known_hosts(Some(known_hosts), false),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// One authenticated SSH connection. Cheap to share: channels are opened
/// concurrently on it.
pub struct SshSession {
    handle: client::Handle<HostKeyVerifier>,
    target: SshTarget,
    max_line_bytes: usize,
    command_timeout: Duration,
    /// Set once the guest did not answer within [`kill::ANSWER_WAIT`].
    unanswered: AtomicBool,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Whether `e` is a lost connection (worth a retry on a new one).
pub fn is_connection_lost(e: &Error) -> bool {
    matches!(e, Error::ConnectionLost { .. })
}

/// An [`Error::ConnectionLost`] for a connection to `target` that failed or dropped.
pub(crate) fn lost(target: &SshTarget, what: impl fmt::Display) -> Error {
    Error::ConnectionLost {
        target: target.to_string(),
        detail: what.to_string(),
    }
}

impl SshSession {
    /// Connects, checks the host key and authenticates (see the module docs).
    pub async fn connect(options: &SshOptions, events: &EventSink) -> Result<Arc<SshSession>> {
        let target = &options.target;
        match tokio::time::timeout(options.connect_timeout, Self::open(options, events)).await {
            Ok(result) => result.map(Arc::new),
            Err(_) => Err(Error::Timeout {
                what: format!("connecting to {target}"),
                limit: options.connect_timeout,
                detail: "; check the address and port, and that the machine is up".into(),
                log: None,
            }),
        }
    }

    async fn open(options: &SshOptions, events: &EventSink) -> Result<SshSession> {
        let target = options.target.clone();
        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            keepalive_max: KEEPALIVE_MAX,
            inactivity_timeout: None,
            nodelay: true,
            window_size: 16 << 20,
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(CIPHERS),
                ..Default::default()
            },
            ..Default::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let verifier = HostKeyVerifier {
            host: target.host.clone(),
            port: target.port,
            policy: options.host_keys.clone(),
            verdict: verdict.clone(),
            events: events.clone(),
        };
        let address = (target.host.as_str(), target.port);
        let connected = client::connect(config, address, verifier).await;
        let mut handle = match connected {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(refusal) = verdict.lock().expect("verdict lock").take() {
                    return Err(refusal);
                }
                return Err(Error::system(format!(
                    "cannot connect to {target}: {e}; check the address and port, and that sshd is running there"
                )));
            }
        };
        let tried = authenticate(&mut handle, options).await?;
        if !tried.0 {
            return Err(Error::system(format!(
                "{target} refused authentication as user {user} with {}; add the public key to ~{user}/.ssh/authorized_keys on the guest, or give the right key with --identity",
                if tried.1.is_empty() { "no key (none configured, no ssh-agent, no default key)".to_string() } else { tried.1.join(", ") },
                user = fruix_core::escape::text(&target.user),
            )));
        }
        Ok(SshSession {
            handle,
            target,
            max_line_bytes: options.max_line_bytes,
            command_timeout: options.command_timeout,
            unanswered: AtomicBool::new(false),
        })
    }

    /// The machine this session is connected to.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The cap on one line of remote output.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// The limit on one short command ([`SshOptions::command_timeout`]).
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Whether the guest stopped answering: a cancelled command's kill loop
    /// could not be started within [`kill::ANSWER_WAIT`] (see the module
    /// docs). Every command started since failed at once; a new connection
    /// would wait for its connect timeout.
    pub fn stopped_answering(&self) -> bool {
        self.unanswered.load(Ordering::Relaxed)
    }

    /// Takes the guest to have stopped answering.
    pub(crate) fn no_answer(&self) {
        self.unanswered.store(true, Ordering::Relaxed);
    }

    /// Opens a session channel and starts `command` on it.
    pub(crate) async fn exec(&self, command: String) -> Result<russh::Channel<client::Msg>> {
        let never = CancellationToken::new();
        let started = self.exec_until(command, &never).await?;
        Ok(started.expect("never cancelled"))
    }

    /// [`SshSession::exec`], given up when `cancel` fires first (`None`):
    /// a guest whose sshd stopped answering (its process stopped, its
    /// machine paused) would otherwise hold a cancel until the keepalives
    /// give up on the connection. A channel open by then is closed, its
    /// stdin ended first: a command held at its gate (`ssh::gate`) exits
    /// there, having run nothing.
    pub(crate) async fn exec_until(
        &self,
        command: String,
        cancel: &CancellationToken,
    ) -> Result<Option<russh::Channel<client::Msg>>> {
        if self.stopped_answering() {
            return Err(lost(
                &self.target,
                format!(
                    "it stopped answering (the channel to stop a cancelled command did not open within {} s)",
                    kill::ANSWER_WAIT.as_secs()
                ),
            ));
        }
        let channel = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(None),
            opened = self.handle.channel_open_session() => {
                opened.map_err(|e| lost(&self.target, e))?
            }
        };
        let started = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            started = channel.exec(true, command) => Some(started),
        };
        match started {
            Some(started) => {
                started.map_err(|e| lost(&self.target, e))?;
                Ok(Some(channel))
            }
            None => {
                // Queued for the connection, never waited on for an answer
                // (nor for long for room in the queue).
                let closed = async {
                    let _ = channel.eof().await;
                    let _ = channel.close().await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                Ok(None)
            }
        }
    }

    /// Closes the connection politely.
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Tries the configured identity, else the agent, else the default keys.
/// Returns whether one was accepted and descriptions of those tried.
async fn authenticate(
    handle: &mut client::Handle<HostKeyVerifier>,
    options: &SshOptions,
) -> Result<(bool, Vec<String>)> {
    let user = options.target.user.clone();
    let mut tried = Vec::new();
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|e| lost(&options.target, e))?
        .flatten();
    if let Some(path) = &options.identity {
        let key = load_identity(path, options.passphrase_env.as_deref())?;
        tried.push(describe_key(path, &key));
        return Ok((try_key(handle, &user, key, rsa_hash, options).await?, tried));
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        if let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await {
            let identities = agent.request_identities().await.unwrap_or_default();
            for identity in identities {
                let key = identity.public_key().into_owned();
                tried.push(format!(
                    "ssh-agent key {}",
                    key.fingerprint(HashAlg::Sha256)
                ));
                let hash = if key.algorithm().is_rsa() {
                    rsa_hash
                } else {
                    None
                };
                let accepted = handle
                    .authenticate_publickey_with(user.clone(), key, hash, &mut agent)
                    .await;
                if accepted.is_ok_and(|r| r.success()) {
                    return Ok((true, tried));
                }
            }
        }
    }
    let home = fruix_core::fsutil::home_dir();
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let Some(path) = home.as_ref().map(|h| h.join(".ssh").join(name)) else {
            break;
        };
        if !path.is_file() {
            continue;
        }
        let Ok(key) = load_identity(&path, options.passphrase_env.as_deref()) else {
            continue;
        };
        tried.push(describe_key(&path, &key));
        if try_key(handle, &user, key, rsa_hash, options).await? {
            return Ok((true, tried));
        }
    }
    Ok((false, tried))
}

async fn try_key(
    handle: &mut client::Handle<HostKeyVerifier>,
    user: &str,
    key: PrivateKey,
    rsa_hash: Option<HashAlg>,
    options: &SshOptions,
) -> Result<bool> {
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
    handle
        .authenticate_publickey(user, key)
        .await
        .map(|r| r.success())
        .map_err(|e| lost(&options.target, e))
}

fn describe_key(path: &Path, key: &PrivateKey) -> String {
    format!(
        "key {} ({} {})",
        fruix_core::escape::path(path),
        key.algorithm(),
        key.public_key().fingerprint(HashAlg::Sha256)
    )
}

/// What a refused identity is named as when it is not a regular file
/// ([`fruix_core::fsutil::read_file_of_kind`]).
const IDENTITY_FILE: &str = "private key file (an OpenSSH or PEM ed25519, ECDSA or RSA key)";

/// Loads the private key file `path`, decrypting it with the passphrase in
/// environment variable `passphrase_env`. It is read as the key files a
/// user names are ([`fruix_core::fsutil::read_file_of_kind`]: through its
/// symlinks, never waiting on a FIFO, within the metadata cap).
///
/// A file that cannot be used as given (absent, not a regular file, no
/// private key, encrypted without its passphrase or with another) is the
/// caller's to fix: [`Error::InvalidIdentity`]. A read that fails on this
/// host (an I/O error, no permission) stays a system failure
/// ([`Error::Io`]).
pub fn load_identity(path: &Path, passphrase_env: Option<&str>) -> Result<PrivateKey> {
    const IDENTITY_READ: &str =
        "read the SSH private key file (--identity, `identity` or a machine's `private-key`)";
    let refused = |problem: String| Error::InvalidIdentity {
        path: path.to_path_buf(),
        problem,
    };
    let text = match fruix_core::fsutil::read_file_of_kind(path, IDENTITY_FILE) {
        Ok(text) => text,
        Err(Error::NotFound { hint, .. }) => return Err(refused(format!("not found; {hint}"))),
        Err(Error::MetadataFile { problem, .. }) => return Err(refused(problem.to_string())),
        // Said as the key file's, as the caller's faults with it are.
        Err(Error::Io { source, .. }) => return Err(Error::io(IDENTITY_READ, path, source)),
        Err(e) => return Err(e),
    };
    let passphrase = passphrase_env.and_then(|v| std::env::var(v).ok());
    russh::keys::decode_secret_key(&text, passphrase.as_deref()).map_err(|e| match e {
        // Decoding reads nothing more, but its error type could say so.
        russh::keys::Error::IO(io) => Error::io(IDENTITY_READ, path, io),
        e => refused(no_key(&e, passphrase_env, passphrase.is_some())),
    })
}

/// Why a key file that decoding refused (`e`) cannot be used, and what to
/// give: `passphrase_env` names the passphrase's variable, which holds
/// one when `given`.
fn no_key(e: &russh::keys::Error, passphrase_env: Option<&str>, given: bool) -> String {
    let var = passphrase_env.map(fruix_core::escape::text);
    let said = fruix_core::escape::text(&e.to_string()).to_string();
    match (e, var) {
        (russh::keys::Error::KeyIsEncrypted, Some(var)) => format!(
            "it is encrypted and environment variable {var} does not hold its passphrase"
        ),
        (russh::keys::Error::KeyIsEncrypted, None) => "it is encrypted; put its passphrase in an environment variable and name it with the `passphrase_env` configuration key".to_string(),
        // A wrong passphrase shows up as a failed decryption.
        (_, Some(var)) if given => format!(
            "{said}: is the passphrase in environment variable {var} the key's? (an OpenSSH or PEM ed25519, ECDSA or RSA private key is expected)"
        ),
        _ => format!("{said}; give an OpenSSH or PEM ed25519, ECDSA or RSA private key"),
    }
}

/// Quotes `s` for a POSIX shell (and for csh): one word.
pub use fruix_freebsd::sh::quote as shell_quote;

/// Runs `sh -c script` with `PATH` set to `path` when given, fed `stdin`
/// (then its end): the tests of the scripts fruix runs in guests.
#[cfg(test)]
pub(crate) fn sh_fed(script: &str, path: Option<String>, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("/var/lib/fruix"), "/var/lib/fruix");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("printf %s {}", shell_quote("x'$(y) \"z\"\n")),
            ])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"x'$(y) \"z\"\n");
    }

    #[test]
    fn encrypted_identity_without_passphrase_says_how_to_give_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (Debian package openssh-client) is needed");
        assert!(status.success());
        let e = load_identity(&key, None).unwrap_err();
        assert!(matches!(e, Error::InvalidIdentity { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("encrypted") && e.contains("passphrase_env"),
            "{e}"
        );
        std::env::set_var("FRUIX_TEST_PASSPHRASE_UNIT", "secret");
        load_identity(&key, Some("FRUIX_TEST_PASSPHRASE_UNIT")).unwrap();
        let e = load_identity(&key, Some("FRUIX_TEST_NO_SUCH_VAR"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FRUIX_TEST_NO_SUCH_VAR"), "{e}");
        std::env::set_var("FRUIX_TEST_PASSPHRASE_UNIT_WRONG", "wrong");
        let e = load_identity(&key, Some("FRUIX_TEST_PASSPHRASE_UNIT_WRONG")).unwrap_err();
        assert!(matches!(e, Error::InvalidIdentity { .. }), "{e:?}");
        assert!(e.to_string().contains("the key's?"), "{e}");
    }

    /// Regression: an identity that is missing, a directory or no key was
    /// a system failure (retried, its machine set aside); it is the
    /// caller's configuration, named escaped. A read that fails on this
    /// host is not.
    #[test]
    fn an_unusable_identity_is_the_callers_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk\nkey");
        std::fs::write(&junk, "not a key\n").unwrap();
        let cases = [
            (
                dir.path().join("missing\nkey"),
                "not found; give the path of an existing private key file",
            ),
            (
                dir.path().to_path_buf(),
                "is a directory, not a regular file",
            ),
            (
                junk,
                "give an OpenSSH or PEM ed25519, ECDSA or RSA private key",
            ),
        ];
        for (path, says) in cases {
            let e = load_identity(&path, None).unwrap_err();
            assert!(matches!(e, Error::InvalidIdentity { .. }), "{e:?}");
            assert_eq!(e.failure(), fruix_core::Failure::Input);
            let e = e.to_string();
            assert!(e.contains(says) && !e.contains('\n'), "{e}");
            assert!(
                e.contains("--identity") && e.contains("`private-key`"),
                "{e}"
            );
        }
        // A regular file whose read fails (EIO): this host's failure.
        let e = load_identity(Path::new("/proc/self/mem"), None).unwrap_err();
        assert_eq!(e.failure(), fruix_core::Failure::System, "{e:?}");
        // Said as the key file's.
        assert!(
            e.to_string()
                .starts_with("failed to read the SSH private key file (--identity, "),
            "{e}"
        );
    }
}
