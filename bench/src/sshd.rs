//! A Debian `sshd` on 127.0.0.1 for the benchmarks that cross SSH
//! (`fruix-bench-import`, `fruix-bench-copy`), with generated keys.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`, which must succeed.
pub fn run_ok(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The account the benchmarks log in as: `$USER`, else root.
pub fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// What a tree holds, as the OpenSSH peer's result is checked against its
/// source: entries (files, directories, symlinks; the top excluded) and
/// the bytes of its regular files.
#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub struct TreeSize {
    /// Entries below the top, of any type.
    pub entries: u64,
    /// Bytes of the regular files.
    pub bytes: u64,
}

impl TreeSize {
    /// Counts the tree at `top`, never following a symlink.
    pub fn of(top: &Path) -> TreeSize {
        let mut size = TreeSize::default();
        let mut pending = vec![top.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries =
                fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
            for entry in entries {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                size.entries += 1;
                if meta.is_dir() {
                    pending.push(entry.path());
                } else if meta.is_file() {
                    size.bytes += meta.len();
                }
            }
        }
        size
    }
}

/// Whether `copy` holds what `source` holds; the error says what differs.
pub fn same_tree(source: TreeSize, copy: TreeSize) -> Result<(), String> {
    if source == copy {
        Ok(())
    } else {
        Err(format!(
            "the copy holds {} entries and {} bytes, its source {} entries and {} bytes",
            copy.entries, copy.bytes, source.entries, source.bytes
        ))
    }
}

/// Times the OpenSSH peer of fruix's transfers through `sshd`:
/// `ssh ... tar -C OBJECT -cf - .`, its output piped into
/// `tar -xf - -C DEST`. Both must succeed, and DEST must then hold as many
/// entries and bytes as OBJECT.
pub fn tar_pipe(sshd: &Sshd, object: &Path, dest: &Path) -> Duration {
    let k = sshd.keys.display();
    let started = Instant::now();
    let mut ssh = Command::new("ssh")
        .args(["-q", "-o", "BatchMode=yes", "-i"])
        .arg(format!("{k}/id_ed25519"))
        .arg("-o")
        .arg(format!("UserKnownHostsFile={k}/known_hosts"))
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg(format!("{}@127.0.0.1", user()))
        .args(["tar", "-C"])
        .arg(object)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run ssh (Debian package openssh-client): {e}"));
    let tar = Command::new("tar")
        .args(["-xf", "-", "-C"])
        .arg(dest)
        .stdin(ssh.stdout.take().unwrap())
        .status();
    let ssh = ssh.wait().unwrap();
    let elapsed = started.elapsed();
    let tar = tar.unwrap_or_else(|e| panic!("cannot run tar: {e}"));
    assert!(
        ssh.success(),
        "ssh ... tar -cf - of {} failed: {ssh}",
        object.display()
    );
    assert!(
        tar.success(),
        "tar -xf - into {} failed: {tar}",
        dest.display()
    );
    if let Err(e) = same_tree(TreeSize::of(object), TreeSize::of(dest)) {
        panic!("ssh tar | tar -xf of {}: {e}", object.display());
    }
    elapsed
}

/// A running `sshd` ([`start_sshd`]): killed and reaped when dropped, a
/// panic included.
pub struct Sshd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The directory of its keys, config and log (`sshd.log`).
    pub keys: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts sshd on a free port with keys, config and its log (`sshd.log`)
/// in `dir`.
pub fn start_sshd(dir: &Path) -> Sshd {
    for key in ["host_ed25519", "id_ed25519"] {
        let _ = fs::remove_file(dir.join(key));
        let _ = fs::remove_file(dir.join(format!("{key}.pub")));
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key)),
        );
    }
    fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys")).unwrap();
    fs::create_dir_all("/run/sshd").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let user = user();
    fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel ERROR\nSetEnv SHLVL=1\n"
        ),
    )
    .unwrap();
    let host_key = fs::read_to_string(dir.join("host_ed25519.pub")).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
    )
    .unwrap();
    let log = fs::File::create(dir.join("sshd.log")).unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start /usr/sbin/sshd (Debian package openssh-server)");
    let sshd = Sshd {
        child,
        port,
        keys: dir.to_path_buf(),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sshd;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sshd did not start: see {}", dir.join("sshd.log").display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_missing_a_file_or_bytes_differs_from_its_source() {
        let dir = std::env::temp_dir().join(format!("fruix-bench-sshd-{}", std::process::id()));
        let (source, copy) = (dir.join("source"), dir.join("copy"));
        for top in [&source, &copy] {
            fs::create_dir_all(top.join("sub")).unwrap();
            fs::write(top.join("sub/a"), "hello").unwrap();
            std::os::unix::fs::symlink("sub/a", top.join("link")).unwrap();
        }
        fs::write(source.join("b"), "more").unwrap();
        assert!(same_tree(TreeSize::of(&source), TreeSize::of(&copy)).is_err());
        fs::write(copy.join("b"), "mor").unwrap();
        assert!(same_tree(TreeSize::of(&source), TreeSize::of(&copy)).is_err());
        fs::write(copy.join("b"), "more").unwrap();
        assert_eq!(
            same_tree(TreeSize::of(&source), TreeSize::of(&copy)),
            Ok(())
        );
        assert_eq!(
            TreeSize::of(&source),
            TreeSize {
                entries: 4,
                bytes: 9
            }
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
