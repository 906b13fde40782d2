//! `guest-self-hosted`: the guest's own fruix (`HELPER native-build
//! self-hosted`) runs the build driver there; the host checks the helper's
//! version, streams its output, and imports and verifies the result root it
//! reports.

use std::sync::Arc;

use fruix_core::executor::{RunContext, Stream};
use fruix_core::{Error, Result};

use super::{GuestExecutor, TAIL_LINES};
use crate::bounded::Tail;
use crate::ssh::{shell_quote, RemoteExit, SshSession, SshTarget};

/// The oldest guest helper `guest-self-hosted` works with.
pub const MIN_HELPER_VERSION: &str = "0.1.0";

impl GuestExecutor {
    pub(super) async fn run_self_hosted(
        &self,
        session: Arc<SshSession>,
        ctx: &RunContext,
    ) -> Result<()> {
        let helper = shell_quote(&self.helper);
        ctx.events
            .stage("helper", async {
                let out = session.output(&format!("{helper} --version"), None).await?;
                check_helper_version(
                    &self.helper,
                    session.target(),
                    &out.exit,
                    &out.stdout_text(),
                    &out.stderr_text(),
                )
            })
            .await?;
        let request = serde_json::to_vec(&ctx.request)
            .map_err(|e| Error::system(format!("cannot encode the build request: {e}")))?;
        let script = format!(
            "exec {helper} native-build self-hosted --state-dir {}",
            shell_quote(&self.state_dir)
        );
        // Only the last line of stdout (the result root) is used.
        let (mut last_stdout, mut tail) = (None::<String>, Tail::new(TAIL_LINES));
        // The helper's exit is judged inside the stage, so that a failed
        // guest build ends its stage as failed.
        ctx.events
            .stage("guest-build", async {
                let exit = session
                    .stream(&script, Some(&request), &ctx.cancel, |stream, line| {
                        if stream == Stream::Stdout {
                            last_stdout = Some(line.to_string());
                        }
                        tail.push(line);
                        ctx.events.log("guest-build", stream, line);
                    })
                    .await?
                    .ok_or(Error::Cancelled)?;
                if !exit.success() {
                    return Err(helper_failure(&exit, std::mem::take(&mut tail)));
                }
                Ok(())
            })
            .await?;
        let expected = self.guest_root(&ctx.request.run_id);
        if last_stdout.as_deref() != Some(expected.as_str()) {
            return Err(Error::system(format!(
                "the guest helper reported result root {:?}, expected {expected}; is the helper a matching fruix?",
                last_stdout.unwrap_or_default()
            )));
        }
        let staged = ctx
            .events
            .stage("import", async {
                let mut staged = self.import(session.clone(), ctx).await?;
                staged.verify()?;
                Ok(staged)
            })
            .await?;
        staged.place(&ctx.result_root)
    }
}

/// The error for a helper that exited non-zero: its exit statuses are
/// fruix's (1 build failure, 3 system failure, 130 cancelled, else input).
fn helper_failure(exit: &RemoteExit, tail: Tail) -> Error {
    let tail = tail.into_lines();
    let step = tail.iter().rev().find_map(|l| {
        l.split("build step `")
            .nth(1)?
            .split('`')
            .next()
            .map(str::to_string)
    });
    let last = tail.last().cloned().unwrap_or_default();
    match exit {
        RemoteExit::Code(1) => Error::Build {
            step: step.unwrap_or_else(|| "guest-build".into()),
            status: Some(format!("in the guest: {}", exit.describe())),
            log: None,
            tail,
        },
        RemoteExit::Code(130) => Error::Cancelled,
        RemoteExit::Code(2) => Error::InvalidRequest {
            message: format!("the guest helper refused the request: {last}"),
        },
        _ => Error::system(format!(
            "the guest helper failed ({}): {last}",
            exit.describe()
        )),
    }
}

/// Checks the output of `HELPER --version` (`fruix X.Y.Z`).
fn check_helper_version(
    helper: &str,
    target: &SshTarget,
    exit: &RemoteExit,
    stdout: &str,
    stderr: &str,
) -> Result<()> {
    let install = format!("install fruix {MIN_HELPER_VERSION} or newer in the guest, or give its path with --guest-helper");
    if !exit.success() {
        return Err(Error::system(format!(
            "the guest helper `{helper}` cannot run on {target} ({}: {stderr}); {install}",
            exit.describe()
        )));
    }
    let version = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("fruix "))
        .map(str::trim);
    match version {
        Some(v) if version_at_least(v, MIN_HELPER_VERSION) => Ok(()),
        Some(v) => Err(Error::system(format!(
            "the guest helper `{helper}` on {target} is fruix {v}, older than {MIN_HELPER_VERSION}; {install}"
        ))),
        None => Err(Error::system(format!(
            "the guest helper `{helper}` on {target} is not fruix (`--version` said {stdout:?}); {install}"
        ))),
    }
}

/// Whether dotted version `v` is at least `min` (numeric parts compared).
fn version_at_least(v: &str, min: &str) -> bool {
    let parts =
        |s: &str| -> Vec<u64> { s.split(['.', '-']).map_while(|p| p.parse().ok()).collect() };
    parts(v) >= parts(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_versions_are_checked() {
        let t = SshTarget::parse("root@h").unwrap();
        let ok = RemoteExit::Code(0);
        check_helper_version("fruix", &t, &ok, "fruix 0.1.0\n", "").unwrap();
        check_helper_version("fruix", &t, &ok, "fruix 1.2.0", "").unwrap();
        let e = check_helper_version("fruix", &t, &ok, "fruix 0.0.9", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("older than 0.1.0"), "{e}");
        let e = check_helper_version("fruix", &t, &RemoteExit::Code(127), "", "fruix: not found")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot run") && e.contains("--guest-helper"),
            "{e}"
        );
        let e = check_helper_version("/bin/true", &t, &ok, "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not fruix"), "{e}");
    }
}
