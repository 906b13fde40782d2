//! `host-initiated`: the host drives the build in the guest over SSH, one
//! remote command per make step, rendering the plan of `fruix-freebsd` as
//! POSIX sh ([`fruix_freebsd::sh`]): it needs only sh, make, cc, tar and cp
//! there. The host signs the imported trees.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fruix_core::error::IoContext;
use fruix_core::executor::RunContext;
use fruix_core::promotion::ArtifactEntry;
use fruix_core::result_root::INCOMPLETE_MARKER;
use fruix_core::{Error, LogRef, Result};
use fruix_freebsd::probe::{choose_probe, probe_in};
use fruix_freebsd::promotion::{promotion_metadata, Builder};
use fruix_freebsd::slice::ARTIFACTS_DIR;
use fruix_freebsd::{sh, BuildPlan, Layout};
use tokio::io::AsyncWriteExt;

use super::{GuestRun, Mode, TAIL_LINES, VERSION};
use crate::ssh::SshSession;
use fruix_core::bounded::Tail;

impl GuestRun<'_> {
    pub(super) async fn run_host_initiated(
        &mut self,
        session: Arc<SshSession>,
        ctx: &RunContext,
    ) -> Result<()> {
        let request = &self.request(ctx);
        let root = self.executor.guest_root(&request.run_id);
        let work = format!("{root}.work");
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
        let layout = Layout {
            make,
            source_dir: PathBuf::from(request.source_dir()),
            work_dir: PathBuf::from(&work),
        };
        let plan = BuildPlan::new(request, &layout)?;
        let q_root = sh::quote(&root);
        let prepare = format!(
            "set -e\nmkdir -p {parent}\nif [ -e {q_root} ]; then echo \"guest result root {root} already exists\" >&2; exit 1; fi\nmkdir {q_root}\n: > {q_root}/{INCOMPLETE_MARKER}\n{work_dir}uname -n",
            parent = sh::quote(&format!("{}/native-builds", self.executor.state_dir)),
            work_dir = sh::prepare_work_dir_script(&work),
        );
        let said = self
            .executor
            .check(&session, "prepare the guest result root", &prepare)
            .await?;
        let host_name = guest_host_name(&said, session.target())?;
        self.guest_work = Some(work.clone());
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
                out.stderr_text()
            )));
        }
        self.guest_work = None;
        let mut staged = ctx
            .events
            .stage("import", self.import(session.clone(), ctx))
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

    /// Runs one make step in the guest, streaming to events and `log_path`.
    async fn remote_step(
        &self,
        session: &SshSession,
        stage: &str,
        script: &str,
        log_path: &Path,
        ctx: &RunContext,
    ) -> Result<()> {
        let file = std::fs::File::create(log_path).with_path("create log file", log_path)?;
        let mut log = std::io::BufWriter::new(file);
        let mut tail = Tail::new(TAIL_LINES);
        let mut write_error = None;
        let exit = session
            .stream(script, None, &ctx.cancel, &ctx.events, |stream, line| {
                if let Err(e) = writeln!(log, "{line}") {
                    write_error.get_or_insert(e);
                }
                tail.push(line);
                ctx.events.log(stage, stream, line);
            })
            .await?;
        let mut file = tokio::fs::File::from_std(
            log.into_inner()
                .map_err(|e| Error::io("write log file", log_path, e.into_error()))?,
        );
        file.flush().await.with_path("write log file", log_path)?;
        if let Some(e) = write_error {
            return Err(Error::io("write log file", log_path, e));
        }
        match exit {
            None => Err(Error::Cancelled),
            Some(exit) if exit.success() => Ok(()),
            Some(exit) => Err(Error::Build {
                step: stage.to_string(),
                status: Some(exit.describe()),
                log: LogRef {
                    path: Some(log_path.to_path_buf()),
                    tail: tail.into_lines(),
                },
            }),
        }
    }
}

/// The longest host name a guest may report (`MAXHOSTNAMELEN` less its NUL).
const MAX_HOST_NAME_BYTES: usize = 255;

/// The guest's host name from what `uname -n` printed (`said`, the tail of
/// its stdout): one line of 1 to [`MAX_HOST_NAME_BYTES`] bytes, without white
/// space, control or bidirectional-text characters. It goes into
/// `promotion.scm`, so anything else is refused rather than recorded.
fn guest_host_name(said: &str, guest: &impl std::fmt::Display) -> Result<String> {
    let bad = |c: char| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
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
            "h".repeat(MAX_HOST_NAME_BYTES + 1),
        ] {
            let e = guest_host_name(&bad, &"g").unwrap_err();
            assert_eq!(e.failure(), fruix_core::Failure::System, "{bad:?}");
        }
    }
}
