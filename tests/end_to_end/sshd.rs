//! A real OpenSSH `sshd` for the SSH executor tests.
//!
//! Each [`Sshd`] runs Debian's `/usr/sbin/sshd -D -e -f CONFIG` as a child in
//! its own process group, on 127.0.0.1 and a free port, with a generated
//! ed25519 host key, a generated user key in its `AuthorizedKeysFile`,
//! `StrictModes no` and its pid file, all inside one temporary directory.
//! That directory also holds a per-test `known_hosts` (empty until
//! [`Sshd::trust`]) and the guest state directory. The guest is this
//! machine, as the current user. Missing tools fail the test loudly.

use std::ffi::OsString;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{fixture_build, fruix, require_tool, run_ok};

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Extra sshd_config lines.
    extra: String,
}

/// Generates an unencrypted ed25519 key at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run_ok(
        Command::new(require_tool("ssh-keygen", "openssh-client"))
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "fruix-test", "-f"])
            .arg(path),
    );
}

impl Sshd {
    /// Starts sshd; `env` is added to the sessions' environment as
    /// `VAR=value` words (`{dir}` stands for the server's directory, whose
    /// `bin/` is empty). `SHLVL=1` is always set: bash, the login shell here,
    /// then skips `~/.bashrc`, so the account's shell setup (which may be
    /// slow, or wait for locks) stays out of the tests.
    pub fn start_with(env: &str) -> Sshd {
        require_tool("sshd", "openssh-server");
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_ed25519"));
        keygen(&dir.path().join("id_ed25519"));
        std::fs::copy(
            dir.path().join("id_ed25519.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        std::fs::write(dir.path().join("known_hosts"), "").unwrap();
        std::fs::create_dir(dir.path().join("guest-state")).unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let extra = format!(
            "SetEnv SHLVL=1 {}",
            env.replace("{dir}", &dir.path().display().to_string())
        );
        let mut sshd = Sshd {
            dir,
            port: 0,
            child: None,
            extra,
        };
        sshd.spawn();
        sshd
    }

    pub fn start() -> Sshd {
        Sshd::start_with("")
    }

    /// [`Sshd::start_with`], then [`Sshd::trust`].
    pub fn trusted_with(env: &str) -> Sshd {
        let sshd = Sshd::start_with(env);
        sshd.trust();
        sshd
    }

    /// [`Sshd::start`], then [`Sshd::trust`].
    pub fn trusted() -> Sshd {
        Sshd::trusted_with("")
    }

    /// [`Sshd::trusted`], its commands finding `DIR/bin` first on their
    /// PATH: where [`Sshd::guest_program`] puts a guest's own programs.
    pub fn trusted_with_bin() -> Sshd {
        Sshd::trusted_with("PATH={dir}/bin:/usr/local/bin:/usr/bin:/bin")
    }

    /// Writes the script `body` as the guest's program `name` (of a
    /// [`Sshd::trusted_with_bin`]).
    pub fn guest_program(&self, name: &str, body: &str) {
        script(&self.dir.path().join("bin").join(name), body);
    }

    fn spawn(&mut self) {
        // Privilege separation needs this directory (systemd makes it on hosts).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = match self.port {
            0 => {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            }
            // A restart keeps its port (and so its known_hosts name).
            port => port,
        };
        let d = self.dir.path().display();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nMaxSessions 32\nMaxStartups 32\n\
             LogLevel ERROR\n{}\n",
            self.extra
        );
        let config_path = self.dir.path().join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(self.dir.path().join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start /usr/sbin/sshd (Debian package openssh-server)");
        self.port = port;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let mut banner = [0u8; 4];
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `root@127.0.0.1:PORT` for the current user.
    pub fn guest(&self) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        format!("{user}@127.0.0.1:{}", self.port)
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("guest-state")
    }

    /// `--guest`, `--known-hosts` and `--guest-state-dir` of this server:
    /// what every build in its guest is given (the key is the caller's).
    pub fn guest_options(&self) -> [OsString; 8] {
        [
            "--guest".into(),
            self.guest().into(),
            "--known-hosts".into(),
            self.known_hosts().into(),
            "--guest-state-dir".into(),
            self.state_dir().into(),
            "--config".into(),
            format!("guest_store={}", self.guest_store().display()).into(),
        ]
    }

    /// Writes `dir/machines.scm` holding one machine, `builder-1`: this
    /// server, its host key pinned, with `extra` (more fields of its record)
    /// after its state directory. Returns the file's path.
    pub fn machines_file(&self, dir: &Path, extra: &str) -> PathBuf {
        let machines = dir.join("machines.scm");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            &machines,
            format!(
                "(fruix-machines\n  (machine (name \"builder-1\") (host \"127.0.0.1\") (port {}) (user \"{user}\")\n    (private-key \"{}\") (host-key \"{}\") (state-dir \"{}\"){extra}))\n",
                self.port,
                self.identity().display(),
                self.host_key(),
                self.state_dir().display()
            ),
        )
        .unwrap();
        machines
    }

    /// Where the guest keeps the source objects it is sent.
    pub fn guest_store(&self) -> PathBuf {
        self.dir.path().join("guest-store")
    }

    /// The host public key line, `ssh-ed25519 AAAA...`.
    pub fn host_key(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Writes the known_hosts entry of this server.
    pub fn trust(&self) {
        std::fs::write(
            self.known_hosts(),
            format!("[127.0.0.1]:{} {}\n", self.port, self.host_key()),
        )
        .unwrap();
    }

    /// Kills sshd and every connection it serves: sshd puts each connection
    /// in a session of its own, so its whole process tree is stopped, then
    /// killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let tree = process_tree(child.id() as i32);
            for signal in [libc::SIGSTOP, libc::SIGKILL] {
                for pid in &tree {
                    // SAFETY: signalling sshd (our child) and its descendants.
                    unsafe { libc::kill(*pid, signal) };
                }
            }
            let _ = child.wait();
        }
    }

    /// The options of a session to this guest with its key, checking its
    /// host key (trusted by [`Sshd::trust`]).
    pub fn ssh_options(&self) -> fruix_executors::ssh::SshOptions {
        use fruix_executors::ssh::{SshOptions, SshTarget};
        SshOptions::with_key(
            SshTarget::parse(&self.guest()).unwrap(),
            self.identity(),
            self.known_hosts(),
        )
    }

    /// Sends `signal` to the processes serving sshd's connections, sshd
    /// itself left alone: `SIGSTOP` makes a guest whose connections stay
    /// up but answer nothing (a paused machine), `SIGCONT` ends that.
    pub fn signal_connections(&self, signal: i32) {
        let child = self.child.as_ref().expect("sshd runs");
        for pid in process_tree(child.id() as i32).into_iter().skip(1) {
            // SAFETY: signalling a descendant of sshd (our child).
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Restarts with a new host key on the same port.
    pub fn restart_with_new_host_key(&mut self) {
        self.kill();
        keygen(&self.dir.path().join("host_ed25519"));
        self.spawn();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `fruix build` of the miniature tree in the guest of `sshd`, into a host
/// state under `host`.
pub fn guest_build(sshd: &Sshd, executor: &str, host: &Path, name: &str) -> Command {
    guest_build_with(fruix(), sshd, executor, host, name)
}

/// [`guest_build`], with `fruix` (the `fruix` command, or a wrapper of it)
/// running the build.
pub fn guest_build_with(
    fruix: Command,
    sshd: &Sshd,
    executor: &str,
    host: &Path,
    name: &str,
) -> Command {
    require_tool("bmake", "bmake");
    require_tool("cc", "gcc");
    let mut cmd = fixture_build(fruix, executor, host, name);
    cmd.args(sshd.guest_options())
        .arg("--identity")
        .arg(sshd.identity());
    // Only guest-self-hosted has a helper (host-initiated refuses the key).
    if executor == "guest-self-hosted" {
        cmd.arg("--guest-helper").arg(env!("CARGO_BIN_EXE_fruix"));
    }
    cmd
}

/// `root` and all its descendants (from /proc).
fn process_tree(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// Writes an executable shell script.
pub fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes `program`, a fruix for a guest to serve a store with: it runs in a
/// mount namespace of its own (`unshare --mount`) with the directory
/// `mounted` bind-mounted over `over`, so that two stores share one path;
/// `env` (`NAME=VALUE `, or empty) is set for it.
pub fn bind_mounted_fruix(program: &Path, env: &str, mounted: &Path, over: &Path) {
    script(
        program,
        &format!(
            "#!/bin/sh\n{env}exec unshare --mount sh -c 'mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"' sh {mounted} {over} {fruix} \"$@\"\n",
            mounted = mounted.display(),
            over = over.display(),
            fruix = env!("CARGO_BIN_EXE_fruix"),
        ),
    );
}

/// A guest helper that runs the real fruix, keeps its last protocol line
/// (the outcome), runs `after` (a sh snippet with `$ROOT` set to the result
/// root it built), then passes the outcome on.
pub fn tampering_helper(dir: &Path, after: &str) -> PathBuf {
    let path = dir.join("tampering-fruix");
    script(
        &path,
        &format!(
            "#!/bin/sh\nset -e\nif [ \"$1\" = --version ]; then exec {fruix} --version; fi\nOUTCOME=$({fruix} \"$@\" | tail -n 1)\nROOT=$(printf '%s' \"$OUTCOME\" | sed -n 's/.*\"result_root\":\"\\([^\"]*\\)\".*/\\1/p')\n{after}\nprintf '%s\\n' \"$OUTCOME\"\n",
            fruix = env!("CARGO_BIN_EXE_fruix")
        ),
    );
    path
}
