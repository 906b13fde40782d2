//! Authentication to guests: RSA and ECDSA key files, an encrypted key whose
//! passphrase comes from an environment variable, and a running ssh-agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::sshd::Sshd;
use crate::util::{fixture_source, fruix, require_tool, run, run_ok, store_and_state};

/// Generates a key of `kind` with `passphrase` next to the server's files and
/// authorizes it.
fn authorized_key(sshd: &Sshd, kind: &str, passphrase: &str) -> PathBuf {
    let path = sshd.identity().with_file_name(format!("id_{kind}_extra"));
    run_ok(
        Command::new(require_tool("ssh-keygen", "openssh-client"))
            .args([
                "-q",
                "-t",
                kind,
                "-N",
                passphrase,
                "-C",
                "fruix-auth-test",
                "-f",
            ])
            .arg(&path),
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let authorized = sshd.identity().with_file_name("authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&public);
    std::fs::write(authorized, keys).unwrap();
    path
}

/// A host-initiated build without promotion, authenticated as `auth` says.
fn build(
    sshd: &Sshd,
    host: &Path,
    name: &str,
    auth: impl FnOnce(&mut Command),
) -> std::process::Output {
    require_tool("bmake", "bmake");
    let mut cmd = fruix();
    cmd.args([
        "build",
        "--no-promote",
        "--executor",
        "host-initiated",
        "--source",
    ])
    .arg(fixture_source())
    .args(store_and_state(host))
    .arg("--result-root")
    .arg(host.join(name))
    .args(sshd.guest_options())
    .env_remove("SSH_AUTH_SOCK")
    .env("HOME", host);
    auth(&mut cmd);
    run(&mut cmd)
}

fn assert_built(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rsa_and_ecdsa_key_files_authenticate() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    for kind in ["rsa", "ecdsa"] {
        let key = authorized_key(&sshd, kind, "");
        let out = build(&sshd, host.path(), kind, |c| {
            c.arg("--identity").arg(&key);
        });
        assert_built(&out, kind);
    }
}

#[test]
fn encrypted_key_takes_its_passphrase_from_the_named_variable() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    let key = authorized_key(&sshd, "ed25519", "correct horse");
    let out = build(&sshd, host.path(), "right", |c| {
        c.arg("--identity")
            .arg(&key)
            .args(["--config", "passphrase_env=FRUIX_TEST_PASSPHRASE"])
            .env("FRUIX_TEST_PASSPHRASE", "correct horse");
    });
    assert_built(&out, "encrypted key");
    let out = build(&sshd, host.path(), "wrong", |c| {
        c.arg("--identity")
            .arg(&key)
            .args(["--config", "passphrase_env=FRUIX_TEST_PASSPHRASE"])
            .env("FRUIX_TEST_PASSPHRASE", "wrong");
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("FRUIX_TEST_PASSPHRASE") || stderr.contains("passphrase"),
        "{stderr}"
    );
}

/// An ssh-agent on a private socket, stopped on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_agent_keys_authenticate() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    let key = authorized_key(&sshd, "ed25519", "");
    let socket = host.path().join("agent.sock");
    let child = Command::new(require_tool("ssh-agent", "openssh-client"))
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent { child, socket };
    // The socket file exists once bound, before the agent listens: wait
    // until a connection is accepted.
    crate::util::wait_until("ssh-agent listens", || {
        std::os::unix::net::UnixStream::connect(&agent.socket).is_ok()
    });
    run_ok(
        Command::new(require_tool("ssh-add", "openssh-client"))
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket),
    );
    let out = build(&sshd, host.path(), "agent", |c| {
        c.env("SSH_AUTH_SOCK", &agent.socket);
    });
    assert_built(&out, "ssh-agent");
}
