//! The commands a jail build runs, as data: what to set up (mounts, the
//! jail), the make steps of the `fruix-freebsd` plan rendered for the jail
//! (or for the host), and what to tear down. Nothing here runs anything, so
//! the exact commands can be checked on any machine.
//!
//! The source tree and the work directory are mounted into the jail at their
//! own paths (`JAIL_ROOT/SOURCE`, read-only, and `JAIL_ROOT/WORK`,
//! read-write, both nullfs), so every path in the make steps is the same
//! inside the jail and out, and the direct runner runs the very same make
//! invocations on the host.

use std::path::{Path, PathBuf};

use fruix_freebsd::{BuildPlan, MakeStep};

/// `jail(8)` on FreeBSD: creates (`-c`) and removes (`-r`) the run's jail.
pub const JAIL: &str = "/usr/sbin/jail";
/// `jexec(8)` on FreeBSD: runs each make step inside the jail.
pub const JEXEC: &str = "/usr/sbin/jexec";
/// `mount(8)` on FreeBSD: nullfs-mounts the source and work directory into
/// the jail root.
pub const MOUNT: &str = "/sbin/mount";
/// `umount(8)` on FreeBSD: undoes the mounts of [`MOUNT`].
pub const UMOUNT: &str = "/sbin/umount";
/// `env(1)` on FreeBSD, as the jail has it: `env -i` starts each jailed make
/// step with only [`JAIL_PATH`] and the step's own variables.
pub const ENV: &str = "/usr/bin/env";

/// `PATH` of the make steps inside the jail.
pub const JAIL_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin";

/// What a command is for, which decides what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Mounting, creating or removing the jail: failure is a system failure.
    Setup,
    /// A make step: failure is a build failure.
    Build,
}

/// One command: its stage (which also names its log), program, arguments
/// and environment changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The event stage it runs as, and its log's name (`logs/STAGE.log`):
    /// the make target for a make step, `mount-source`, `create-jail` and
    /// the like for setup and teardown.
    pub stage: String,
    /// Whether a failure is a system failure (setup) or a build failure
    /// (make step).
    pub purpose: Purpose,
    /// The program, then its arguments; never empty. A jailed make step is
    /// `jexec NAME env -i PATH=... VAR=VALUE... MAKE -C SOURCE ...`, so its
    /// environment is in `argv` and `env` and `env_remove` are empty.
    pub argv: Vec<String>,
    /// Set in the command's environment (direct make steps).
    pub env: Vec<(String, String)>,
    /// Removed from the command's environment (direct make steps).
    pub env_remove: Vec<String>,
}

impl Invocation {
    fn setup(stage: &str, argv: &[&str]) -> Invocation {
        Invocation {
            stage: stage.to_string(),
            purpose: Purpose::Setup,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            env_remove: Vec::new(),
        }
    }

    /// The command line, for messages and tests.
    pub fn line(&self) -> String {
        self.argv.join(" ")
    }
}

/// Where and how one run builds.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The jail's name (and host name); `None` runs directly on the host.
    pub jail: Option<Jail>,
    /// The make program (inside the jail, or on the host), the source tree
    /// and the work directory, at the same paths inside the jail and out.
    pub build: fruix_freebsd::Layout,
}

/// The jail of a run.
#[derive(Debug, Clone)]
pub struct Jail {
    /// The jail's name, also its `host.hostname` and the host name
    /// `promotion.scm` records; made by [`jail_name`], so it has no dots.
    pub name: String,
    /// The jail's root directory: a FreeBSD userland.
    pub root: PathBuf,
}

impl Jail {
    /// Where `path` of the host appears under the jail root.
    pub fn inside(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// The setup commands, each with the command that undoes it: mount the
/// source read-only, mount the work directory, create the jail.
pub fn setup(layout: &Layout) -> Vec<(Invocation, Invocation)> {
    let Some(jail) = &layout.jail else {
        return Vec::new();
    };
    let text = |p: &Path| p.to_string_lossy().into_owned();
    let (source, work) = (&layout.build.source_dir, &layout.build.work_dir);
    let (source_in, work_in) = (text(&jail.inside(source)), text(&jail.inside(work)));
    let (source, work) = (text(source), text(work));
    let path = format!("path={}", jail.root.display());
    let name = format!("name={}", jail.name);
    let host = format!("host.hostname={}", jail.name);
    vec![
        (
            Invocation::setup(
                "mount-source",
                &[MOUNT, "-t", "nullfs", "-o", "ro", &source, &source_in],
            ),
            Invocation::setup("unmount-source", &[UMOUNT, &source_in]),
        ),
        (
            Invocation::setup("mount-work", &[MOUNT, "-t", "nullfs", &work, &work_in]),
            Invocation::setup("unmount-work", &[UMOUNT, &work_in]),
        ),
        (
            Invocation::setup(
                "create-jail",
                &[
                    JAIL,
                    "-c",
                    &name,
                    &path,
                    &host,
                    "mount.devfs",
                    "ip4=disable",
                    "ip6=disable",
                    "persist",
                ],
            ),
            Invocation::setup("remove-jail", &[JAIL, "-r", &jail.name]),
        ),
    ]
}

/// The plan's make steps as commands: in `jail` with an environment built
/// from nothing, or on the host with the step's environment changes.
pub fn make_steps(jail: Option<&Jail>, plan: &BuildPlan) -> Vec<Invocation> {
    plan.steps
        .iter()
        .map(|step| make_step(jail, step))
        .collect()
}

fn make_step(jail: Option<&Jail>, step: &MakeStep) -> Invocation {
    let mut make = vec![
        step.program.clone(),
        "-C".into(),
        step.working_dir.to_string_lossy().into_owned(),
    ];
    make.extend(step.args_text());
    let env = step.env_text().into_iter().map(|(k, v)| (k.to_string(), v));
    let (argv, env, env_remove) = match jail {
        Some(jail) => {
            let mut argv = vec![
                JEXEC.to_string(),
                jail.name.clone(),
                ENV.into(),
                "-i".into(),
                format!("PATH={JAIL_PATH}"),
            ];
            argv.extend(env.map(|(k, v)| format!("{k}={v}")));
            argv.extend(make);
            (argv, Vec::new(), Vec::new())
        }
        None => {
            let removed = step.env_removed.iter().map(|v| v.to_string()).collect();
            (make, env.collect(), removed)
        }
    };
    Invocation {
        stage: step.target.into(),
        purpose: Purpose::Build,
        argv,
        env,
        env_remove,
    }
}

/// The most characters of the run id a jail name carries: with `fruix-`
/// and the hash, a name stays far below FreeBSD's limit on jail names and
/// host names (`MAXHOSTNAMELEN`, 256 bytes with the NUL).
const MAX_JAIL_RUN_ID: usize = 64;

/// A jail name for the run of `run_id` into `result_root`: `fruix-RUNID-HASH`
/// (RUNID: the run id's first 64 characters, any but
/// letters, digits and `-` made `_`; HASH: the 64-bit FNV-1a of the result
/// root's path, all 16 hex digits, so that two runs at once, which write
/// two result roots, get two names unless their paths' hashes collide).
/// Jail names may not contain dots, so none are used.
pub fn jail_name(run_id: &str, result_root: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in result_root.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let run_id: String = run_id
        .chars()
        .take(MAX_JAIL_RUN_ID)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("fruix-{run_id}-{hash:016x}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fruix_core::executor::BuildRequest;
    use fruix_core::promotion::{BuildPolicy, FreebsdBase, SourceStore};

    pub(crate) fn request(artifacts: &[&str], epoch: Option<i64>) -> BuildRequest {
        BuildRequest {
            source_dir: None,
            jobs_per_machine: false,
            run_id: "20260405T213444Z".into(),
            freebsd_base: FreebsdBase {
                name: "FreeBSD".into(),
                version: "15.0-STABLE".into(),
                branch: "stable/15".into(),
                target: "arm64".into(),
                target_arch: "aarch64".into(),
            },
            source: SourceStore {
                tree_signature: None,
                path: "/usr/src".into(),
                commit: None,
            },
            policy: BuildPolicy {
                jobs: 8,
                kernconf: "GENERIC".into(),
                make_flags: vec!["-DNO_ROOT".into()],
                source_date_epoch: epoch,
            },
            artifacts: artifacts.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn jailed() -> Layout {
        Layout {
            jail: Some(Jail {
                name: "fruix-20260405T213444Z-0badf00d".into(),
                root: "/jails/builder".into(),
            }),
            build: fruix_freebsd::Layout {
                make: "make".into(),
                source_dir: "/usr/src".into(),
                work_dir: "/var/fruix/r1.work".into(),
            },
        }
    }

    /// The make steps of `request` in `layout`.
    fn steps_of(layout: &Layout, request: &BuildRequest) -> Vec<Invocation> {
        let plan = BuildPlan::new(request, &layout.build).unwrap();
        make_steps(layout.jail.as_ref(), &plan)
    }

    fn lines(invocations: &[Invocation]) -> Vec<String> {
        invocations.iter().map(Invocation::line).collect()
    }

    #[test]
    fn setup_mounts_the_source_read_only_and_creates_a_persistent_jail() {
        let (up, down): (Vec<_>, Vec<_>) = setup(&jailed()).into_iter().unzip();
        assert_eq!(
            lines(&up),
            [
                "/sbin/mount -t nullfs -o ro /usr/src /jails/builder/usr/src",
                "/sbin/mount -t nullfs /var/fruix/r1.work /jails/builder/var/fruix/r1.work",
                "/usr/sbin/jail -c name=fruix-20260405T213444Z-0badf00d path=/jails/builder \
                 host.hostname=fruix-20260405T213444Z-0badf00d mount.devfs ip4=disable ip6=disable persist",
            ]
        );
        assert_eq!(
            lines(&down),
            [
                "/sbin/umount /jails/builder/usr/src",
                "/sbin/umount /jails/builder/var/fruix/r1.work",
                "/usr/sbin/jail -r fruix-20260405T213444Z-0badf00d",
            ]
        );
        assert!(up.iter().chain(&down).all(|i| i.purpose == Purpose::Setup));
    }

    #[test]
    fn make_steps_run_in_the_jail_with_a_clean_environment() {
        let steps = steps_of(
            &jailed(),
            &request(&["world", "kernel"], Some(1_775_420_084)),
        );
        assert_eq!(
            lines(&steps[0..1]),
            ["/usr/sbin/jexec fruix-20260405T213444Z-0badf00d /usr/bin/env -i \
              PATH=/sbin:/bin:/usr/sbin:/usr/bin MAKEOBJDIRPREFIX=/var/fruix/r1.work/obj \
              SRCCONF=/dev/null SRC_ENV_CONF=/dev/null __MAKE_CONF=/dev/null SOURCE_DATE_EPOCH=1775420084 \
              make -C /usr/src -j8 buildworld KERNCONF=GENERIC TARGET=arm64 TARGET_ARCH=aarch64 \
              SOURCE_DATE_EPOCH=1775420084 -DNO_ROOT"]
        );
        let stages: Vec<_> = steps.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            stages,
            [
                "buildworld",
                "buildkernel",
                "installworld",
                "distribution",
                "installkernel"
            ]
        );
        assert!(steps[4].line().ends_with(
            "make -C /usr/src installkernel KERNCONF=GENERIC TARGET=arm64 TARGET_ARCH=aarch64 \
             SOURCE_DATE_EPOCH=1775420084 DESTDIR=/var/fruix/r1.work/kernel -DNO_ROOT"
        ));
        assert!(steps
            .iter()
            .all(|s| s.purpose == Purpose::Build && s.env.is_empty()));
    }

    #[test]
    fn direct_steps_are_the_same_make_invocations_on_the_host() {
        let mut layout = jailed();
        layout.jail = None;
        layout.build.make = "bmake".into();
        let steps = steps_of(&layout, &request(&["headers"], None));
        assert_eq!(
            lines(&steps),
            [
                "bmake -C /usr/src -j8 buildworld KERNCONF=GENERIC TARGET=arm64 TARGET_ARCH=aarch64 -DNO_ROOT",
                "bmake -C /usr/src installworld KERNCONF=GENERIC TARGET=arm64 TARGET_ARCH=aarch64 \
                 DESTDIR=/var/fruix/r1.work/world -DNO_ROOT",
            ]
        );
        assert!(steps[0]
            .env
            .contains(&("MAKEOBJDIRPREFIX".into(), "/var/fruix/r1.work/obj".into())));
        assert!(steps[0]
            .env_remove
            .contains(&"SOURCE_DATE_EPOCH".to_string()));
        assert!(steps[0].env_remove.contains(&"MAKEFLAGS".to_string()));
        assert!(setup(&layout).is_empty());
    }

    #[test]
    fn jail_names_are_unique_per_result_root_and_dot_free() {
        let a = jail_name(
            "20260405T213444Z",
            Path::new("/var/lib/fruix/native-builds/a"),
        );
        let b = jail_name(
            "20260405T213444Z",
            Path::new("/var/lib/fruix/native-builds/b"),
        );
        assert_ne!(a, b);
        assert!(
            a.starts_with("fruix-20260405T213444Z-") && !a.contains('.'),
            "{a}"
        );
        assert_eq!(
            jail_name("1.2", Path::new("/x")),
            jail_name("1.2", Path::new("/x"))
        );
        assert!(!jail_name("1.2", Path::new("/x")).contains('.'));
    }

    #[test]
    fn a_jail_name_carries_the_full_64_bit_hash_and_fits_freebsd() {
        // FNV-1a 64 of "a" (the published test vector): all 16 hex digits.
        assert_eq!(
            jail_name("20260405T213444Z", Path::new("a")),
            "fruix-20260405T213444Z-af63dc4c8601ec8c"
        );
        // Two paths whose hashes agree in their low 32 bits get two names.
        let (a, b) = colliding_low_halves();
        assert_ne!(jail_name("r", &a), jail_name("r", &b));
        // However long the run id, the name fits a jail's name and host name
        // (MAXHOSTNAMELEN, 256 bytes with the NUL) and keeps its hash.
        let long = jail_name(&"x".repeat(1000), Path::new("a"));
        assert!(long.len() < 256, "{}", long.len());
        assert!(long.ends_with("-af63dc4c8601ec8c"), "{long}");
    }

    /// Two paths whose 64-bit FNV-1a hashes differ but agree in their low
    /// 32 bits, found by search.
    fn colliding_low_halves() -> (PathBuf, PathBuf) {
        let fnv = |s: &str| {
            s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        };
        let mut seen = std::collections::HashMap::new();
        for i in 0u64.. {
            let path = format!("/r/{i}");
            let hash = fnv(&path);
            if let Some(other) = seen.insert(hash as u32, path.clone()) {
                if fnv(&other) != hash {
                    return (PathBuf::from(other), PathBuf::from(path));
                }
            }
        }
        unreachable!()
    }
}
