//! The plan of a FreeBSD base build, as data: the make steps a request needs
//! (each a make invocation with its arguments, environment and working
//! directory) and how the installed trees become artifacts. Nothing here runs
//! anything; each executor renders the plan its own way.
//!
//! | step            | arguments             | needed by                      |
//! |-----------------|-----------------------|--------------------------------|
//! | `buildworld`    | `-jJOBS`              | every artifact                 |
//! | `buildkernel`   | `-jJOBS`              | `kernel`                       |
//! | `installworld`  | `DESTDIR=WORK/world`  | `world` `headers` `bootloader` |
//! | `distribution`  | `DESTDIR=WORK/world`  | `world`                        |
//! | `installkernel` | `DESTDIR=WORK/kernel` | `kernel`                       |
//!
//! A step is planned only when a requested artifact needs it.
//! `distribution` is part of FreeBSD's documented build contract (build(7)),
//! so it is not probed for: a tree without it fails that step. Every step's
//! arguments are its target, `KERNCONF=`, `TARGET=`, `TARGET_ARCH=`,
//! `SOURCE_DATE_EPOCH=` (when the policy has one), its `DESTDIR=` (install
//! steps), then the policy's `make-flags`
//! verbatim, last, so they can override the plan's variables. `-DNO_ROOT` is
//! one of those flags: an install then writes a `METALOG` at the top of its
//! `DESTDIR`, which the slicing ([`crate::slice`]) keeps with the world and
//! the kernel.
//!
//! The environment: `MAKEOBJDIRPREFIX` is `WORK/obj`; the host's build
//! configuration is shut out (`SRCCONF`, `SRC_ENV_CONF` and `__MAKE_CONF` are
//! `/dev/null`; the policy's make flags may name others); inherited make
//! state is removed (`MAKEFLAGS`, `MFLAGS`, `MAKELEVEL`, `MAKEOBJDIR`,
//! `DESTDIR`, and `SOURCE_DATE_EPOCH` when the policy has none). The build
//! depends on the source tree and the request, not on who started it.

use std::ffi::OsString;
use std::path::PathBuf;

use fruix_core::executor::BuildRequest;
use fruix_core::promotion::FreebsdBase;
use fruix_core::{Error, Result};

use crate::artifact::{requested_artifacts, Artifact};
use crate::slice::Slicing;
use crate::work::{KERNEL_DESTDIR, OBJ_DIR, WORLD_DESTDIR};

/// Where one build runs, as paths on the machine that builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The make program: a name looked up in `PATH`, or a path.
    pub make: String,
    /// The FreeBSD source tree, every step's working directory.
    pub source_dir: PathBuf,
    /// The work directory ([`crate::work`]); not inside the source tree or
    /// the result root.
    pub work_dir: PathBuf,
}

/// A FreeBSD base build: what to run and how to collect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// The requested artifacts, in request order.
    pub artifacts: Vec<Artifact>,
    /// The make invocations, in order.
    pub steps: Vec<MakeStep>,
    /// How the work directory's install trees become `artifacts/`.
    pub slicing: Slicing,
}

/// One make invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeStep {
    /// The make target, also the stage name and the log's name.
    pub target: &'static str,
    /// The make program.
    pub program: String,
    /// make's arguments, in order.
    pub args: Vec<OsString>,
    /// The working directory: the source tree.
    pub working_dir: PathBuf,
    /// Environment variables to set, in order.
    pub env_set: Vec<(&'static str, OsString)>,
    /// Environment variables to remove.
    pub env_removed: Vec<&'static str>,
}

impl MakeStep {
    /// [`MakeStep::args`] as text (paths that are not UTF-8 are converted
    /// lossily), for renderers that build command lines.
    pub fn args_text(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// [`MakeStep::env_set`] as text.
    pub fn env_text(&self) -> Vec<(&'static str, String)> {
        self.env_set
            .iter()
            .map(|(k, v)| (*k, v.to_string_lossy().into_owned()))
            .collect()
    }
}

/// One step of FreeBSD's build.
struct StepSpec {
    target: &'static str,
    /// Runs with `-jJOBS`.
    parallel: bool,
    /// `DESTDIR`, inside the work directory.
    destdir: Option<&'static str>,
    /// The artifacts that need this step.
    needed_by: &'static [Artifact],
}

const STEPS: [StepSpec; 5] = [
    StepSpec {
        target: "buildworld",
        parallel: true,
        destdir: None,
        needed_by: &Artifact::ALL,
    },
    StepSpec {
        target: "buildkernel",
        parallel: true,
        destdir: None,
        needed_by: &[Artifact::Kernel],
    },
    StepSpec {
        target: "installworld",
        parallel: false,
        destdir: Some(WORLD_DESTDIR),
        needed_by: &[Artifact::World, Artifact::Headers, Artifact::Bootloader],
    },
    StepSpec {
        target: "distribution",
        parallel: false,
        destdir: Some(WORLD_DESTDIR),
        needed_by: &[Artifact::World],
    },
    StepSpec {
        target: "installkernel",
        parallel: false,
        destdir: Some(KERNEL_DESTDIR),
        needed_by: &[Artifact::Kernel],
    },
];

/// Environment variables removed from every step: make state inherited from
/// a make that started the build, and variables that would redirect it.
const ENV_REMOVED: [&str; 5] = ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOBJDIR", "DESTDIR"];

/// Host build configuration files, each pointed at `/dev/null`.
const HOST_CONFIG_VARS: [&str; 3] = ["SRCCONF", "SRC_ENV_CONF", "__MAKE_CONF"];

impl BuildPlan {
    /// Refuses what [`BuildPlan::new`] would refuse in `request`, before
    /// its layout is known (a guest's work directory follows from the
    /// result root the guest takes).
    pub fn check(request: &BuildRequest) -> Result<()> {
        requested_artifacts(&request.artifacts)?;
        check_target(&request.freebsd_base)
    }

    /// The plan of `request` in `layout`. Refuses, as
    /// [`Error::InvalidRequest`], an artifact that is not a base artifact or
    /// is requested twice, and a target or target architecture that is not a
    /// FreeBSD name.
    pub fn new(request: &BuildRequest, layout: &Layout) -> Result<BuildPlan> {
        let artifacts = requested_artifacts(&request.artifacts)?;
        check_target(&request.freebsd_base)?;
        let steps = STEPS
            .iter()
            .filter(|s| s.needed_by.iter().any(|a| artifacts.contains(a)))
            .map(|spec| make_step(request, layout, spec))
            .collect();
        let slicing = Slicing::for_artifacts(&artifacts);
        Ok(BuildPlan {
            artifacts,
            steps,
            slicing,
        })
    }
}

fn make_step(request: &BuildRequest, layout: &Layout, spec: &StepSpec) -> MakeStep {
    let policy = &request.policy;
    let base = &request.freebsd_base;
    let mut args: Vec<OsString> = Vec::new();
    if spec.parallel {
        args.push(format!("-j{}", policy.jobs).into());
    }
    args.push(spec.target.into());
    args.push(format!("KERNCONF={}", policy.kernconf).into());
    args.push(format!("TARGET={}", base.target).into());
    args.push(format!("TARGET_ARCH={}", base.target_arch).into());
    if let Some(epoch) = policy.source_date_epoch {
        args.push(format!("SOURCE_DATE_EPOCH={epoch}").into());
    }
    if let Some(destdir) = spec.destdir {
        let mut arg = OsString::from("DESTDIR=");
        arg.push(layout.work_dir.join(destdir));
        args.push(arg);
    }
    args.extend(policy.make_flags.iter().map(OsString::from));

    let mut env_set = vec![("MAKEOBJDIRPREFIX", layout.work_dir.join(OBJ_DIR).into())];
    env_set.extend(HOST_CONFIG_VARS.map(|var| (var, OsString::from("/dev/null"))));
    let mut env_removed = ENV_REMOVED.to_vec();
    match policy.source_date_epoch {
        Some(epoch) => env_set.push(("SOURCE_DATE_EPOCH", epoch.to_string().into())),
        None => env_removed.push("SOURCE_DATE_EPOCH"),
    }
    MakeStep {
        target: spec.target,
        program: layout.make.clone(),
        args,
        working_dir: layout.source_dir.clone(),
        env_set,
        env_removed,
    }
}

fn check_target(base: &FreebsdBase) -> Result<()> {
    for (field, value) in [("target", &base.target), ("target-arch", &base.target_arch)] {
        if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(Error::InvalidRequest {
                message: format!(
                    "freebsd-base {field} {value:?} is not a FreeBSD {field} name (e.g. amd64)"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::testing::fixture_request;

    fn request(artifacts: &[&str], make_flags: &[&str], epoch: Option<i64>) -> BuildRequest {
        let mut request = fixture_request("/usr/src".as_ref(), make_flags);
        request.freebsd_base.target = "arm64".into();
        request.freebsd_base.target_arch = "aarch64".into();
        request.policy.jobs = 8;
        request.policy.kernconf = "MINIMAL".into();
        request.policy.source_date_epoch = epoch;
        request.artifacts = artifacts.iter().map(|a| a.to_string()).collect();
        request
    }

    fn layout() -> Layout {
        Layout {
            make: "bmake".into(),
            source_dir: "/usr/src".into(),
            work_dir: "/var/run.work".into(),
        }
    }

    fn plan(request: &BuildRequest) -> BuildPlan {
        BuildPlan::new(request, &layout()).unwrap()
    }

    fn targets(plan: &BuildPlan) -> Vec<&'static str> {
        plan.steps.iter().map(|s| s.target).collect()
    }

    fn args(step: &MakeStep) -> Vec<String> {
        step.args_text()
    }

    #[test]
    fn each_artifact_plans_only_the_steps_it_needs() {
        let all = ["world", "kernel", "headers", "bootloader"];
        assert_eq!(
            targets(&plan(&request(&all, &[], None))),
            [
                "buildworld",
                "buildkernel",
                "installworld",
                "distribution",
                "installkernel"
            ]
        );
        assert_eq!(
            targets(&plan(&request(&["headers"], &[], None))),
            ["buildworld", "installworld"]
        );
        assert_eq!(
            targets(&plan(&request(&["kernel"], &[], None))),
            ["buildworld", "buildkernel", "installkernel"]
        );
        assert_eq!(
            targets(&plan(&request(&["bootloader", "world"], &[], None))),
            ["buildworld", "installworld", "distribution"]
        );
    }

    #[test]
    fn build_steps_are_parallel_and_policy_flags_come_last() {
        let flags = ["-DNO_ROOT", "KERNCONF=GENERIC"];
        let plan = plan(&request(&["kernel"], &flags, Some(1_700_000_000)));
        let buildkernel = &plan.steps[1];
        assert_eq!(
            args(buildkernel),
            [
                "-j8",
                "buildkernel",
                "KERNCONF=MINIMAL",
                "TARGET=arm64",
                "TARGET_ARCH=aarch64",
                "SOURCE_DATE_EPOCH=1700000000",
                "-DNO_ROOT",
                "KERNCONF=GENERIC",
            ]
        );
        assert_eq!(buildkernel.program, "bmake");
        assert_eq!(buildkernel.working_dir, PathBuf::from("/usr/src"));
    }

    #[test]
    fn install_steps_get_their_destdir_and_no_jobs() {
        let plan = plan(&request(&["world", "kernel"], &[], None));
        let destdirs: Vec<(&str, String)> = plan
            .steps
            .iter()
            .map(|s| {
                let destdir = args(s).into_iter().find(|a| a.starts_with("DESTDIR="));
                (s.target, destdir.unwrap_or_default())
            })
            .collect();
        assert_eq!(
            destdirs,
            [
                ("buildworld", String::new()),
                ("buildkernel", String::new()),
                ("installworld", "DESTDIR=/var/run.work/world".into()),
                ("distribution", "DESTDIR=/var/run.work/world".into()),
                ("installkernel", "DESTDIR=/var/run.work/kernel".into()),
            ]
        );
        assert_eq!(
            args(&plan.steps[4]),
            [
                "installkernel",
                "KERNCONF=MINIMAL",
                "TARGET=arm64",
                "TARGET_ARCH=aarch64",
                "DESTDIR=/var/run.work/kernel",
            ]
        );
    }

    #[test]
    fn the_environment_shuts_out_the_host_and_follows_the_epoch() {
        let with_epoch = plan(&request(&["world"], &[], Some(1_775_420_084)));
        let step = &with_epoch.steps[0];
        assert_eq!(
            step.env_text(),
            [
                ("MAKEOBJDIRPREFIX", "/var/run.work/obj".to_string()),
                ("SRCCONF", "/dev/null".into()),
                ("SRC_ENV_CONF", "/dev/null".into()),
                ("__MAKE_CONF", "/dev/null".into()),
                ("SOURCE_DATE_EPOCH", "1775420084".into()),
            ]
        );
        assert_eq!(
            step.env_removed,
            ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOBJDIR", "DESTDIR"]
        );
        let without = plan(&request(&["world"], &[], None));
        assert!(without.steps[0].env_removed.contains(&"SOURCE_DATE_EPOCH"));
        assert!(!without.steps[0]
            .env_set
            .iter()
            .any(|(k, _)| *k == "SOURCE_DATE_EPOCH"));
    }

    #[test]
    fn bad_targets_and_artifacts_are_refused() {
        let mut bad = request(&["world"], &[], None);
        bad.freebsd_base.target_arch = "amd 64".into();
        let e = BuildPlan::new(&bad, &layout()).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
        assert!(e.to_string().contains("target-arch \"amd 64\""), "{e}");
        let e = BuildPlan::new(&request(&["lib32"], &[], None), &layout()).unwrap_err();
        assert!(e.to_string().contains("unknown artifact `lib32`"), "{e}");
        // `check` refuses the same, with no layout.
        let e = BuildPlan::check(&bad).unwrap_err();
        assert!(e.to_string().contains("target-arch \"amd 64\""), "{e}");
        let e = BuildPlan::check(&request(&["lib32"], &[], None)).unwrap_err();
        assert!(e.to_string().contains("unknown artifact `lib32`"), "{e}");
        BuildPlan::check(&request(&["world"], &[], None)).unwrap();
    }
}
