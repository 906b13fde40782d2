//! The machines file: the build machines (guests) fruix may reach over SSH.
//!
//! ```scheme
//! (fruix-machines
//!   (machine (name "builder-1") (host "127.0.0.1") (port 2222) (user "root")
//!            (private-key "/root/.ssh/id_ed25519")
//!            (host-key "ssh-ed25519 AAAA...")        ; pinned; replaces known_hosts
//!            (systems "amd64") (parallel-builds 2) (speed 1.0)
//!            (state-dir "/var/lib/fruix") (helper "/usr/local/bin/fruix")
//!            (store "/frx/store")                    ; where sources sent to it go
//!            (signing-key "builder-1:BASE64...")     ; its public key
//!            (guest-signing-key "/etc/fruix/signing-key.sec")))
//! ```
//!
//! # Contract
//!
//! - `name`, `host` and `user` are required; everything else is optional:
//!   `port` defaults to 22, `parallel-builds` to 1, `speed` to 1.0, `systems`
//!   to none (any); `private-key`, `host-key`, `state-dir`, `helper` and
//!   `store` are left to the caller's defaults when absent.
//! - `signing-key` is the machine's public signing key (`NAME:BASE64`, as
//!   `fruix store generate-key` prints it) and `guest-signing-key` the path,
//!   on the machine, of its secret key. With both, a guest-self-hosted build
//!   there signs its result where it is built, and the host promotes it only
//!   if every signature verifies with `signing-key`.
//! - Reading is strict, like every fruix S-expression file: unknown or
//!   repeated fields, mistyped values, a `host` that is not an IP address
//!   or a host name alone ([`crate::ssh_target::is_host`]: no `user@`, no
//!   `:port`, no leading `-`), a port outside 1..=65535, a non-positive
//!   `parallel-builds` or `speed`, relative `private-key` or `state-dir`
//!   paths, a `host-key` that is no OpenSSH public key of a type fruix
//!   connects with (ed25519, ecdsa, rsa; read by [`crate::host_key_text`],
//!   as a `(vm ...)` record's keys are) and two machines with one name
//!   are refused, each error naming the field (`machine[1].port`) and its
//!   line.
//! - Reading does not look at the files a machine names on this host:
//!   [`Machines::check_private_keys`] does, for the machines a caller will
//!   use (`fruix matrix plan` and `run` check those of the machines their
//!   cells may run on, before any cell starts).
//! - A machine with a `(vm ...)` record is a virtual machine template (see
//!   [`crate::vm`]): it has no `host` or `port` (the `vm` executor boots a
//!   guest for each build and finds its address), so its
//!   [`Machine::target`] holds only its `user` and
//!   [`Machine::ssh_target`] is `None`; its host key is the record's
//!   pinned `host-key`.
//! - [`Machines::get`] finds a machine by name or names the known ones.
//!
//! The SSH executors read it for `--machines FILE --machine NAME`; the matrix
//! scheduler reads it to spread builds over machines.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::escape;
use crate::sexp::{self, Record};
use crate::ssh_target::SshTarget;

/// How many parsed machines files [`Machines::read`] keeps.
const PARSED_KEPT: usize = 4;

/// The head symbol of a machines file.
pub const MACHINES_HEAD: &str = "fruix-machines";

/// One build machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// The name `--machine` and matrix files refer to; non-empty and unique
    /// within the file.
    pub name: String,
    /// Where its sshd listens, and the user to log in as. For a virtual
    /// machine template (`vm` is `Some`) only `user` is the machine's:
    /// there is no sshd until the `vm` executor boots a guest, so `host`
    /// and `port` are a placeholder (`127.0.0.1:22`), never to be
    /// connected to. The `vm` executor connects to the booted guest's
    /// address instead, and the matrix scheduler does not probe it; use
    /// [`Machine::ssh_target`] to get the target only when it is real.
    pub target: SshTarget,
    /// The private key to authenticate with (absolute path on this machine).
    pub private_key: Option<PathBuf>,
    /// The line of its `private-key` field, when given.
    pub private_key_line: Option<usize>,
    /// The machine's pinned host key (`ssh-ed25519 AAAA...`); when given it is
    /// the only key accepted, and known_hosts is not consulted.
    pub host_key: Option<String>,
    /// The `TARGET_ARCH`es it builds; empty means any.
    pub systems: Vec<String>,
    /// How many builds the matrix scheduler runs on it at once (at least 1;
    /// default 1).
    pub parallel_builds: u32,
    /// Relative speed, finite and positive (default 1.0): among machines with
    /// a free slot, the scheduler picks the fastest.
    pub speed: f64,
    /// Its fruix state directory.
    pub state_dir: Option<String>,
    /// Its fruix helper (a path, or a name on its `PATH`).
    pub helper: Option<String>,
    /// Its store directory, where source objects sent to it go.
    pub store: Option<String>,
    /// Its public signing key, `NAME:BASE64`.
    pub signing_key: Option<String>,
    /// Where its secret signing key is, on the machine.
    pub guest_signing_key: Option<String>,
    /// The template of a machine that is a virtual machine.
    pub vm: Option<crate::vm::VmSpec>,
    /// The line the machine's record starts on.
    pub line: usize,
}

/// The contents of a machines file.
#[derive(Debug, Clone, PartialEq)]
pub struct Machines {
    /// The file they were read from, named in errors.
    pub path: PathBuf,
    /// The machines in file order; names are unique.
    pub machines: Vec<Machine>,
}

impl Machines {
    /// Reads and checks the machines file at `path`.
    ///
    /// A matrix reads its machines file once for its plan, and the run's
    /// copy of it once more for each attempt's executor, and a pool's file
    /// can be large, so the last four files read are kept: the same text at
    /// the same path is not parsed again. (The file is still read each
    /// time, so an edit is always seen.)
    pub fn read(path: &Path) -> Result<Machines> {
        Self::read_with_text(path).map(|(machines, _)| machines)
    }

    /// [`Machines::read`], also giving the text it read and checked: a
    /// caller that hands the file on (a matrix run's copy) hands on what
    /// was checked, not what the path holds by then.
    pub fn read_with_text(path: &Path) -> Result<(Machines, String)> {
        static PARSED: Mutex<Vec<(PathBuf, String, Arc<Machines>)>> = Mutex::new(Vec::new());
        let text = crate::fsutil::read_file_of_kind(path, "machines file (fruix-machines ...)")?;
        let parsed = |kept: &[(PathBuf, String, Arc<Machines>)]| {
            kept.iter()
                .find(|(p, t, _)| p == path && *t == text)
                .map(|(_, _, m)| m.clone())
        };
        if let Some(machines) = parsed(&PARSED.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(((*machines).clone(), text));
        }
        let machines = Arc::new(Self::parse(path, &text)?);
        let mut kept = PARSED.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == PARSED_KEPT {
            kept.remove(0);
        }
        kept.push((path.to_path_buf(), text.clone(), machines.clone()));
        Ok(((*machines).clone(), text))
    }

    /// Parses `text`; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Machines> {
        let machines = sexp::read_record(path, text, MACHINES_HEAD, |r| {
            let mut machines: Vec<Machine> = Vec::new();
            // Each name's first line.
            let mut names: HashMap<String, usize> = HashMap::new();
            for record in r.repeated("machine")? {
                machines.push(read_machine(record, &mut names)?);
            }
            Ok(machines)
        })?;
        Ok(Machines {
            path: path.to_path_buf(),
            machines,
        })
    }

    /// The machine named `name`, or an error naming the known ones.
    pub fn get(&self, name: &str) -> Result<&Machine> {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMachine {
                path: self.path.clone(),
                name: name.to_string(),
                known: self.machines.iter().map(|m| m.name.clone()).collect(),
                // The closest name, the first of equals.
                suggestion: self
                    .machines
                    .iter()
                    .filter(|m| crate::sexp::is_close(name, &m.name))
                    .min_by_key(|m| strsim::damerau_levenshtein(name, &m.name))
                    .map(|m| m.name.clone()),
            })
    }
}

/// What a machine's `private-key` is named as when it is not a regular
/// file ([`crate::fsutil::read_file_of_kind`]).
const PRIVATE_KEY_FILE: &str = "SSH private key file";

impl Machines {
    /// Checks the `private-key` of each machine that `used` selects: it
    /// must open, as this user, as a regular file that the SSH executors
    /// can read (at most [`MAX_METADATA_BYTES`](crate::fsutil::MAX_METADATA_BYTES),
    /// UTF-8 text), so that a misspelt path is found before any build,
    /// not when a build reaches that machine. It is read as they read it
    /// ([`crate::fsutil::read_file_of_kind`]: through its symlinks, which
    /// ssh follows too, never waiting on a FIFO) and its contents are
    /// dropped unseen. Each path is checked once, in file order.
    ///
    /// A key that is missing, not a regular file, too large or not text,
    /// or that this user may not open (the path or the file's permissions
    /// are the configuration's to fix), is [`Error::InvalidMetadata`] of
    /// field `machine[I].private-key`, naming the machine and the path.
    /// Any other failure to read it (an I/O error, no descriptor left) is
    /// this host's: [`Error::Io`], a system failure.
    pub fn check_private_keys(&self, used: impl Fn(&Machine) -> bool) -> Result<()> {
        let mut checked: HashSet<&Path> = HashSet::new();
        for (i, machine) in self.machines.iter().enumerate() {
            let Some(key) = machine.private_key.as_deref() else {
                continue;
            };
            if !used(machine) || !checked.insert(key) {
                continue;
            }
            if let Some(problem) = private_key_problem(key)? {
                return Err(Error::InvalidMetadata {
                    path: self.path.clone(),
                    field: format!("machine[{i}].private-key"),
                    line: machine.private_key_line,
                    message: format!(
                        "machine {}: {} {problem}",
                        escape::quoted(&machine.name),
                        escape::path(key)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Why the private key file at `path` cannot be used by this user, if it
/// cannot ([`Machines::check_private_keys`]); a failure of this host is an
/// error.
fn private_key_problem(path: &Path) -> Result<Option<String>> {
    let problem = match crate::fsutil::read_optional_file_of_kind(path, PRIVATE_KEY_FILE) {
        // Read to check it as the executors will, then dropped.
        Ok(Some(_)) => return Ok(None),
        Ok(None) => "does not exist (or is a symlink to nothing); give the path of the private key this user logs in to the machine with".to_string(),
        Err(Error::MetadataFile { problem, .. }) => problem.to_string(),
        Err(Error::Io { source, .. }) if named_wrong(&source) => format!(
            "cannot be opened: {source}; fix the path, or the permissions that keep this user from reading it"
        ),
        Err(e) => return Err(e),
    };
    Ok(Some(problem))
}

/// Whether `e`, met looking up or opening a file the user named, is the
/// name's fault (its symlinks loop, a component is no directory, too long,
/// this user may not open it), not this host's.
fn named_wrong(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::ENOTDIR | libc::ENAMETOOLONG | libc::EACCES | libc::EPERM)
    )
}

impl Machine {
    /// Where its sshd listens ([`Machine::target`]), or `None` for a
    /// virtual machine template, which has no address until a guest is
    /// booted from it.
    pub fn ssh_target(&self) -> Option<&SshTarget> {
        self.vm.is_none().then_some(&self.target)
    }
}

/// Reads one `(machine ...)` record; `names` holds the line of each name
/// read so far, and gets this one's.
fn read_machine(mut r: Record<'_>, names: &mut HashMap<String, usize>) -> Result<Machine> {
    let line = r.line();
    let name_line = r.field_line("name");
    let name = r.string("name")?;
    if name.is_empty() {
        return Err(r.error("name", name_line, "is empty; name the machine"));
    }
    if let Some(first) = names.insert(name.clone(), name_line.unwrap_or(line)) {
        return Err(r.error(
            "name",
            name_line,
            format!(
                "machine {} is defined twice (first on line {first}); give each machine its own name",
                escape::quoted(&name)
            ),
        ));
    }
    let vm = r.opt_record("vm")?.map(crate::vm::read_vm).transpose()?;
    if vm.is_some() {
        for field in ["host", "port", "host-key"] {
            if r.field_line(field).is_some() {
                return Err(r.invalid(field, "is not for a virtual machine: fruix boots it and finds its address, and its (vm ...) record pins its host key",
                ));
            }
        }
    }
    let host = match &vm {
        Some(_) => "127.0.0.1".to_string(),
        None => r.string("host")?,
    };
    if !crate::ssh_target::is_host(&host) {
        return Err(r.invalid(
            "host",
            format!(
                "{} is not a host name or IP address; give the host alone: `user` and `port` are fields of their own",
                escape::quoted(&host)
            ),
        ));
    }
    let port = r
        .opt_count("port", true, "a TCP port (1 to 65535)")?
        .unwrap_or(22);
    let user = r.string("user")?;
    if user.is_empty() || user.contains(['@', ' ', ':']) {
        return Err(r.invalid(
            "user",
            format!("{} is not a user name", escape::quoted(&user)),
        ));
    }
    // As a `USER@HOST` given on the command line: no user could log in
    // under a name holding a newline or a bidi control.
    if let Some(why) = crate::ssh_target::unprintable("user name", &user) {
        return Err(r.invalid(
            "user",
            format!("{} is not a user name: {why}", escape::quoted(&user)),
        ));
    }
    let private_key_line = r.field_line("private-key");
    let private_key = absolute(&mut r, "private-key")?.map(PathBuf::from);
    let host_key = r.opt_string("host-key")?;
    if let Some(key) = &host_key {
        if let Some(refusal) = crate::host_key_text::refusal("host-key", key) {
            return Err(r.invalid("host-key", refusal));
        }
    }
    let systems = r.strings("systems")?.unwrap_or_default();
    let parallel_builds = r
        .opt_count("parallel-builds", true, "a positive count")?
        .unwrap_or(1);
    let speed = r.opt_number("speed")?.unwrap_or(1.0);
    if !(speed.is_finite() && speed > 0.0) {
        return Err(r.invalid("speed", format!("{speed} is not a positive number")));
    }
    let state_dir = absolute(&mut r, "state-dir")?;
    let helper = r.opt_string("helper")?;
    let store = absolute(&mut r, "store")?;
    let signing_key = r.opt_string("signing-key")?;
    if let Some(key) = &signing_key {
        let shape = key.split_once(':').is_some_and(|(n, k)| {
            !n.is_empty() && !k.is_empty() && !key.contains(char::is_whitespace)
        });
        if !shape {
            return Err(r.invalid("signing-key", format!(
                    "{} is not a public key; give it as `fruix store generate-key` prints it: \"NAME:BASE64\"",
                    escape::quoted(key)
                ),
            ));
        }
    }
    let guest_signing_key = absolute(&mut r, "guest-signing-key")?;
    if signing_key.is_some() != guest_signing_key.is_some() {
        return Err(r.error(
            if signing_key.is_some() { "guest-signing-key" } else { "signing-key" },
            None,
            "is missing: a machine that signs needs both its public key (signing-key) and where its secret key is (guest-signing-key)",
        ));
    }
    r.finish()?;
    Ok(Machine {
        name,
        target: SshTarget { user, host, port },
        private_key,
        private_key_line,
        host_key,
        systems,
        parallel_builds,
        speed,
        state_dir,
        helper,
        store,
        signing_key,
        guest_signing_key,
        vm,
        line,
    })
}

/// The optional `field` of `r`, which must be an absolute path.
pub(crate) fn absolute(r: &mut Record<'_>, field: &str) -> Result<Option<String>> {
    match r.opt_string(field)? {
        Some(v) if !v.starts_with('/') => Err(r.invalid(
            field,
            format!("{} is relative; give an absolute path", escape::quoted(&v)),
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"(fruix-machines
  (machine (name "builder-1") (host "127.0.0.1") (port 2222) (user "root")
           (private-key "/root/.ssh/id_ed25519")
           (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ")        ; pinned
           (systems "amd64") (parallel-builds 2) (speed 1.0)
           (state-dir "/var/lib/fruix") (helper "/usr/local/bin/fruix")
           (signing-key "builder-1:AAAA") (guest-signing-key "/etc/fruix/signing-key.sec"))
  (machine (name "builder-2") (host "builder-2.example") (user "fruix")))"#;

    fn parse(text: &str) -> Result<Machines> {
        Machines::parse(Path::new("machines.scm"), text)
    }

    fn field_error(text: &str) -> (String, Option<usize>, String) {
        crate::testing::invalid_metadata(parse(text))
    }

    #[test]
    fn reads_the_documented_example_with_defaults() {
        let m = parse(EXAMPLE).unwrap();
        assert_eq!(m.machines.len(), 2);
        let b1 = m.get("builder-1").unwrap();
        assert_eq!(
            (
                b1.target.host.as_str(),
                b1.target.port,
                b1.target.user.as_str()
            ),
            ("127.0.0.1", 2222, "root")
        );
        assert_eq!(
            b1.private_key.as_deref(),
            Some(Path::new("/root/.ssh/id_ed25519"))
        );
        assert!(b1.host_key.as_deref().unwrap().starts_with("ssh-ed25519 "));
        assert_eq!(b1.systems, ["amd64"]);
        assert_eq!((b1.parallel_builds, b1.speed), (2, 1.0));
        assert_eq!(b1.state_dir.as_deref(), Some("/var/lib/fruix"));
        assert_eq!(b1.helper.as_deref(), Some("/usr/local/bin/fruix"));
        assert_eq!(b1.signing_key.as_deref(), Some("builder-1:AAAA"));
        assert_eq!(
            b1.guest_signing_key.as_deref(),
            Some("/etc/fruix/signing-key.sec")
        );
        assert_eq!(b1.ssh_target(), Some(&b1.target));
        let b2 = m.get("builder-2").unwrap();
        assert_eq!((b2.target.port, b2.parallel_builds, b2.speed), (22, 1, 1.0));
        assert_eq!((b2.private_key.clone(), b2.state_dir.clone()), (None, None));
        assert_eq!(b2.line, 8);
    }

    #[test]
    fn unknown_machine_names_the_known_ones() {
        let e = parse(EXAMPLE)
            .unwrap()
            .get("builder-3")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("builder-3") && e.contains("builder-1, builder-2"),
            "{e}"
        );
    }

    /// Regression: a pool's every name went into the message.
    #[test]
    fn an_unknown_machine_of_a_large_pool_lists_ten_names_and_a_count() {
        let pool: String = (1..=1500)
            .map(|i| format!("(machine (name \"m-{i}\") (host \"h\") (user \"u\"))\n"))
            .collect();
        let machines = parse(&format!("(fruix-machines\n{pool})")).unwrap();
        let e = machines.get("m-1500x").unwrap_err().to_string();
        let (_, listed) = e.split_once("; it defines: ").unwrap();
        assert_eq!(
            listed,
            "m-1, m-2, m-3, m-4, m-5, m-6, m-7, m-8, m-9, m-10 and 1490 more (did you mean m-1500?)"
        );
    }

    /// A file read again is parsed again only if its text changed; an edit
    /// is seen at once.
    #[test]
    fn reading_again_sees_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machines.scm");
        std::fs::write(&path, EXAMPLE).unwrap();
        let first = Machines::read(&path).unwrap();
        assert_eq!(Machines::read(&path).unwrap(), first);
        let edited = EXAMPLE.replace("builder-2", "builder-9");
        std::fs::write(&path, &edited).unwrap();
        let names = |m: Machines| m.machines.into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(
            names(Machines::read(&path).unwrap()),
            ["builder-1", "builder-9"]
        );
        std::fs::write(&path, "(fruix-machines (machine (name \"x\")))").unwrap();
        assert!(Machines::read(&path).is_err());
        std::fs::write(&path, EXAMPLE).unwrap();
        assert_eq!(Machines::read(&path).unwrap(), first);
    }

    #[test]
    fn errors_name_field_and_line() {
        let mistakes = [
            // (replace, with, field, line, part of the message)
            ("(port 2222)", "(port 70000)", "machine[0].port", 2, "70000"),
            (
                "(user \"fruix\")",
                "(usr \"fruix\")",
                "machine[1].usr",
                8,
                "unknown field; did you mean `user`?",
            ),
            (
                "(speed 1.0)",
                "(speed 1.0) (colour 1)",
                "machine[0].colour",
                5,
                "unknown field",
            ),
            (
                "\"/var/lib/fruix\"",
                "\"var/lib/fruix\"",
                "machine[0].state-dir",
                6,
                "relative",
            ),
            (
                "(parallel-builds 2)",
                "(parallel-builds 0)",
                "machine[0].parallel-builds",
                5,
                "not a positive count",
            ),
            (
                "(user \"fruix\")",
                "(user \"fruix\") (signing-key \"b2:AAAA\")",
                "machine[1].guest-signing-key",
                8,
                "is missing",
            ),
            (
                "(user \"fruix\")",
                "(user \"fruix\") (signing-key \"no key\") (guest-signing-key \"/k\")",
                "machine[1].signing-key",
                8,
                "not a public key",
            ),
            (
                "(port 2222)",
                "(port \"2222\")",
                "machine[0].port",
                2,
                "expected an integer",
            ),
            // Regression: a user name holding a bidi control was taken
            // (control characters were refused already), though no user
            // could log in under it.
            (
                "(user \"fruix\")",
                "(user \"fr\u{202e}uix\")",
                "machine[1].user",
                8,
                "the user name holds \\342\\200\\256, a control or format character",
            ),
        ];
        crate::testing::assert_mistakes_refused(EXAMPLE, parse, &mistakes);
    }

    /// Regression: `host` was only checked for blanks, so a user, a port or
    /// an ssh option (`a@b`, `h:22`, `-oProxyCommand=x`) was taken as the
    /// host and reached ssh's command line.
    #[test]
    fn a_host_is_a_host_name_or_an_ip_address() {
        let host = "(host \"builder-2.example\")";
        for good in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "2001:db8::42",
            "builder-1.example.org",
            "b2",
            "xn--bcher-kva.example",
        ] {
            let m = parse(&EXAMPLE.replace(host, &format!("(host \"{good}\")")))
                .unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(m.get("builder-2").unwrap().target.host, good);
        }
        let bad = [
            "a@b",
            "h:22",
            "-oProxyCommand=x",
            "a b",
            "",
            " ",
            "builder-.example",
            "builder..example",
            "under_score.example",
            "1.2.3.400",
            "[::1]",
            "h/x",
        ]
        .map(|v| format!("(host \"{v}\")"));
        let mistakes: Vec<_> = bad
            .iter()
            .map(|with| {
                (
                    host,
                    with.as_str(),
                    "machine[1].host",
                    8,
                    "is not a host name or IP address; give the host alone: `user` and `port` are fields of their own",
                )
            })
            .collect();
        crate::testing::assert_mistakes_refused(EXAMPLE, parse, &mistakes);
        let long = format!("{}.example", "a".repeat(64));
        let (field, _, message) =
            field_error(&EXAMPLE.replace(host, &format!("(host \"{long}\")")));
        assert_eq!(field, "machine[1].host", "{message}");
    }

    #[test]
    fn a_virtual_machine_template_is_read_for_each_driver() {
        use crate::testing::PINNED_HOST_KEY;
        use crate::vm::{Accel, VmDriverSpec};
        let text = &format!(
            r#"(fruix-machines
  (machine (name "vm1") (user "root")
           (vm (driver qemu) (kernel "/vm/vmlinuz") (initrd "/vm/initrd") (memory 768) (cpus 2)
               (accel auto) (boot-timeout 60) (host-key "{PINNED_HOST_KEY}")))
  (machine (name "vm2") (user "root")
           (vm (driver bhyve) (dataset "zroot/vm/fbsd") (snapshot "approved") (address "10.0.0.2")
               (host-key "{PINNED_HOST_KEY}")))
  (machine (name "vm3") (user "root")
           (vm (driver xcp-ng) (master "root@xcp.example") (template "fbsd-15")
               (host-key "{PINNED_HOST_KEY}"))))"#
        );
        let m = parse(text).unwrap();
        let vm1 = m.get("vm1").unwrap().vm.clone().unwrap();
        assert_eq!((vm1.memory_mib, vm1.cpus), (768, 2));
        assert_eq!(vm1.boot_timeout, std::time::Duration::from_secs(60));
        assert_eq!(vm1.shutdown_timeout, std::time::Duration::from_secs(30));
        assert!(matches!(
            vm1.driver,
            VmDriverSpec::Qemu { accel: Accel::Auto, ref kernel, .. } if kernel.as_deref() == Some("/vm/vmlinuz")
        ));
        assert_eq!(m.get("vm1").unwrap().target.host, "127.0.0.1");
        // Not an address to connect to: only the user is the machine's.
        assert_eq!(m.get("vm1").unwrap().ssh_target(), None);
        assert_eq!(m.get("vm1").unwrap().target.user, "root");
        assert_eq!(
            m.get("vm2").unwrap().vm.as_ref().unwrap().driver.name(),
            "bhyve"
        );
        assert_eq!(
            m.get("vm3").unwrap().vm.as_ref().unwrap().driver.name(),
            "xcp-ng"
        );
        for (bad, field, says) in [
            (
                "(user \"root\")\n           (vm (driver qemu)",
                "machine[0].host",
                "not for a virtual machine",
            ),
            (
                "(driver qemu) (kernel \"/vm/vmlinuz\")",
                "machine[0].vm.driver",
                "not a VM driver",
            ),
            (
                "(kernel \"/vm/vmlinuz\") (initrd \"/vm/initrd\")",
                "machine[0].vm.image",
                "is missing",
            ),
            (
                "(accel auto)",
                "machine[0].vm.accel",
                "not auto, kvm or tcg",
            ),
        ] {
            let replaced = match field {
                "machine[0].host" => text.replacen(
                    bad,
                    "(user \"root\") (host \"h\")\n           (vm (driver qemu)",
                    1,
                ),
                "machine[0].vm.driver" => {
                    text.replacen(bad, "(driver vmware) (kernel \"/vm/vmlinuz\")", 1)
                }
                "machine[0].vm.image" => text.replacen(bad, "", 1),
                _ => text.replacen(bad, "(accel fast)", 1),
            };
            let (f, _, message) = field_error(&replaced);
            assert_eq!(f, field, "{message}");
            assert!(message.contains(says), "{message}");
        }
    }

    /// Regression: the second machine's name was reported as field
    /// `machine.name`, unlike every other error (`machine[1].port`).
    #[test]
    fn duplicate_names_are_refused() {
        let (field, line, message) = field_error(&EXAMPLE.replace("builder-2", "builder-1"));
        assert_eq!((field.as_str(), line), ("machine[1].name", Some(8)));
        assert!(
            message.contains("twice") && message.contains("line 2"),
            "{message}"
        );
    }

    /// A pool of `m1` (key `keys/m1`), `m2` (key `keys/m2`) and `m3`
    /// (key `keys/m1` too), read from `dir/machines.scm`.
    fn pool_with_keys(dir: &Path) -> Machines {
        let text = format!(
            r#"(fruix-machines
  (machine (name "m1") (host "h1") (user "u")
           (private-key {:?}))
  (machine (name "m2") (host "h2") (user "u") (private-key {:?}))
  (machine (name "m3") (host "h3") (user "u") (private-key {:?}))
  (machine (name "m4") (host "h4") (user "u")))"#,
            dir.join("keys/m1"),
            dir.join("keys/m2"),
            dir.join("keys/m1"),
        );
        Machines::parse(&dir.join("machines.scm"), &text).unwrap()
    }

    /// The error of checking the keys of the machines named `used`.
    fn key_refused(machines: &Machines, used: &[&str]) -> (String, Option<usize>, String) {
        crate::testing::invalid_metadata(
            machines.check_private_keys(|m| used.contains(&m.name.as_str())),
        )
    }

    /// Regression: a misspelt `private-key` was found only when a build
    /// reached its machine, hours into a matrix. The keys of the machines
    /// used are checked up front, naming the machine, its field and line.
    #[test]
    fn a_used_machine_s_private_key_must_open_as_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let machines = pool_with_keys(dir.path());
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        // Missing.
        let (field, line, message) = key_refused(&machines, &["m2", "m4"]);
        assert_eq!((field.as_str(), line), ("machine[1].private-key", Some(4)));
        let key = dir.path().join("keys/m2");
        assert!(
            message.starts_with(&format!("machine \"m2\": {} does not exist", key.display())),
            "{message}"
        );
        // A symlink to a regular file is a key, as ssh takes it.
        std::fs::write(dir.path().join("keys/m2.real"), "a key\n").unwrap();
        std::os::unix::fs::symlink("m2.real", &key).unwrap();
        machines.check_private_keys(|m| m.name == "m2").unwrap();
        // Machines not used, and machines without a key, are not checked.
        machines
            .check_private_keys(|m| m.name != "m1" && m.name != "m3")
            .unwrap();
        // A directory, a FIFO (refused without waiting for a writer), a
        // path through a file: m1's, said once for m3 too.
        let m1 = dir.path().join("keys/m1");
        std::fs::create_dir(&m1).unwrap();
        let (field, line, message) = key_refused(&machines, &["m3", "m1"]);
        assert_eq!((field.as_str(), line), ("machine[0].private-key", Some(3)));
        assert!(
            message.contains("is a directory, not a regular file"),
            "{message}"
        );
        std::fs::remove_dir(&m1).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &m1,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (_, _, message) = key_refused(&machines, &["m3"]);
        assert!(
            message.contains("is a FIFO, not a regular file"),
            "{message}"
        );
        std::fs::remove_file(&m1).unwrap();
        std::fs::write(&m1, "a key\n").unwrap();
        machines.check_private_keys(|_| true).unwrap();
    }

    /// A key path whose symlinks loop, or that goes through a file, names
    /// no key: the configuration's mistake, never a system failure.
    #[test]
    fn a_private_key_path_that_leads_nowhere_is_the_configuration_s() {
        let dir = tempfile::tempdir().unwrap();
        let machines = pool_with_keys(dir.path());
        std::fs::write(dir.path().join("keys"), "a file, not a directory").unwrap();
        let (field, _, message) = key_refused(&machines, &["m1"]);
        assert_eq!(field, "machine[0].private-key");
        assert!(
            message.contains("cannot be opened: Not a directory"),
            "{message}"
        );
        std::fs::remove_file(dir.path().join("keys")).unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::os::unix::fs::symlink("m1", dir.path().join("keys/m1")).unwrap();
        let (_, _, message) = key_refused(&machines, &["m1"]);
        assert!(message.contains("symbolic links"), "{message}");
    }

    /// A key's name is shown escaped, as every name from a file is.
    #[test]
    fn a_private_key_s_name_is_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id\u{202e}x");
        let text = format!(
            "(fruix-machines (machine (name \"m\u{202e}1\") (host \"h\") (user \"u\") (private-key \"{}\")))",
            key.display()
        );
        let machines = Machines::parse(&dir.path().join("machines.scm"), &text).unwrap();
        let e = machines.check_private_keys(|_| true).unwrap_err();
        assert_eq!(e.failure(), crate::Failure::Input);
        let shown = e.to_string();
        assert!(!shown.chars().any(escape::is_unsafe), "{shown:?}");
        assert!(shown.contains("machine \"m\\342\\200\\2561\""), "{shown}");
        assert!(
            shown.contains("id\\342\\200\\256x does not exist"),
            "{shown}"
        );
    }

    /// Regression: a pinned `host-key` that is no key (`"ssh-ed25519
    /// notakey"`) was read, and refused only when a build connected; it is
    /// refused when the file is read, naming the field and its line.
    #[test]
    fn a_host_key_that_is_no_key_is_refused_when_read() {
        let real =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
        let refused = [
            "ssh-ed25519",
            "ssh-ed25519 notakey",
            "ssh-ed25519 AAAAkey",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
            // The fake keys tests pinned: not base64 of a whole key.
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIm1",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI7",
            // A type other than the key's own.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ",
            // A key of a type fruix does not connect with.
            "x-unknown AAAACXgtdW5rbm93bgAAAAR0ZXN0",
            "notakey",
        ];
        for key in refused {
            let text = EXAMPLE.replace(real, key);
            let (field, line, message) = field_error(&text);
            assert_eq!(
                (field.as_str(), line),
                ("machine[0].host-key", Some(4)),
                "{key}: {message}"
            );
            assert!(
                message.contains(&format!(
                    "pinned host-key {} is not a public key",
                    escape::quoted(key)
                )),
                "{key}: {message}"
            );
        }
    }

    /// A real key of each type fruix connects with is read, comment or
    /// not; so is the form the tests pin as a key unique to a number.
    #[test]
    fn a_host_key_of_each_type_is_read() {
        let real =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
        let keys = [
            real.to_string(),
            format!("{real} root@builder-1"),
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHz8pYUeFa2ueU1gRqTZgBB8/dfRVSJryLbTwFxHQxUBRNsYg7qTMFeXTsAQjHgZasJTgGFq2ThM6Pq0MQQ5spA=".into(),
            "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBKfSa5nSfArjCNpDreeT8fgWsUI+vmWMohSFX3i+agtDW/L/Iox6pv8TbvAzrRro2sDMS3Aus8v4PxxRUl+ZAGeDu2vUsrfAXRnlWIGlVMvfwCDYGYIA1b0vUYyO9n+97Q==".into(),
            "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBADac/tVpxegJxiU5Ymgxb5qTChrFO/UkgC9I2AuWOSygH2bBoL74nuJ4S5CL40sbqV27C6Df3OWpjgb2FtTYZENsAE3aHvYah3uo/yR2XwC3rCh9WlIsBsO+hlegMZ8J/3kAF46Y3uRL6A40qud32xGT46rTfTeoFNwKuqHCCnFCwwCoQ==".into(),
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQClYX6rOIj7YqHLtlnGYZ/Z4v07V7EMhGdIIvfXaWK+B0ozfCmwRPIm6GDWxMZwSslxgao3kpSEOP0UP3uuFECxdpO0TeuFQA148XBSvNGePhrI+pkeTJEr3TMjYFE1eD7LoW37cVPksXNhuXBT0T7iSvdNvsqhdazlwY/ghsRev9zWoJspnClXgdCRTOMPuOL80+8xs4mJ1N9xsu/ehbQzjhUR0f79O2H+u4jcsfWmty2E0Osbokyt+mYimohDV20+lp87Nl03E8HG/ya11BA3BthvS5H5TK49kd3oe1oi2TlRKsnrq6A5/W0Oz/Ono45S+GcbEyxtfDqEbgoZyOlf".into(),
            // The fixtures' form: `AAAAI`, one of `A`..`P`, 42 more.
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA{:0>42}", 0),
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA{:0>42}", 123_456),
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP{}", "z".repeat(42)),
        ];
        for key in keys {
            let m = parse(&EXAMPLE.replace(real, &key)).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(
                m.get("builder-1").unwrap().host_key.as_deref(),
                Some(key.as_str())
            );
        }
    }

    #[test]
    fn other_heads_are_refused() {
        assert!(parse("(fruix-executors)").is_err());
        assert_eq!(parse("(fruix-machines)").unwrap().machines, []);
    }
}
