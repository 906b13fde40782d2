//! `host-initiated`: the host drives the build in the guest over SSH, one
//! remote command per make step, rendering the plan of `fruix-freebsd` as
//! POSIX sh ([`fruix_freebsd::sh`]): it needs only sh, make, cc, tar and cp
//! there. The host signs the imported trees.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fruix_core::executor::RunContext;
use fruix_core::promotion::ArtifactEntry;
use fruix_core::result_root::INCOMPLETE_MARKER;
use fruix_core::run_id::{no_free_run_dir, RUN_DIR_NAMES};
use fruix_core::{escape, Error, LogRef, Result};
use fruix_freebsd::probe::{choose_probe, probe_in};
use fruix_freebsd::promotion::{promotion_metadata, Builder};
use fruix_freebsd::slice::ARTIFACTS_DIR;
use fruix_freebsd::{sh, BuildPlan, Layout};

use super::log::StageLog;
use super::{checked, GuestRun, Mode, TAIL_LINES, VERSION};
use crate::ssh::{RemoteExit, SshSession};
use fruix_core::bounded::Tail;

impl GuestRun<'_> {
    pub(super) async fn run_host_initiated(
        &mut self,
        session: Arc<SshSession>,
        ctx: &RunContext,
    ) -> Result<()> {
        let request = &match ctx.request.jobs_per_machine {
            true => self.request(ctx).with_jobs(guest_cpus(&session, ctx).await),
            false => self.request(ctx),
        };
        let make = match &self.executor.make {
            Some(m) => m.clone(),
            None => {
                self.executor
                    .check(
                        &session,
                        "find make (install bmake, or set the `make` configuration key)",
                        "command -v bmake || command -v make",
                    )
                    .await?
            }
        };
        // The request is refused before anything is made in the guest.
        BuildPlan::check(request)?;
        let (root, host_name) = self.create_guest_root(&session, &request.run_id).await?;
        self.guest_root_made(&session, &root);
        let work = format!("{root}.work");
        let layout = Layout {
            make,
            source_dir: PathBuf::from(request.source_dir()),
            work_dir: PathBuf::from(&work),
        };
        let plan = BuildPlan::new(request, &layout)?;
        self.guest_work_made(&session, &work);
        let prepare = format!("set -e\n{}", sh::prepare_work_dir_script(&work));
        self.executor
            .check(&session, "prepare the guest work directory", &prepare)
            .await?;
        let q_root = sh::quote(&root);
        let logs = ctx.logs_dir()?;
        for step in &plan.steps {
            let log_path = logs.join(format!("{}.log", step.target));
            let script = sh::step_script(step);
            ctx.events
                .stage(
                    step.target,
                    self.remote_step(&session, step.target, &script, &log_path, ctx),
                )
                .await?;
        }
        let collect = format!(
            "{}{}",
            sh::slicing_script(&plan.slicing, &work, &root),
            sh::probe_listing_script(&plan.artifacts, &root)
        );
        let listed_probes = ctx
            .events
            .stage("collect", async {
                self.executor
                    .check(&session, "collect the artifacts in the guest", &collect)
                    .await
            })
            .await?;
        let artifacts = plan
            .artifacts
            .iter()
            .map(|artifact| {
                let name = artifact.name();
                ArtifactEntry {
                    name: name.to_string(),
                    path: format!("{ARTIFACTS_DIR}/{name}"),
                    probe: choose_probe(name, |p| {
                        listed_probes.lines().any(|l| l == format!("{name}/{p}"))
                    }),
                    tree_signature: None,
                }
            })
            .collect();
        let builder = Builder {
            executor: Mode::HostInitiated.name(),
            executor_version: VERSION,
            host_name: &host_name,
        };
        let mut metadata = promotion_metadata(request, builder, artifacts);
        let finish = format!(
            "set -e\ncat > {q_root}/promotion.scm\nrm -f {q_root}/{INCOMPLETE_MARKER}\nrm -rf {}",
            sh::quote(&work)
        );
        let out = session
            .output(&finish, Some(metadata.to_scheme().as_bytes()))
            .await?;
        if !out.exit.success() {
            return Err(Error::system(format!(
                "cannot write promotion.scm in the guest: {}",
                escape::text(&out.stderr_text())
            )));
        }
        self.guest_work = None;
        let mut staged = ctx
            .events
            .stage("import", self.import(session.clone(), ctx, &root))
            .await?;
        ctx.events
            .stage("sign", async {
                // The guest's output is untrusted: probes and signatures
                // come from the imported trees.
                for a in &mut metadata.artifacts {
                    a.probe = probe_in(&a.name, &staged.path().join(&a.path));
                    a.tree_signature = Some(staged.signature(&a.path)?);
                    staged.signed_here(&a.path);
                }
                metadata.write_to(staged.path())
            })
            .await?;
        staged.place(&ctx.result_root)
    }

    /// Creates run `run_id`'s guest result root ([`create_root_script`]);
    /// returns its path, checked, and the guest's host name.
    async fn create_guest_root(
        &self,
        session: &SshSession,
        run_id: &str,
    ) -> Result<(String, String)> {
        let dir = self.executor.guest_roots_dir();
        let out = session
            .output(&create_root_script(&dir, run_id), None)
            .await?;
        if out.exit == RemoteExit::Code(NO_FREE_ROOT) {
            return Err(no_free_run_dir(Path::new(&dir), run_id));
        }
        let said = checked(session, "prepare the guest result root", out)?;
        let (root, host_name) = said.split_once('\n').unwrap_or((&said, ""));
        let root = self.executor.check_guest_root(run_id, root)?;
        Ok((root, guest_host_name(host_name, session.target())?))
    }

    /// Runs one make step in the guest, streaming to events and to
    /// `log_path` (escaped: see [`StageLog`]).
    async fn remote_step(
        &self,
        session: &SshSession,
        stage: &str,
        script: &str,
        log_path: &Path,
        ctx: &RunContext,
    ) -> Result<()> {
        let mut log = StageLog::create(log_path.to_path_buf())?;
        let mut tail = Tail::new(TAIL_LINES);
        let exit = session
            .stream(script, None, &ctx.cancel, &ctx.events, |stream, line| {
                log.line(line);
                tail.push(line);
                ctx.events.log(stage, stream, line);
            })
            .await?;
        let log_path = log.close()?;
        match exit {
            None => Err(Error::Cancelled),
            Some(exit) if exit.success() => Ok(()),
            Some(exit) => Err(Error::Build {
                step: stage.to_string(),
                status: Some(exit.describe()),
                log: LogRef {
                    path: Some(log_path),
                    tail: tail.into_lines(),
                },
            }),
        }
    }
}

/// The most CPUs a guest's answer may claim (as `--jobs` takes).
const MAX_GUEST_CPUS: u32 = 4096;

/// How many CPUs the guest's builds may use, for a build whose caller
/// gave no job count; 0 (the host's count stays, with a warning) when the
/// guest cannot say. `nproc` (FreeBSD 13.2 and later, Linux) honours the
/// CPU set of a jail or of sshd, as the self-hosted helper's count does;
/// older FreeBSD has `sysctl -n hw.ncpu`.
async fn guest_cpus(session: &SshSession, ctx: &RunContext) -> u32 {
    let script = "nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || getconf _NPROCESSORS_ONLN";
    let said = match session.output(script, None).await {
        Ok(out) if out.exit.success() => {
            let text = out.stdout_text();
            parse_cpus(&text)
                .ok_or_else(|| format!("it said {}", escape::quoted(text.trim()).cut_at(40)))
        }
        Ok(out) => Err(escape::text(out.stderr_text().trim())
            .cut_at(200)
            .to_string()),
        Err(e) => Err(e.to_string()),
    };
    said.unwrap_or_else(|why| {
        ctx.events.warn(format!(
            "cannot tell how many CPUs the guest {} has ({why}); building with -j{}, this host's count",
            session.target(),
            ctx.request.policy.jobs
        ));
        0
    })
}

/// The CPU count in what the guest printed: one number from 1 to
/// [`MAX_GUEST_CPUS`].
fn parse_cpus(said: &str) -> Option<u32> {
    said.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_GUEST_CPUS).contains(n))
}

/// The exit status of [`create_root_script`] when every name is taken.
const NO_FREE_ROOT: u32 = 17;

/// The script that creates run `run_id`'s guest result root in `dir` (the
/// guest's `STATE/native-builds`): the first of `RUN-ID`, `RUN-ID.1`, ...
/// (at most [`RUN_DIR_NAMES`] names) that `mkdir` creates, which is atomic,
/// so builds from several hosts sharing the guest never share a root. It
/// marks the root unfinished, prints its path, then the guest's host name
/// (`uname -n`); when every name is taken it exits with [`NO_FREE_ROOT`].
fn create_root_script(dir: &str, run_id: &str) -> String {
    let (dir, run_id) = (sh::quote(dir), sh::quote(run_id));
    format!(
        r#"set -e
dir={dir}
mkdir -p "$dir"
root="$dir"/{run_id}
n=0
while ! mkdir "$root" 2>/dev/null; do
  if [ ! -e "$root" ] && [ ! -L "$root" ]; then mkdir "$root"; break; fi
  n=$((n + 1))
  if [ "$n" -ge {RUN_DIR_NAMES} ]; then echo "no free result root name in $dir" >&2; exit {NO_FREE_ROOT}; fi
  root="$dir"/{run_id}."$n"
done
: > "$root"/{INCOMPLETE_MARKER}
printf '%s\n' "$root"
uname -n"#
    )
}

/// The longest host name a guest may report (`MAXHOSTNAMELEN` less its NUL).
const MAX_HOST_NAME_BYTES: usize = 255;

/// The guest's host name from what `uname -n` printed (`said`, the tail of
/// its stdout): one line of 1 to [`MAX_HOST_NAME_BYTES`] bytes, without white
/// space or a character fruix escapes ([`fruix_core::escape::is_unsafe`]:
/// control, bidirectional-text and other invisible characters). It goes into
/// `promotion.scm`, so anything else is refused rather than recorded.
fn guest_host_name(said: &str, guest: &impl std::fmt::Display) -> Result<String> {
    let bad = |c: char| c.is_whitespace() || fruix_core::escape::is_unsafe(c);
    let name = said.trim_end_matches('\n');
    if name.is_empty() || name.len() > MAX_HOST_NAME_BYTES || name.chars().any(bad) {
        return Err(Error::system(format!(
            "the guest {guest} reported a host name (uname -n) that is not one: {}",
            fruix_core::escape::quoted(said).cut_at(MAX_HOST_NAME_BYTES + 1)
        )));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::run_id::run_dir_name;

    /// Runs [`create_root_script`] under the local `sh`: its exit status
    /// and stdout.
    fn create_root(dir: &Path, run_id: &str) -> (Option<i32>, String) {
        let out = std::process::Command::new("sh")
            .args(["-c", &create_root_script(dir.to_str().unwrap(), run_id)])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    }

    #[test]
    fn the_guest_result_root_is_the_first_free_name_and_marked_unfinished() {
        let state = tempfile::tempdir().unwrap();
        let executor = super::super::GuestConfig {
            guest: Some("a@b".into()),
            guest_state_dir: Some(state.path().to_str().unwrap().into()),
            ..Default::default()
        }
        .build(Mode::HostInitiated)
        .unwrap();
        let dir = state.path().join("native-builds");
        let id = "20260405T213444Z";
        // Names already taken, also by a file and a dangling symlink.
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(run_dir_name(id, 1)), "").unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.join(run_dir_name(id, 2))).unwrap();
        for n in [3, 4] {
            let (code, said) = create_root(&dir, id);
            assert_eq!(code, Some(0), "{said}");
            let (root, host_name) = said.split_once('\n').unwrap();
            let expected = dir.join(run_dir_name(id, n));
            assert_eq!(root, expected.to_str().unwrap());
            assert_eq!(executor.check_guest_root(id, root).unwrap(), root);
            assert!(expected.join(INCOMPLETE_MARKER).is_file());
            guest_host_name(host_name, &"g").unwrap();
        }
        let taken = dir.join(run_dir_name(id, 2)).symlink_metadata().unwrap();
        assert!(taken.file_type().is_symlink(), "left as it was");
    }

    #[test]
    fn when_every_guest_result_root_name_is_taken_the_script_says_so() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..RUN_DIR_NAMES {
            std::fs::create_dir(dir.path().join(run_dir_name("r", n))).unwrap();
        }
        let (code, said) = create_root(dir.path(), "r");
        assert_eq!(code, Some(NO_FREE_ROOT as i32), "{said}");
        assert_eq!(said, "");
        assert!(!dir.path().join("r.1000").exists());
    }

    #[test]
    fn a_guest_s_cpu_count_is_one_number_from_1_to_4096() {
        assert_eq!(parse_cpus("8\n"), Some(8));
        assert_eq!(parse_cpus(" 4096 "), Some(4096));
        for bad in ["", "0", "4097", "-1", "8\n8", "eight", "\u{1b}[2J"] {
            assert_eq!(parse_cpus(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_host_name_is_one_short_line_of_visible_characters() {
        assert_eq!(guest_host_name("builder-1\n", &"g").unwrap(), "builder-1");
        let long = "h".repeat(MAX_HOST_NAME_BYTES);
        assert_eq!(guest_host_name(&long, &"g").unwrap(), long);
        for bad in [
            String::new(),
            "\n".to_string(),
            "two\nlines".to_string(),
            "a b".to_string(),
            "tab\there".to_string(),
            "esc\u{1b}[2J".to_string(),
            "bidi\u{202e}".to_string(),
            // Regression: a bidi mark or an invisible character was taken
            // into promotion.scm (the check listed the overrides alone).
            "mark\u{200e}".to_string(),
            "zero\u{200b}width".to_string(),
            "h".repeat(MAX_HOST_NAME_BYTES + 1),
        ] {
            let e = guest_host_name(&bad, &"g").unwrap_err();
            assert_eq!(e.failure(), fruix_core::Failure::System, "{bad:?}");
        }
    }
}
