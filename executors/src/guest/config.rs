//! The configuration both guest executors share: which guest (directly or
//! from a machines file), how to reach and trust it, where its state lives,
//! and the caps on what comes back from it.

// The config struct's field docs are what `fruix executors describe` shows
// for each key (`user@host[:port]`), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use fruix_core::escape;
use fruix_core::executor::{config_keys, Capabilities, ConfigKey, Executor, ExecutorConfig};
use fruix_core::machines::{Machine, Machines};
use fruix_core::{Error, Result};

use super::{GuestExecutor, Mode};
use crate::import::{Cap, ImportLimits};
use crate::ssh::remote::MIN_LINE_BYTES;
use crate::ssh::{
    HostKeyPolicy, SshOptions, SshTarget, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_LINE_BYTES,
};

/// The guest state directory when none is configured.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fruix";
/// Where source objects go in a guest unless `guest_store` says otherwise.
pub const DEFAULT_GUEST_STORE: &str = "/frx/store";

/// The guest helper when none is configured (looked up in the guest's PATH).
pub const DEFAULT_HELPER: &str = "fruix";

/// Configuration of both guest executors (JSON object; unknown keys are
/// refused). Either `guest` or `machines` with `machine` names the guest.
/// Each field's doc comment is the description `fruix executors describe`
/// shows for its key.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// the guest as user@host[:port] (or use machines + machine)
    pub guest: Option<String>,
    /// private key file (ed25519, ECDSA or RSA; default: the machine's
    /// private-key, then ssh-agent, then ~/.ssh/id_*)
    pub identity: Option<PathBuf>,
    /// OpenSSH known_hosts file (default ~/.ssh/known_hosts)
    pub known_hosts: Option<PathBuf>,
    /// record an unknown host key instead of refusing it (a changed key is
    /// always refused)
    #[serde(default)]
    pub accept_new_host_key: bool,
    /// the guest's state directory (default: the machine's, else
    /// /var/lib/fruix)
    pub guest_state_dir: Option<String>,
    /// where source objects sent to the guest go (default: the machine's
    /// store, else /frx/store)
    pub guest_store: Option<String>,
    /// the guest's fruix, for guest-self-hosted (default: the machine's
    /// helper, else fruix on the guest's PATH)
    pub guest_helper: Option<String>,
    /// the machine's secret signing key, a path in the guest, for
    /// guest-self-hosted: the helper signs the result where it is built
    /// (default: the machine's guest-signing-key, if any)
    pub guest_signing_key: Option<String>,
    /// a machines file (fruix-machines ...)
    pub machines: Option<PathBuf>,
    /// the machine of the machines file to build on
    pub machine: Option<String>,
    /// environment variable holding the identity's passphrase
    pub passphrase_env: Option<String>,
    /// seconds to connect and authenticate (default 30)
    pub connect_timeout_secs: Option<u64>,
    /// seconds each short command in the guest may take: probes, preparing
    /// and finishing the result root, removing the work directory (default
    /// 600); the build steps are not bounded by it
    pub command_timeout_secs: Option<u64>,
    /// make program in the guest, for host-initiated (default: bmake if
    /// present, else make)
    pub make: Option<String>,
    /// cap on the bytes of the import's tar stream (default 68719476736,
    /// 64 GiB)
    pub import_max_bytes: Option<u64>,
    /// cap on the import's archive entries, directories it creates included
    /// (default 10000000)
    pub import_max_entries: Option<u64>,
    /// cap on the bytes of one imported path (default 4095: PATH_MAX less
    /// its NUL)
    pub import_max_path_bytes: Option<u64>,
    /// cap on the bytes of one component of an imported path (default 255,
    /// NAME_MAX)
    pub import_max_name_bytes: Option<u64>,
    /// cap on the bytes of an imported symlink target or hard link name
    /// (default 4095)
    pub import_max_link_bytes: Option<u64>,
    /// cap on one extended tar header (pax, GNU long name or link) of the
    /// import (default 1048576, 1 MiB)
    pub import_max_header_bytes: Option<u64>,
    /// longer lines of guest output are cut, saying so (default 1048576,
    /// 1 MiB; at least 24, the longest line fruix reads from every remote
    /// command)
    pub output_max_line_bytes: Option<u64>,
    /// how to build in the guest the vm executor boots: guest-self-hosted
    /// (default; the result is signed in the guest) or host-initiated
    pub inner: Option<String>,
}

/// The keys of [`GuestConfig`] only the `vm` executor takes.
pub const VM_ONLY_KEYS: &[&str] = &["inner"];

/// Configuration of one guest executor: the shared guest keys but the one
/// only the other mode uses ([`Mode::foreign_keys`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct ModeConfig<const SELF_HOSTED: bool>(pub GuestConfig);

/// Configuration of `host-initiated`: the shared guest keys but
/// `guest_helper` and `guest_signing_key`, which only `guest-self-hosted`
/// uses ([`Mode::foreign_keys`]).
pub type HostInitiatedConfig = ModeConfig<false>;

/// Configuration of `guest-self-hosted`: the shared guest keys but `make`,
/// which only `host-initiated` uses (the helper runs its own make).
pub type SelfHostedConfig = ModeConfig<true>;

impl<const SELF_HOSTED: bool> ModeConfig<SELF_HOSTED> {
    /// The mode this configuration is of.
    pub const MODE: Mode = if SELF_HOSTED {
        Mode::SelfHosted
    } else {
        Mode::HostInitiated
    };
}

impl<const SELF_HOSTED: bool> ExecutorConfig for ModeConfig<SELF_HOSTED> {
    const NAME: &'static str = Self::MODE.name();
    const DESCRIPTION: &'static str = Self::MODE.description();

    fn capabilities() -> Capabilities {
        Self::MODE.capabilities()
    }

    /// The keys of [`GuestConfig`] but the mode's foreign ones and the
    /// `vm` executor's own.
    fn keys() -> Vec<ConfigKey> {
        let mut keys = config_keys::<GuestConfig>();
        keys.retain(|k| {
            let key = k.name.as_str();
            !Self::MODE.foreign_keys().contains(&key) && !VM_ONLY_KEYS.contains(&key)
        });
        keys
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        Ok(Arc::new(self.0.build(Self::MODE)?))
    }
}

fruix_core::register_executor!(HostInitiatedConfig);
fruix_core::register_executor!(SelfHostedConfig);

impl GuestConfig {
    /// Checks the configuration and makes the executor of `mode`. A
    /// virtual machine template of the machines file is refused: it has no
    /// address until the `vm` executor boots a guest from it.
    pub fn build(self, mode: Mode) -> Result<GuestExecutor> {
        self.build_with(mode, false)
    }

    /// [`GuestConfig::build`] for the `vm` executor, which takes a virtual
    /// machine template's user and keys, and sets the address of the guest
    /// it boots with [`GuestExecutor::at`].
    pub(crate) fn build_in_template(self, mode: Mode) -> Result<GuestExecutor> {
        self.build_with(mode, true)
    }

    fn build_with(self, mode: Mode, template: bool) -> Result<GuestExecutor> {
        let invalid = |message: String| Error::InvalidConfig {
            executor: mode.name().to_string(),
            message,
        };
        let foreign_given = match mode {
            Mode::HostInitiated if self.guest_helper.is_some() => Some("guest_helper"),
            Mode::HostInitiated if self.guest_signing_key.is_some() => Some("guest_signing_key"),
            Mode::SelfHosted if self.make.is_some() => Some("make"),
            _ if self.inner.is_some() && !template => Some("inner"),
            _ => None,
        };
        if let Some(key) = foreign_given {
            return Err(invalid(format!(
                "`{}` is not a key of {}; see `fruix executors describe {}`",
                key,
                mode.name(),
                mode.name()
            )));
        }
        let (target, machine) = match (&self.guest, &self.machines, &self.machine) {
            (Some(guest), None, None) => (SshTarget::parse(guest).map_err(invalid)?, None),
            (None, Some(file), Some(name)) => {
                let machines = Machines::read(file)?;
                let m = machines.get(name)?.clone();
                if m.ssh_target().is_none() && !template {
                    return Err(invalid(format!(
                        "machine {} is a virtual machine template, with no address until a guest is booted from it; build in it with the `vm` executor (--executor vm)",
                        escape::quoted(name)
                    )));
                }
                (m.target.clone(), Some(m))
            }
            (None, Some(_), None) => {
                return Err(invalid("`machines` is given without `machine`; name the machine to build on".into()))
            }
            (None, None, Some(_)) => {
                return Err(invalid("`machine` is given without `machines`; give the machines file".into()))
            }
            (Some(_), _, _) => {
                return Err(invalid("give either `guest` or `machines` with `machine`, not both".into()))
            }
            (None, None, None) => {
                return Err(invalid("no guest: give `guest` (user@host[:port], --guest) or `machines` and `machine` (--machines, --machine)".into()))
            }
        };
        let identity = self
            .identity
            .or_else(|| machine.as_ref().and_then(|m| m.private_key.clone()));
        let host_keys = match machine.as_ref().and_then(|m| m.host_key.clone()) {
            Some(pinned) => HostKeyPolicy::Pinned(pinned),
            None => HostKeyPolicy::known_hosts(self.known_hosts, self.accept_new_host_key),
        };
        // A key left out takes the machine's value, if it has one.
        let or_machine = |given: Option<String>, of: fn(&Machine) -> &Option<String>| {
            given.or_else(|| machine.as_ref().and_then(|m| of(m).clone()))
        };
        let state_dir = or_machine(self.guest_state_dir, |m| &m.state_dir)
            .unwrap_or_else(|| DEFAULT_STATE_DIR.to_string());
        let store_dir = or_machine(self.guest_store, |m| &m.store)
            .unwrap_or_else(|| DEFAULT_GUEST_STORE.to_string());
        let signing_key = or_machine(self.guest_signing_key, |m| &m.guest_signing_key);
        let helper = or_machine(self.guest_helper, |m| &m.helper)
            .unwrap_or_else(|| DEFAULT_HELPER.to_string());
        for (key, value) in [
            ("guest_state_dir", Some(&state_dir)),
            ("guest_store", Some(&store_dir)),
            ("guest_signing_key", signing_key.as_ref()),
        ] {
            if let Some(value) = value.filter(|v| !v.starts_with('/')) {
                return Err(invalid(format!(
                    "`{key}` {} is relative; give an absolute path in the guest",
                    escape::quoted(value)
                )));
            }
        }
        let connect_timeout = match self.connect_timeout_secs {
            Some(0) => return Err(invalid("`connect_timeout_secs` must be at least 1".into())),
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let command_timeout = match self.command_timeout_secs {
            Some(0) => return Err(invalid("`command_timeout_secs` must be at least 1".into())),
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_COMMAND_TIMEOUT,
        };
        for (key, value) in [
            ("guest_helper", Some(&helper)),
            ("make", self.make.as_ref()),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(format!("`{key}` is empty")));
            }
        }
        let mut limits = ImportLimits::default();
        for (cap, value) in Cap::ALL.into_iter().zip([
            self.import_max_bytes,
            self.import_max_entries,
            self.import_max_path_bytes,
            self.import_max_name_bytes,
            self.import_max_link_bytes,
            self.import_max_header_bytes,
        ]) {
            match value {
                Some(0) => return Err(invalid(format!("`{}` must be at least 1", cap.key()))),
                Some(v) => limits.set(cap, v),
                None => {}
            }
        }
        // A cap that would cut the `fruix-session PID` line left every
        // remote command waiting for it, to its timeout.
        let max_line_bytes = match self.output_max_line_bytes {
            Some(v) if v < MIN_LINE_BYTES as u64 => {
                return Err(invalid(format!(
                    "`output_max_line_bytes` must be at least {MIN_LINE_BYTES} (the longest line fruix itself reads from a remote command)"
                )))
            }
            Some(v) => usize::try_from(v).unwrap_or(usize::MAX),
            None => DEFAULT_MAX_LINE_BYTES,
        };
        Ok(GuestExecutor {
            mode,
            ssh: SshOptions {
                target,
                identity,
                passphrase_env: self.passphrase_env,
                host_keys,
                connect_timeout,
                command_timeout,
                max_line_bytes,
            },
            state_dir: state_dir.trim_end_matches('/').to_string(),
            store_dir: store_dir.trim_end_matches('/').to_string(),
            helper,
            signing_key,
            make: self.make,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::executor::parse_config;
    use fruix_core::testing::TestDir;
    use fruix_core::Registry;
    use serde_json::json;

    /// Regression: an unknown key was answered with every field of the
    /// shared guest configuration, keys the executor then refuses among
    /// them (`inner`, and the other mode's).
    #[test]
    fn an_unknown_key_is_answered_with_the_executor_s_own_keys() {
        let registry = Registry::compiled().unwrap();
        for (executor, refused) in [
            (
                "host-initiated",
                ["inner", "guest_helper", "guest_signing_key"],
            ),
            ("guest-self-hosted", ["inner", "make", "make"]),
            ("vm", ["guest", "known_hosts", "accept_new_host_key"]),
        ] {
            let e = registry
                .create(executor, json!({"host_key": "x"}))
                .unwrap_err()
                .to_string();
            let keys: Vec<String> = registry
                .get(executor)
                .unwrap()
                .config_keys
                .iter()
                .map(|k| format!("`{}`", k.name))
                .collect();
            assert!(
                e.contains(&format!(
                    "unknown key `host_key`; the keys of {executor} are {} (see",
                    keys.join(", ")
                )),
                "{e}"
            );
            for key in refused {
                assert!(!e.contains(&format!("`{key}`")), "{executor}: {e}");
            }
        }
    }

    #[test]
    fn bad_configuration_names_the_problem() {
        let registry = Registry::compiled().unwrap();
        for (config, expected) in [
            (json!({}), "no guest"),
            (json!({"guest": "nouser"}), "user@host"),
            (
                json!({"guest": "a@b", "colour": 1}),
                "unknown key `colour`; the keys of host-initiated are `accept_new_host_key`",
            ),
            (
                json!({"guest": "a@b", "guest_state_dir": "var"}),
                "`guest_state_dir` \"var\" is relative",
            ),
            (
                json!({"guest": "a@b", "guest_store": "frx/store"}),
                "`guest_store` \"frx/store\" is relative",
            ),
            (json!({"machines": "/m.scm"}), "without `machine`"),
            (
                json!({"guest": "a@b", "inner": "host-initiated"}),
                "`inner` is not a key of",
            ),
            (json!({"guest": "a@b", "machine": "x"}), "not both"),
            (
                json!({"guest": "a@b", "connect_timeout_secs": 0}),
                "at least 1",
            ),
            (
                json!({"guest": "a@b", "command_timeout_secs": 0}),
                "`command_timeout_secs` must be at least 1",
            ),
            (
                json!({"guest": "a@b", "import_max_entries": 0}),
                "`import_max_entries` must be at least 1",
            ),
            (
                json!({"guest": "a@b", "output_max_line_bytes": 0}),
                "`output_max_line_bytes` must be at least 24",
            ),
            // Regression: a cap that cut the session line was taken, and
            // every remote command then waited for its timeout.
            (
                json!({"guest": "a@b", "output_max_line_bytes": 10}),
                "`output_max_line_bytes` must be at least 24",
            ),
        ] {
            let e = registry
                .create("host-initiated", config)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
        let e = registry
            .create(
                "guest-self-hosted",
                json!({"guest": "a@b", "guest_signing_key": "key"}),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("`guest_signing_key` \"key\" is relative"), "{e}");
    }

    #[test]
    fn import_caps_and_the_line_cap_are_configuration_keys_with_defaults() {
        let registry = Registry::compiled().unwrap();
        let keys = &registry.get("guest-self-hosted").unwrap().config_keys;
        // What `fruix executors describe` shows names each key's default.
        let described = |name: &str, default: u64| {
            let key = keys.iter().find(|k| k.name == name);
            let key = key.unwrap_or_else(|| panic!("{name} is not a configuration key"));
            assert!(
                key.description.contains(&format!("(default {default}")),
                "{name}: {}",
                key.description
            );
        };
        for cap in Cap::ALL {
            described(cap.key(), ImportLimits::default().get(cap));
        }
        described(crate::ssh::LINE_CAP_KEY, DEFAULT_MAX_LINE_BYTES as u64);

        let e = GuestConfig {
            guest: Some("a@b".into()),
            ..Default::default()
        }
        .build(Mode::SelfHosted)
        .unwrap();
        assert_eq!(e.limits, ImportLimits::default());
        assert_eq!(e.ssh.max_line_bytes, DEFAULT_MAX_LINE_BYTES);

        let config = json!({"guest": "a@b", "import_max_bytes": 1024, "import_max_entries": 7,
            "import_max_path_bytes": 6, "import_max_name_bytes": 5, "import_max_link_bytes": 4,
            "import_max_header_bytes": 3, "output_max_line_bytes": 24});
        let config: GuestConfig = parse_config("guest-self-hosted", config).unwrap();
        let e = config.build(Mode::SelfHosted).unwrap();
        let expected = ImportLimits {
            max_bytes: 1024,
            max_entries: 7,
            max_path_bytes: 6,
            max_name_bytes: 5,
            max_link_bytes: 4,
            max_header_bytes: 3,
        };
        assert_eq!(e.limits, expected);
        assert_eq!(e.ssh.max_line_bytes, 24);
    }

    #[test]
    fn a_virtual_machine_template_is_no_guest_to_connect_to() {
        // Its address is a placeholder until the `vm` executor boots a guest
        // from it; connecting there would reach whatever listens on this
        // machine's port 22.
        let dir = TestDir::new();
        let file = dir.write(
            "machines.scm",
            format!(
                r#"(fruix-machines (machine (name "vm1") (user "root")
                 (vm (driver qemu) (kernel "/vm/vmlinuz") (host-key "{}"))))"#,
                fruix_core::testing::PINNED_HOST_KEY
            ),
        );
        for mode in [Mode::SelfHosted, Mode::HostInitiated] {
            let config = GuestConfig {
                machines: Some(file.clone()),
                machine: Some("vm1".into()),
                ..Default::default()
            };
            let e = config.clone().build(mode).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidConfig { message, .. } if message.contains("`vm` executor")),
                "{e}"
            );
            let e = config.build_in_template(mode).unwrap();
            assert_eq!(e.ssh.target.user, "root");
        }
    }

    #[test]
    fn machines_file_supplies_target_key_state_dir_and_helper() {
        let dir = TestDir::new();
        let file = dir.write(
            "machines.scm",
            r#"(fruix-machines (machine (name "b1") (host "10.0.0.5") (port 2200) (user "fruix")
                 (private-key "/k") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ")
                 (state-dir "/srv/fruix/") (helper "/usr/local/bin/fruix")))"#,
        );
        let e = GuestConfig {
            machines: Some(file),
            machine: Some("b1".into()),
            ..Default::default()
        }
        .build(Mode::SelfHosted)
        .unwrap();
        assert_eq!(e.ssh.target.to_string(), "fruix@10.0.0.5:2200");
        assert_eq!(e.ssh.identity.as_deref(), Some(std::path::Path::new("/k")));
        assert!(matches!(e.ssh.host_keys, HostKeyPolicy::Pinned(_)));
        assert_eq!(e.guest_roots_dir(), "/srv/fruix/native-builds");
        assert_eq!(e.helper, "/usr/local/bin/fruix");
    }

    /// Regression: a guest executor's pinned key comes from its machine's
    /// `host-key` (`machines` with `machine`; a `(vm ...)` record's for
    /// the `vm` executor). A `(vm ...)` record's that was no key
    /// (`"ssh-ed25519 notakey"`) was taken, and refused only when fruix
    /// connected, after booting the guest. Every pinned key is parsed when
    /// the configuration is, refused as the machines file's invalid field
    /// (exit 2), naming it and its line.
    #[test]
    fn a_pinned_key_that_is_no_key_is_refused_when_the_configuration_is_parsed() {
        let registry = Registry::compiled().unwrap();
        let dir = TestDir::new();
        let key = dir.write("id_ed25519", "never read\n");
        for (executor, machine, field, line) in [
            (
                "host-initiated",
                r#"(machine (name "m") (host "10.0.0.5") (user "root")
                     (host-key "ssh-ed25519 notakey"))"#,
                "machine[0].host-key",
                3,
            ),
            (
                "guest-self-hosted",
                r#"(machine (name "m") (host "10.0.0.5") (user "root")
                     (host-key "ssh-ed25519 notakey"))"#,
                "machine[0].host-key",
                3,
            ),
            (
                "vm",
                r#"(machine (name "m") (user "root")
                     (vm (driver qemu) (kernel "/vm/vmlinuz") (host-key "ssh-ed25519 notakey")))"#,
                "machine[0].vm.host-key",
                3,
            ),
            (
                "vm",
                r#"(machine (name "m") (user "root")
                     (vm (driver xcp-ng) (master "root@xcp.example") (template "t")
                         (master-host-key "ssh-ed25519 notakey") (host-key "GUEST")))"#,
                "machine[0].vm.master-host-key",
                4,
            ),
        ] {
            // The guest's key is well formed where another key is not.
            let machine = machine.replace("GUEST", fruix_core::testing::PINNED_HOST_KEY);
            let file = dir.write("machines.scm", format!("(fruix-machines\n  {machine})"));
            let e = registry
                .create(
                    executor,
                    json!({"machines": file, "machine": "m", "identity": key}),
                )
                .map(|_| ())
                .unwrap_err();
            assert_eq!(e.failure(), fruix_core::Failure::Input, "{e}");
            match &e {
                Error::InvalidMetadata {
                    field: got,
                    line: got_line,
                    message,
                    ..
                } => {
                    assert_eq!((got.as_str(), *got_line), (field, Some(line)), "{e}");
                    assert!(
                        message.contains("\"ssh-ed25519 notakey\" is not a public key"),
                        "{e}"
                    );
                }
                other => panic!("{executor}: not the machines file's field error: {other:?}"),
            }
        }
    }
}
