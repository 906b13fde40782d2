//! `guest-self-hosted`: the guest's own fruix (`HELPER native-build
//! self-hosted`) runs the build driver there; the host checks the helper's
//! version, streams its output, and imports and verifies the result root it
//! reports (`STATE/native-builds/RUN-ID` or `RUN-ID.N`, the first free name
//! the helper could take; nothing else is accepted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fruix_core::executor::{Event, RunContext, Stream};
use fruix_core::{escape, Error, ExitStatus, LogRef, Result};

use super::log::StageLog;
use super::protocol::{Body, Message, Outcome, VERSION};
use super::{GuestRun, TAIL_LINES};
use crate::ssh::{shell_quote, RemoteExit, SshSession, SshTarget};
use fruix_core::bounded::Tail;
use tokio_util::sync::CancellationToken;

/// How long the helper has to exit once it has said how its build ended;
/// then it is stopped, and its outcome stands.
const OUTCOME_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The oldest guest helper `guest-self-hosted` works with.
pub const MIN_HELPER_VERSION: &str = "0.1.0";

impl GuestRun<'_> {
    pub(super) async fn run_self_hosted(
        &mut self,
        session: Arc<SshSession>,
        ctx: &RunContext,
    ) -> Result<()> {
        let helper = shell_quote(&self.executor.helper);
        ctx.events
            .stage("helper", async {
                let out = session.output(&format!("{helper} --version"), None).await?;
                check_helper_version(
                    &self.executor.helper,
                    session.target(),
                    &out.exit,
                    &out.stdout_text(),
                    &out.stderr_text(),
                )
            })
            .await?;
        let request = serde_json::to_vec(&self.request(ctx))
            .map_err(|e| Error::system(format!("cannot encode the build request: {e}")))?;
        let mut script = format!(
            "exec {helper} native-build self-hosted --state-dir {}",
            shell_quote(&self.executor.state_dir)
        );
        if let Some(key) = &self.executor.signing_key {
            // The objects' fingerprints name the host's store: the one the
            // delivered source object is in.
            let store = self
                .source_dir
                .as_ref()
                .and_then(|_| Path::new(&ctx.request.source.path).parent())
                .ok_or_else(|| Error::InvalidConfig {
                    executor: self.executor.mode.name().to_string(),
                    message: "signing in the guest (`guest_signing_key`) needs the source sent from this host's store; it cannot be used with a source already in the guest (--guest-source)".into(),
                })?;
            script.push_str(&format!(
                " --sign-with {} --sign-for-store {}",
                shell_quote(key),
                shell_quote(&store.to_string_lossy())
            ));
        }
        // The helper's stdout is the protocol (JSON Lines, see
        // [`super::protocol`]), parsed from the bytes that came; its stderr
        // is shown as log lines. Its exit is
        // judged inside the stage, so that a failed guest build ends its
        // stage as failed.
        let result_root = ctx
            .events
            .stage("guest-build", async {
                let mut listener = Listener::new(ctx)?;
                let heard = listener.outcome_heard.clone();
                // Stopped by the host's cancel, or once the helper has not
                // exited within OUTCOME_GRACE of its outcome.
                let stop = ctx.cancel.child_token();
                let exit = {
                    let run = session.stream_bytes(
                        &script,
                        Some(&request),
                        &stop,
                        &ctx.events,
                        |stream, line| listener.line(stream, line),
                    );
                    tokio::pin!(run);
                    tokio::select! {
                        ended = &mut run => ended?,
                        () = async {
                            heard.cancelled().await;
                            tokio::time::sleep(OUTCOME_GRACE).await;
                        } => {
                            stop.cancel();
                            run.await?
                        }
                    }
                };
                match exit {
                    Some(exit) => listener.finish(Some(&exit)),
                    None if ctx.cancel.is_cancelled() => Err(Error::Cancelled),
                    None => {
                        ctx.events.emit(Event::Warning {
                            message: format!(
                                "the guest helper did not exit within {}s of saying how its build ended; it was stopped",
                                OUTCOME_GRACE.as_secs()
                            ),
                        });
                        listener.finish(None)
                    }
                }
            })
            .await?;
        let root = self
            .executor
            .check_guest_root(&ctx.request.run_id, &result_root)?;
        self.guest_root_made(&session, &root);
        let staged = ctx
            .events
            .stage("import", async {
                let mut staged = self.import(session.clone(), ctx, &root).await?;
                staged.verify()?;
                Ok(staged)
            })
            .await?;
        staged.place(&ctx.result_root)
    }
}

/// Follows the helper's output: protocol messages on stdout, log lines on
/// stderr. The log lines shown also go to the host's log of the stage,
/// `logs/guest-build.log`, which a failure names.
struct Listener<'a> {
    ctx: &'a RunContext,
    outcome: Option<Outcome>,
    /// Cancelled once the outcome is heard: the helper has then
    /// [`OUTCOME_GRACE`] to exit.
    outcome_heard: CancellationToken,
    /// The first stdout line that was not a protocol message.
    broken: Option<String>,
    stderr: Tail,
    log: StageLog,
}

impl<'a> Listener<'a> {
    fn new(ctx: &'a RunContext) -> Result<Self> {
        Ok(Listener {
            ctx,
            outcome: None,
            outcome_heard: CancellationToken::new(),
            broken: None,
            stderr: Tail::new(TAIL_LINES),
            log: StageLog::create(ctx.logs_dir()?.join(format!("{STAGE}.log")))?,
        })
    }

    /// Shows the guest's log line `line`, and logs it.
    fn show(&mut self, stream: Stream, line: &str) {
        self.log.line(line);
        self.ctx.events.log(STAGE, stream, line);
    }

    /// Takes the helper's line `line`, as the bytes that came: a protocol
    /// message on stdout (never text made of it, so that what is shown of a
    /// refused line is escaped once), a log line on stderr.
    fn line(&mut self, stream: Stream, line: &[u8]) {
        let ctx = self.ctx;
        let events = &ctx.events;
        if stream == Stream::Stderr {
            let text = escape::utf8_or_octal(line);
            self.stderr.push(&text);
            self.show(stream, &text);
            return;
        }
        let message = Message::parse(line).and_then(|m| match self.outcome {
            // The outcome is the last message, and comes once.
            Some(_) => Err(format!(
                "a message after its outcome: {}",
                escape::bytes(line).cut_at(200)
            )),
            None => Ok(m),
        });
        match message.map(|m| m.body) {
            Ok(Body::Event(event)) => match event {
                Event::Log { stream, line, .. } => self.show(stream, &line),
                Event::StageStarted { stage } => self.show(Stream::Stderr, &format!("==> {stage}")),
                Event::StageFinished {
                    stage,
                    ok,
                    elapsed_ms,
                } => self.show(
                    Stream::Stderr,
                    &format!(
                        "==> {stage} {} in {:.1}s",
                        if ok { "done" } else { "FAILED" },
                        elapsed_ms as f64 / 1000.0
                    ),
                ),
                Event::Warning { message } => events.emit(Event::Warning {
                    // The guest's text, one line: it may not forge another.
                    message: format!("in the guest: {}", escape::line(&message)),
                }),
                // Not shown, but the guest is not silent
                // (`--max-silent-time`).
                Event::Progress { .. } => events.alive(),
            },
            Ok(Body::Outcome(outcome)) => {
                self.outcome = Some(outcome);
                self.outcome_heard.cancel();
            }
            Err(problem) => {
                self.broken.get_or_insert(problem);
            }
        }
    }

    /// The result root the helper reported, or the error its outcome (or,
    /// without one, its exit status) stands for, naming the host's log of
    /// the stage (kept for a failure only: the guest's result root brings
    /// its own `logs/`). A guest that says it was cancelled when this host did not
    /// cancel it fails as the system failure that is ([`guest_cancelled`]):
    /// only the host's own Ctrl-C, SIGTERM or time limit is a cancellation.
    /// `exit` is `None` when the helper was stopped after its outcome.
    fn finish(self, exit: Option<&RemoteExit>) -> Result<String> {
        let log = self.log.close()?;
        let cancelled_here = self.ctx.cancel.is_cancelled();
        match verdict(self.outcome, self.broken, self.stderr, exit) {
            // The guest's result root has the guest's logs (`logs/`).
            Ok(root) => super::log::remove(&log).map(|()| root),
            Err(Error::Cancelled) if !cancelled_here => Err(naming_log(guest_cancelled(), log)),
            Err(e) => Err(naming_log(e, log)),
        }
    }
}

/// What the helper's run came to: its protocol `broken`, its `outcome`, or
/// without one its `exit` (and its last `stderr` lines). `exit` is `None`
/// only for a helper stopped after its outcome.
fn verdict(
    outcome: Option<Outcome>,
    broken: Option<String>,
    stderr: Tail,
    exit: Option<&RemoteExit>,
) -> Result<String> {
    if let Some(problem) = broken {
        return Err(Error::system(format!(
            "the guest helper broke its protocol (protocol {VERSION}): {problem}"
        )));
    }
    match (outcome, exit) {
        (Some(outcome), _) => outcome.into_result(),
        (None, Some(exit)) => Err(no_outcome(stderr, exit)),
        (None, None) => Err(Error::system(
            "the guest helper was stopped before it said how its build ended",
        )),
    }
}

/// The failure of a helper that ended with `exit` without an outcome line:
/// its exit status (fruix's table) says what kind of failure it was.
fn no_outcome(stderr: Tail, exit: &RemoteExit) -> Error {
    let tail = stderr.into_lines();
    let status = match exit {
        RemoteExit::Code(code) => ExitStatus::from_code(*code),
        _ => None,
    };
    match status {
        Some(ExitStatus::Cancelled) => Error::Cancelled,
        Some(ExitStatus::BuildFailure) => Error::Build {
            step: STAGE.into(),
            status: Some(format!("in the guest: {}", exit.describe())),
            log: LogRef { path: None, tail },
        },
        Some(ExitStatus::Usage) => Error::InvalidRequest {
            message: format!(
                "the guest helper refused the request: {}",
                escape::text(tail.last().map_or("", String::as_str))
            ),
        },
        _ => Error::system(format!(
            "the guest helper ended ({}) without saying how its build ended; its last output: {}",
            exit.describe(),
            escape::text(&tail.join(" | "))
        )),
    }
}

/// The failure of a guest that said its build was cancelled when this host
/// had not cancelled it: something in the guest stopped it, and another
/// try may go through.
fn guest_cancelled() -> Error {
    Error::system(
        "the guest cancelled the build, but nobody cancelled it here (no Ctrl-C, SIGTERM or time limit on this host): something in the guest stopped its fruix; try again",
    )
}

/// `e`, naming the host's log of the guest's build, `log`, when it is a
/// build or system failure.
fn naming_log(e: Error, log: PathBuf) -> Error {
    match e {
        Error::Build {
            step,
            status,
            log: LogRef { tail, .. },
        } => Error::Build {
            step,
            status,
            log: LogRef {
                path: Some(log),
                tail,
            },
        },
        Error::System { message, log: got } => Error::System {
            message,
            log: Some(LogRef {
                path: Some(log),
                tail: got.map(|l| l.tail).unwrap_or_default(),
            }),
        },
        e => e,
    }
}

/// The stage the guest's build runs in, on the host.
const STAGE: &str = "guest-build";

/// Checks the output of `HELPER --version`: `fruix X.Y.Z`, maybe followed
/// by ` (commit C)`, then (from fruix of December 2026 on) a line per
/// format, among them the guest build protocol's version, which must be
/// this host's ([`super::protocol::VERSION`]). A helper that does not list
/// it is older, and its protocol is checked as it speaks.
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
            "the guest helper `{helper}` cannot run on {target} ({}: {}); {install}",
            exit.describe(),
            escape::text(stderr)
        )));
    }
    let version = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("fruix "))
        .and_then(|v| v.split_whitespace().next());
    // Listed, it must be exactly this host's version (anything else, a
    // word that is no number included, is another protocol).
    let ours = super::protocol::VERSION.to_string();
    let protocol = stdout.lines().find_map(|l| {
        let n = l.trim_start().strip_prefix(GUEST_PROTOCOL_LINE)?;
        Some(n.trim())
    });
    match version {
        Some(_) if protocol.is_some_and(|p| p != ours) => Err(Error::system(format!(
            "the guest helper `{helper}` on {target} speaks guest build protocol version {}, this fruix version {ours}; install in the guest a fruix that speaks version {ours} (`fruix --version` lists it), or give its path with --guest-helper",
            escape::quoted(protocol.unwrap_or_default())
        ))),
        Some(v) if version_at_least(v, MIN_HELPER_VERSION) => Ok(()),
        Some(v) => Err(Error::system(format!(
            "the guest helper `{helper}` on {target} is fruix {}, older than {MIN_HELPER_VERSION}; {install}",
            escape::quoted(v)
        ))),
        None => Err(Error::system(format!(
            "the guest helper `{helper}` on {target} is not fruix (`--version` said {}); {install}",
            escape::quoted(stdout)
        ))),
    }
}

/// How `fruix --version` begins the line of the guest build protocol's
/// version (`cli/src/args/version.rs` writes it).
pub const GUEST_PROTOCOL_LINE: &str = "guest build protocol (native-build self-hosted):";

/// Whether dotted version `v` is at least `min` (numeric parts compared).
fn version_at_least(v: &str, min: &str) -> bool {
    let parts =
        |s: &str| -> Vec<u64> { s.split(['.', '-']).map_while(|p| p.parse().ok()).collect() };
    parts(v) >= parts(min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::executor::EventSink;
    use fruix_core::testing::{run_context, sample_request};

    /// What a listener makes of the helper's stdout `lines`, ending with
    /// exit status 0.
    fn heard(lines: &[Message]) -> Result<String> {
        heard_all(lines, &[], &RemoteExit::Code(0), false).0
    }

    /// What a listener makes of the helper's stdout `lines` and stderr
    /// `stderr`, ending with `exit`, with the host's run cancelled or not;
    /// and the host's log of the stage, as written, if it was kept.
    fn heard_all(
        lines: &[Message],
        stderr: &[&str],
        exit: &RemoteExit,
        cancelled: bool,
    ) -> (Result<String>, Option<String>) {
        let lines: Vec<Vec<u8>> = lines.iter().map(|m| m.to_line().into_bytes()).collect();
        heard_bytes(&lines, stderr, exit, cancelled)
    }

    /// [`heard_all`], the helper's stdout lines given as their bytes.
    fn heard_bytes(
        lines: &[Vec<u8>],
        stderr: &[&str],
        exit: &RemoteExit,
        cancelled: bool,
    ) -> (Result<String>, Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let ctx = run_context(
            sample_request("guest-self-hosted", vec![]),
            &root,
            EventSink::discard(),
        );
        if cancelled {
            ctx.cancel.cancel();
        }
        let mut listener = Listener::new(&ctx).unwrap();
        for line in stderr {
            listener.line(Stream::Stderr, line.as_bytes());
        }
        for line in lines {
            listener.line(Stream::Stdout, line);
        }
        let result = listener.finish(Some(exit));
        let log = std::fs::read_to_string(root.join("logs/guest-build.log")).ok();
        assert_eq!(log.is_some(), root.join("logs").exists());
        (result, log)
    }

    fn failed(failure: fruix_core::Failure) -> Message {
        Message::new(Body::Outcome(Outcome::Failed {
            failure,
            step: Some("buildworld".into()),
            status: Some("exit status 2".into()),
            tail: vec!["cc: error".into()],
            message: "failed".into(),
        }))
    }

    /// Regression: a guest that said "cancelled" (its outcome, or exit
    /// status 130) made the host exit 130 as for its own Ctrl-C.
    #[test]
    fn a_guest_s_cancel_is_a_system_failure_unless_the_host_cancelled() {
        use fruix_core::Failure;
        let said = [
            (vec![failed(Failure::Cancelled)], RemoteExit::Code(130)),
            (vec![], RemoteExit::Code(130)),
        ];
        for (lines, exit) in said {
            let (result, _) = heard_all(&lines, &[], &exit, false);
            let e = result.unwrap_err();
            assert_eq!(e.failure(), Failure::System, "{lines:?}: {e:?}");
            assert!(
                e.to_string()
                    .contains("the guest cancelled the build, but nobody cancelled it here"),
                "{e}"
            );
            let (result, _) = heard_all(&lines, &[], &exit, true);
            assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        }
    }

    /// Regression: a failed guest-self-hosted build left no log on the
    /// host and named none. Its lines are in `logs/guest-build.log`,
    /// escaped, and the error names it.
    #[test]
    fn a_failed_guest_build_names_the_host_s_log_of_its_lines() {
        let event = Message::new(Body::Event(Event::Log {
            stage: "buildworld".into(),
            stream: Stream::Stdout,
            line: "\u{1b}[31mcc: error\nforged".into(),
        }));
        let (result, log) = heard_all(
            &[event, failed(fruix_core::Failure::Build)],
            &["\u{7}from stderr"],
            &RemoteExit::Code(1),
            false,
        );
        assert_eq!(
            log.as_deref(),
            Some("\\007from stderr\n\\033[31mcc: error\\nforged\n")
        );
        let e = result.unwrap_err();
        let path = e.log().and_then(|l| l.path.clone()).expect("a log file");
        assert!(path.ends_with("root/logs/guest-build.log"), "{path:?}");
        assert!(e.to_string().contains("; full log: "), "{e}");

        // A build that succeeded leaves the result root's `logs/` to the
        // guest's result root.
        let succeeded = Message::new(Body::Outcome(Outcome::Succeeded {
            result_root: "/r".into(),
        }));
        let (result, log) = heard_all(&[succeeded], &["a line"], &RemoteExit::Code(0), false);
        assert_eq!(result.unwrap(), "/r");
        assert_eq!(log, None);
    }

    /// Regression: the helper's stdout lines were turned into text (`\377`)
    /// before they were parsed, so a line that was not UTF-8 was refused for
    /// an "invalid escape" it never had, and shown escaped twice (`\\377`).
    #[test]
    fn a_protocol_line_that_is_not_utf8_is_refused_as_such_and_escaped_once() {
        let line = b"{\"v\":1,\"event\":{\"event\":\"warning\",\"message\":\"ok \xff\"}}";
        let at = line.iter().position(|b| *b == 0xff).unwrap();
        let (result, _) = heard_bytes(&[line.to_vec()], &[], &RemoteExit::Code(0), false);
        let e = result.unwrap_err();
        assert!(matches!(e, Error::System { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(&format!(
                "broke its protocol (protocol {VERSION}): not a protocol message (not UTF-8 at byte {at}): "
            )),
            "{e}"
        );
        assert!(e.contains(r#""message":"ok \377"}}"#), "{e}");
        assert!(!e.contains(r"\\377"), "escaped twice: {e}");
    }

    #[test]
    fn the_outcome_is_the_last_message_and_comes_once() {
        let succeeded = Message::new(Body::Outcome(Outcome::Succeeded {
            result_root: "/r".into(),
        }));
        let failed = Message::new(Body::Outcome(Outcome::Failed {
            failure: fruix_core::Failure::Build,
            step: Some("buildworld".into()),
            status: None,
            tail: vec![],
            message: "failed".into(),
        }));
        let event = Message::new(Body::Event(Event::Warning {
            message: "late".into(),
        }));
        assert_eq!(heard(std::slice::from_ref(&succeeded)).unwrap(), "/r");
        for lines in [
            vec![failed.clone(), succeeded.clone()],
            vec![succeeded.clone(), succeeded.clone()],
            vec![succeeded.clone(), event],
        ] {
            let e = heard(&lines).unwrap_err();
            assert!(matches!(e, Error::System { .. }), "{e:?}");
            assert!(
                e.to_string().contains("after its outcome"),
                "{lines:?}: {e}"
            );
        }
    }

    #[test]
    fn helper_versions_are_checked() {
        let t = SshTarget::parse("root@h").unwrap();
        let ok = RemoteExit::Code(0);
        check_helper_version("fruix", &t, &ok, "fruix 0.1.0\n", "").unwrap();
        check_helper_version("fruix", &t, &ok, "fruix 1.2.0", "").unwrap();
        // Regression: the commit `--version` names after the version made
        // every helper "older than 0.1.0".
        let listed = |protocol: u32| {
            format!(
                "fruix 0.1.0 (commit 0123456789ab)\nformats:\n  {GUEST_PROTOCOL_LINE} {protocol}\n"
            )
        };
        check_helper_version(
            "fruix",
            &t,
            &ok,
            &listed(super::super::protocol::VERSION),
            "",
        )
        .unwrap();
        let other = super::super::protocol::VERSION + 1;
        let e = check_helper_version("fruix", &t, &ok, &listed(other), "")
            .unwrap_err()
            .to_string();
        let said = format!("speaks guest build protocol version \"{other}\", this fruix version");
        assert!(e.contains(&said), "{e}");
        let listed_as =
            |word: &str| format!("fruix 0.1.0\nformats:\n  {GUEST_PROTOCOL_LINE} {word}\n");
        for word in ["1 (beta)", "4294967297", "x"] {
            let e = check_helper_version("fruix", &t, &ok, &listed_as(word), "");
            assert!(e.is_err(), "{word}");
        }
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
