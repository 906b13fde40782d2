//! The FreeBSD build driver: runs make on a FreeBSD source tree and turns what
//! it installs into a normalized result root.
//!
//! Every executor that runs make runs this driver, on this machine or inside a
//! FreeBSD guest, so it uses nothing Linux-only.
//!
//! # Contract
//!
//! [`Driver::run`] takes a [`RunContext`] (request, result root, events,
//! cancellation) and:
//!
//! 1. Checks, before anything runs: every requested artifact is one the
//!    driver produces (`world`, `kernel`, `headers`, `bootloader`), none is
//!    requested twice, the request names a target and target architecture, and
//!    the source directory exists and has a `Makefile`, `makefile` or
//!    `BSDmakefile`. Otherwise [`Error::InvalidRequest`].
//! 2. Creates the work directory (removing a stale one left by a crashed run
//!    for the same result root): `obj/` is `MAKEOBJDIRPREFIX`, `world/` and
//!    `kernel/` are the `DESTDIR`s. [`work_dir_for`] says where it is.
//! 3. Runs one make invocation per step, each as a stage named after its
//!    target, with the source directory as working directory:
//!
//!    | step            | arguments             | needed by                      |
//!    |-----------------|-----------------------|--------------------------------|
//!    | `buildworld`    | `-jJOBS`              | every artifact                 |
//!    | `buildkernel`   | `-jJOBS`              | `kernel`                       |
//!    | `installworld`  | `DESTDIR=WORK/world`  | `world` `headers` `bootloader` |
//!    | `distribution`  | `DESTDIR=WORK/world`  | `world`                        |
//!    | `installkernel` | `DESTDIR=WORK/kernel` | `kernel`                       |
//!
//!    A step runs only when a requested artifact needs it. `distribution` is
//!    part of FreeBSD's documented build contract (build(7)), so it is not
//!    probed for: a tree without it fails that step.
//!    Every step gets `KERNCONF=`, `TARGET=`, `TARGET_ARCH=`,
//!    `SOURCE_DATE_EPOCH=` (when the policy has one), then the policy's
//!    `make-flags` verbatim, last, so they can override the driver's
//!    variables. The environment is this process's, with `MAKEOBJDIRPREFIX`
//!    and `SOURCE_DATE_EPOCH` set, the host's build configuration shut out
//!    (`SRCCONF`, `SRC_ENV_CONF` and `__MAKE_CONF` are `/dev/null`; the
//!    policy's make flags may name others), and inherited make state removed
//!    (`MAKEFLAGS`, `MFLAGS`, `MAKELEVEL`, `MAKEOBJDIR`, `DESTDIR`, and
//!    `SOURCE_DATE_EPOCH` when the policy has none): the build depends on the
//!    source tree and the request, not on who started it.
//!    Each step runs in its own process group, its output goes line by line
//!    to the events and to `logs/<step>.log`, a non-zero exit is
//!    [`Error::Build`] with the last lines, and cancellation stops the whole
//!    group (details in `driver/step.rs`). A make program that is not found
//!    is [`Error::System`].
//! 4. Stage `collect` slices the installed trees into `artifacts/` of the
//!    result root: `world` is the whole world `DESTDIR` (with the `METALOG` a
//!    `-DNO_ROOT` install writes at its top); `kernel` is
//!    `boot/kernel` of the kernel `DESTDIR` (with that `DESTDIR`'s `METALOG`,
//!    if any, at its top); `headers` is the world's `usr/include`;
//!    `bootloader` is every entry of the world's `boot/` whose name does not
//!    start with `kernel`. Trees are moved by rename when possible and copied
//!    otherwise; `headers` and `bootloader` are copied when `world` is also
//!    requested (the world tree is moved last). Copies keep modes (setuid
//!    included), owners when running as root, hard links within a copy, and
//!    symlinks verbatim; no symlink is ever followed (`driver/tree.rs`).
//! 5. Stage `sign` computes each artifact's tree signature and writes
//!    `promotion.scm` (probes: the first of the core's allowed probes for the
//!    artifact that exists, so `boot/loader`, else `boot/loader.efi`).
//! 6. Removes the work directory; failing to is a warning, not an error.
//!
//! On failure or cancellation the work directory is left for the executor's
//! cleanup to remove with [`remove_work_dir`].

mod step;
mod tree;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use fruix_core::collect::{host_name, probe_for};
use fruix_core::error::IoContext;
use fruix_core::executor::{BuildRequest, RunContext};
use fruix_core::manifest::tree_signature;
use fruix_core::promotion::{ArtifactEntry, FreebsdBase, PromotionMetadata};
use fruix_core::{Error, Result};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use self::tree::Transfer;

/// The make program used when none is configured: the base system's make on
/// FreeBSD, the `bmake` port of it elsewhere (FreeBSD trees need BSD make).
pub fn default_make() -> &'static str {
    if cfg!(target_os = "freebsd") {
        "make"
    } else {
        "bmake"
    }
}

/// One run of the build driver.
#[derive(Debug, Clone)]
pub struct Driver {
    /// The executor name recorded in `promotion.scm`.
    pub executor: String,
    /// The executor version recorded in `promotion.scm`.
    pub executor_version: String,
    /// The make program: a name looked up in `PATH`, or a path.
    pub make: String,
    /// The FreeBSD source tree on the machine that builds.
    pub source_dir: PathBuf,
    /// The work directory (object tree and `DESTDIR`s); it must not be inside
    /// the source tree or the result root. See [`work_dir_for`].
    pub work_dir: PathBuf,
}

/// One make invocation of a build, as data (see [`Driver::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The make target, also the stage name (`buildworld`, ...).
    pub target: &'static str,
    /// make's arguments, in order.
    pub args: Vec<String>,
    /// Environment variables to set.
    pub env_set: Vec<(String, String)>,
    /// Environment variables to remove.
    pub env_removed: Vec<&'static str>,
}

/// The artifacts the driver can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Artifact {
    World,
    Kernel,
    Headers,
    Bootloader,
}

impl Artifact {
    const ALL: [Artifact; 4] = [
        Artifact::World,
        Artifact::Kernel,
        Artifact::Headers,
        Artifact::Bootloader,
    ];

    fn name(self) -> &'static str {
        match self {
            Artifact::World => "world",
            Artifact::Kernel => "kernel",
            Artifact::Headers => "headers",
            Artifact::Bootloader => "bootloader",
        }
    }
}

/// `DESTDIR` of `installworld` and `distribution`, inside the work directory.
pub const WORLD_DESTDIR: &str = "world";
/// `DESTDIR` of `installkernel`, inside the work directory.
pub const KERNEL_DESTDIR: &str = "kernel";
/// `MAKEOBJDIRPREFIX`, inside the work directory.
pub const OBJ_DIR: &str = "obj";

/// One make invocation.
struct Step {
    target: &'static str,
    /// Runs with `-jJOBS`.
    parallel: bool,
    /// `DESTDIR`, inside the work directory.
    destdir: Option<&'static str>,
    /// The artifacts that need this step.
    needed_by: &'static [Artifact],
}

const STEPS: [Step; 5] = [
    Step {
        target: "buildworld",
        parallel: true,
        destdir: None,
        needed_by: &Artifact::ALL,
    },
    Step {
        target: "buildkernel",
        parallel: true,
        destdir: None,
        needed_by: &[Artifact::Kernel],
    },
    Step {
        target: "installworld",
        parallel: false,
        destdir: Some(WORLD_DESTDIR),
        needed_by: &[Artifact::World, Artifact::Headers, Artifact::Bootloader],
    },
    Step {
        target: "distribution",
        parallel: false,
        destdir: Some(WORLD_DESTDIR),
        needed_by: &[Artifact::World],
    },
    Step {
        target: "installkernel",
        parallel: false,
        destdir: Some(KERNEL_DESTDIR),
        needed_by: &[Artifact::Kernel],
    },
];

/// Environment variables removed from every step: make state inherited from
/// a make that started us, and variables that would redirect the build.
const ENV_REMOVED: [&str; 5] = ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOBJDIR", "DESTDIR"];

/// Host build configuration files, each pointed at `/dev/null`.
const HOST_CONFIG_VARS: [&str; 3] = ["SRCCONF", "SRC_ENV_CONF", "__MAKE_CONF"];

impl Driver {
    /// Runs the build described in the module docs and returns the metadata
    /// it wrote to `promotion.scm`.
    pub async fn run(&self, ctx: &RunContext) -> Result<PromotionMetadata> {
        let artifacts = requested_artifacts(&ctx.request.artifacts)?;
        check_target(&ctx.request.freebsd_base)?;
        check_source_dir(&self.source_dir)?;
        self.prepare_work_dir(&ctx.cancel).await?;
        let logs = ctx.logs_dir()?;
        for step in STEPS
            .iter()
            .filter(|s| s.needed_by.iter().any(|a| artifacts.contains(a)))
        {
            let log = logs.join(format!("{}.log", step.target));
            let command = self.command(&ctx.request, step);
            ctx.events
                .stage(step.target, step::run(command, step.target, &log, ctx))
                .await?;
        }
        let (work, root) = (self.work_dir.clone(), ctx.result_root.clone());
        let wanted = artifacts.clone();
        ctx.events
            .stage(
                "collect",
                blocking(&ctx.cancel, move || collect(&work, &root, &wanted)),
            )
            .await?;
        let metadata = ctx.events.stage("sign", self.sign(ctx, &artifacts)).await?;
        if let Err(e) = remove_work_dir(&self.work_dir).await {
            ctx.events.warn(format!(
                "the build succeeded but its work directory was not removed: {e}"
            ));
        }
        Ok(metadata)
    }

    async fn prepare_work_dir(&self, cancel: &CancellationToken) -> Result<()> {
        // The work directory belongs to this result root, which the runner
        // just created exclusively: anything already there is a crashed
        // run's leftover.
        remove_work_dir(&self.work_dir).await?;
        let work = self.work_dir.clone();
        blocking(cancel, move || {
            for sub in [OBJ_DIR, WORLD_DESTDIR, KERNEL_DESTDIR] {
                let dir = work.join(sub);
                std::fs::create_dir_all(&dir).with_path("create work directory", &dir)?;
            }
            Ok(())
        })
        .await
    }

    /// The make invocation of `step`.
    fn command(&self, request: &BuildRequest, step: &Step) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.make);
        command
            .current_dir(&self.source_dir)
            .args(self.make_args(request, step));
        for var in ENV_REMOVED {
            command.env_remove(var);
        }
        for var in HOST_CONFIG_VARS {
            command.env(var, "/dev/null");
        }
        command.env("MAKEOBJDIRPREFIX", self.work_dir.join(OBJ_DIR));
        match request.policy.source_date_epoch {
            Some(epoch) => command.env("SOURCE_DATE_EPOCH", epoch.to_string()),
            None => command.env_remove("SOURCE_DATE_EPOCH"),
        };
        command
    }

    /// The make steps `request` needs, in order, as data: what an executor
    /// that drives make in a guest over SSH runs there, so that it builds
    /// exactly as this driver does. Checks the request as [`Driver::run`] does.
    pub fn plan(&self, request: &BuildRequest) -> Result<Vec<PlannedStep>> {
        let artifacts = requested_artifacts(&request.artifacts)?;
        check_target(&request.freebsd_base)?;
        let mut env_set: Vec<(String, String)> = HOST_CONFIG_VARS
            .iter()
            .map(|v| (v.to_string(), "/dev/null".to_string()))
            .collect();
        let obj = self.work_dir.join(OBJ_DIR).to_string_lossy().into_owned();
        env_set.push(("MAKEOBJDIRPREFIX".into(), obj));
        let mut env_removed: Vec<&'static str> = ENV_REMOVED.to_vec();
        match request.policy.source_date_epoch {
            Some(epoch) => env_set.push(("SOURCE_DATE_EPOCH".into(), epoch.to_string())),
            None => env_removed.push("SOURCE_DATE_EPOCH"),
        }
        Ok(STEPS
            .iter()
            .filter(|s| s.needed_by.iter().any(|a| artifacts.contains(a)))
            .map(|step| PlannedStep {
                target: step.target,
                args: self
                    .make_args(request, step)
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                env_set: env_set.clone(),
                env_removed: env_removed.clone(),
            })
            .collect())
    }

    /// The command-line arguments of `step`.
    fn make_args(&self, request: &BuildRequest, step: &Step) -> Vec<OsString> {
        let policy = &request.policy;
        let base = &request.freebsd_base;
        let mut args: Vec<OsString> = Vec::new();
        if step.parallel {
            args.push(format!("-j{}", policy.jobs).into());
        }
        args.push(step.target.into());
        args.push(format!("KERNCONF={}", policy.kernconf).into());
        args.push(format!("TARGET={}", base.target).into());
        args.push(format!("TARGET_ARCH={}", base.target_arch).into());
        if let Some(epoch) = policy.source_date_epoch {
            args.push(format!("SOURCE_DATE_EPOCH={epoch}").into());
        }
        if let Some(destdir) = step.destdir {
            let mut arg = OsString::from("DESTDIR=");
            arg.push(self.work_dir.join(destdir));
            args.push(arg);
        }
        args.extend(policy.make_flags.iter().map(OsString::from));
        args
    }

    async fn sign(&self, ctx: &RunContext, artifacts: &[Artifact]) -> Result<PromotionMetadata> {
        let mut entries = Vec::with_capacity(artifacts.len());
        for artifact in artifacts {
            let path = format!("artifacts/{}", artifact.name());
            let dir = ctx.result_root.join(&path);
            let probe = probe_for(artifact.name(), &dir);
            let signature = blocking(&ctx.cancel, move || tree_signature(&dir)).await?;
            entries.push(ArtifactEntry {
                name: artifact.name().to_string(),
                path,
                probe,
                tree_signature: Some(signature),
            });
        }
        let request = &ctx.request;
        let metadata = PromotionMetadata {
            executor: self.executor.clone(),
            executor_version: self.executor_version.clone(),
            run_id: request.run_id.clone(),
            guest_host_name: host_name()?,
            closure_path: None,
            development_profile_path: None,
            freebsd_base: request.freebsd_base.clone(),
            source_store: request.source.clone(),
            build_policy: request.policy.clone(),
            artifacts: entries,
        };
        let (written, root) = (metadata.clone(), ctx.result_root.clone());
        blocking(&ctx.cancel, move || written.write_to(&root)).await?;
        Ok(metadata)
    }
}

/// Where the work directory of the run into `result_root` goes.
///
/// With no `parent`, next to the result root: `RESULT_ROOT.work` (same
/// filesystem, so installed trees move into the result root by rename). With
/// a `parent`, `PARENT/RUN-ID-HASH`, where HASH is the first 12 hex digits of
/// the SHA-256 of the result root's canonical path: one directory per result
/// root, so runs never share one. The result root must exist.
pub fn work_dir_for(result_root: &Path, run_id: &str, parent: Option<&Path>) -> Result<PathBuf> {
    let root = std::fs::canonicalize(result_root).with_path("resolve result root", result_root)?;
    let name = root
        .file_name()
        .ok_or_else(|| Error::InvalidRequest {
            message: format!(
                "result root {} has no name to derive a work directory from",
                root.display()
            ),
        })?
        .to_owned();
    Ok(match parent {
        None => {
            let mut work = name;
            work.push(".work");
            root.with_file_name(work)
        }
        Some(parent) => {
            let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
            parent.join(format!("{run_id}-{}", &hex::encode(digest)[..12]))
        }
    })
}

/// Removes a work directory and everything in it; a missing one is fine.
/// Read-only directories (and, on FreeBSD, immutable file flags set by an
/// install as root) do not stop it.
pub async fn remove_work_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || tree::remove_tree(&dir))
        .await
        .map_err(join_error)?
}

/// Runs blocking `work` on the blocking pool; returns [`Error::Cancelled`] as
/// soon as `cancel` fires (the work then finishes in the background).
async fn blocking<T, F>(cancel: &CancellationToken, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let task = tokio::task::spawn_blocking(work);
    tokio::select! {
        joined = task => joined.map_err(join_error)?,
        () = cancel.cancelled() => Err(Error::Cancelled),
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::system(format!(
        "a file-system task of the build driver did not finish: {e}"
    ))
}

/// The requested artifacts, in request order; names the driver does not
/// produce, and names requested twice, are refused.
fn requested_artifacts(names: &[String]) -> Result<Vec<Artifact>> {
    let mut artifacts = Vec::with_capacity(names.len());
    for name in names {
        let artifact = Artifact::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| Error::InvalidRequest {
                message: format!(
                    "unknown artifact `{name}`; the FreeBSD build driver produces {}",
                    Artifact::ALL.map(Artifact::name).join(", ")
                ),
            })?;
        if artifacts.contains(&artifact) {
            return Err(Error::InvalidRequest {
                message: format!("artifact `{name}` is requested twice; list it once"),
            });
        }
        artifacts.push(artifact);
    }
    Ok(artifacts)
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

/// Makefile names BSD make looks for, in its order.
const MAKEFILES: [&str; 3] = ["BSDmakefile", "makefile", "Makefile"];

fn check_source_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::InvalidRequest {
            message: format!(
                "source directory {} does not exist or is not a directory; give the path of a FreeBSD source tree",
                dir.display()
            ),
        });
    }
    if !MAKEFILES.iter().any(|m| dir.join(m).is_file()) {
        return Err(Error::InvalidRequest {
            message: format!(
                "source directory {} has no {}; it is not a FreeBSD source tree",
                dir.display(),
                MAKEFILES.join(", ")
            ),
        });
    }
    Ok(())
}

/// Slices the installed trees of `work` into `result_root/artifacts/`.
fn collect(work: &Path, result_root: &Path, artifacts: &[Artifact]) -> Result<()> {
    let world = work.join(WORLD_DESTDIR);
    let kernel = work.join(KERNEL_DESTDIR);
    let out = result_root.join("artifacts");
    let wants = |a: Artifact| artifacts.contains(&a);
    // The world tree is moved last: parts of it are copied first when it is
    // wanted whole, and may simply be moved out of it when it is not.
    let from_world = if wants(Artifact::World) {
        Transfer::Copy
    } else {
        Transfer::Move
    };
    if wants(Artifact::Headers) {
        tree::place(
            &world.join("usr/include"),
            &out.join("headers/usr/include"),
            from_world,
        )?;
    }
    if wants(Artifact::Bootloader) {
        let boot = out.join("bootloader/boot");
        std::fs::create_dir_all(&boot).with_path("create", &boot)?;
        for entry in tree::entries(&world.join("boot"))? {
            if !entry.as_encoded_bytes().starts_with(b"kernel") {
                tree::place(
                    &world.join("boot").join(&entry),
                    &boot.join(&entry),
                    from_world,
                )?;
            }
        }
    }
    if wants(Artifact::Kernel) {
        tree::place(
            &kernel.join("boot/kernel"),
            &out.join("kernel/boot/kernel"),
            Transfer::Move,
        )?;
        let metalog = kernel.join("METALOG");
        if metalog.symlink_metadata().is_ok() {
            tree::place(&metalog, &out.join("kernel/METALOG"), Transfer::Move)?;
        }
    }
    if wants(Artifact::World) {
        tree::place(&world, &out.join("world"), Transfer::Move)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::promotion::{BuildPolicy, SourceStore};

    fn request(make_flags: &[&str], epoch: Option<i64>) -> BuildRequest {
        BuildRequest {
            run_id: "20260405T213444Z".into(),
            freebsd_base: FreebsdBase {
                name: "FreeBSD".into(),
                version: "15.0".into(),
                branch: "stable/15".into(),
                target: "arm64".into(),
                target_arch: "aarch64".into(),
            },
            source: SourceStore {
                path: "/usr/src".into(),
                commit: None,
            },
            policy: BuildPolicy {
                jobs: 8,
                kernconf: "MINIMAL".into(),
                make_flags: make_flags.iter().map(|f| f.to_string()).collect(),
                source_date_epoch: epoch,
            },
            artifacts: vec!["world".into()],
        }
    }

    fn driver() -> Driver {
        Driver {
            executor: "local".into(),
            executor_version: "0.1.0".into(),
            make: "make".into(),
            source_dir: "/usr/src".into(),
            work_dir: "/var/run.work".into(),
        }
    }

    fn step(target: &str) -> &'static Step {
        STEPS.iter().find(|s| s.target == target).unwrap()
    }

    #[test]
    fn build_steps_are_parallel_and_policy_flags_come_last() {
        let args = driver().make_args(
            &request(&["-DNO_ROOT", "KERNCONF=GENERIC"], Some(1_700_000_000)),
            step("buildkernel"),
        );
        let expected = [
            "-j8",
            "buildkernel",
            "KERNCONF=MINIMAL",
            "TARGET=arm64",
            "TARGET_ARCH=aarch64",
            "SOURCE_DATE_EPOCH=1700000000",
            "-DNO_ROOT",
            "KERNCONF=GENERIC",
        ];
        assert_eq!(args, expected.map(OsString::from));
    }

    #[test]
    fn install_steps_get_their_destdir_and_no_jobs() {
        let args = driver().make_args(&request(&[], None), step("installkernel"));
        let expected = [
            "installkernel",
            "KERNCONF=MINIMAL",
            "TARGET=arm64",
            "TARGET_ARCH=aarch64",
            "DESTDIR=/var/run.work/kernel",
        ];
        assert_eq!(args, expected.map(OsString::from));
    }

    #[test]
    fn unknown_and_repeated_artifacts_are_refused() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = requested_artifacts(&names(&["world", "lib32"])).unwrap_err();
        assert!(e.to_string().contains("unknown artifact `lib32`"), "{e}");
        assert!(
            e.to_string().contains("world, kernel, headers, bootloader"),
            "{e}"
        );
        let e = requested_artifacts(&names(&["kernel", "kernel"])).unwrap_err();
        assert!(e.to_string().contains("requested twice"), "{e}");
        assert_eq!(
            requested_artifacts(&names(&["headers", "world"])).unwrap(),
            [Artifact::Headers, Artifact::World]
        );
    }

    #[test]
    fn source_dir_needs_a_makefile() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_source_dir(&dir.path().join("missing")).unwrap_err();
        assert!(
            matches!(e, Error::InvalidRequest { .. }) && e.to_string().contains("does not exist"),
            "{e}"
        );
        let e = check_source_dir(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("has no BSDmakefile, makefile, Makefile"),
            "{e}"
        );
        std::fs::write(dir.path().join("BSDmakefile"), "").unwrap();
        check_source_dir(dir.path()).unwrap();
    }

    #[test]
    fn work_dir_is_next_to_the_result_root_or_unique_under_a_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("20260405T213444Z");
        std::fs::create_dir(&root).unwrap();
        let with_slash = PathBuf::from(format!("{}/", root.display()));
        assert_eq!(
            work_dir_for(&with_slash, "x", None).unwrap(),
            root.with_file_name("20260405T213444Z.work")
        );
        let other = dir.path().join("other/20260405T213444Z");
        std::fs::create_dir_all(&other).unwrap();
        let a = work_dir_for(&root, "20260405T213444Z", Some(Path::new("/w"))).unwrap();
        let b = work_dir_for(&other, "20260405T213444Z", Some(Path::new("/w"))).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/w")));
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("20260405T213444Z-"));
    }
}
