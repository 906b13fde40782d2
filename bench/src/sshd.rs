//! A Debian `sshd` on 127.0.0.1 for the benchmarks that cross SSH
//! (`fruix-bench-import`, `fruix-bench-copy`), with generated keys.

use std::fs;
use std::path::Path;
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

/// Times the OpenSSH peer of fruix's transfers: `ssh ... tar -C OBJECT -cf
/// - . | tar -xf - -C DEST` through the sshd on `port` with the keys in
/// `keys` (as [`start_sshd`] left them).
pub fn tar_pipe(keys: &Path, port: u16, object: &Path, dest: &Path) -> Duration {
    let script = format!(
        "ssh -q -i {k}/id_ed25519 -o UserKnownHostsFile={k}/known_hosts -o BatchMode=yes -p {port} {user}@127.0.0.1 tar -C {object} -cf - . | tar -xf - -C {dest}",
        k = keys.display(),
        user = user(),
        object = object.display(),
        dest = dest.display()
    );
    let started = Instant::now();
    run_ok(Command::new("sh").args(["-c", &script]));
    started.elapsed()
}

/// Starts sshd on a free port with keys in `dir`; returns it and its port.
pub fn start_sshd(dir: &Path) -> (Child, u16) {
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
    let mut child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start /usr/sbin/sshd (Debian package openssh-server)");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("sshd did not start");
}
