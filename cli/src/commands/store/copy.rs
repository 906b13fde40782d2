//! `fruix store copy`: objects from store to store over SSH (russh, host keys checked as for builds), the other side
//! running `fruix store serve` on its stdin and stdout (see
//! [`fruix_promote::serve`]). Only what the receiving store lacks is sent.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fruix_core::escape;
use fruix_core::executor::EventSink;
use fruix_core::manifest::Progress;
use fruix_core::ssh_target::SshTarget;
use fruix_executors::ssh::{shell_quote, HostKeyPolicy, RemoteStdio, SshOptions, SshSession};
use fruix_promote::archive::{export_order, ArchiveLimits, ImportOptions, Trust};
use fruix_promote::serve::Client;
use fruix_promote::Store;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

use self::failure::{answered, Failed, RemoteEnd};
use self::serving::{Serving, SERVE_END};
use super::archive::trust;
use super::idle::IdleLimit;
use super::object_names;
use super::print_moved;
use crate::args::{CopyArgs, TrustArgs};
use crate::defaults;
use crate::display::{with_progress, Mode};
use crate::exit::{from_promote, from_promote_saying, CliError, CliResult, Status};

/// What a copy cancelled before it connected (waiting for a repair of this
/// store) left.
const NOT_COPIED: &str = "nothing was copied; neither store was changed";

mod failure;
mod serving;

/// What a copy did.
#[derive(Debug, serde::Serialize)]
struct CopyReport {
    /// `to` or `from`.
    direction: &'static str,
    remote: String,
    /// The objects asked for (with --recursive, their closures).
    objects: usize,
    /// The objects the receiving store lacked, which were sent.
    sent: Vec<PathBuf>,
    /// Bytes of archive sent over the connection.
    bytes: u64,
}

/// `ssh://USER@HOST[:PORT]`.
fn parse_url(url: &str) -> CliResult<SshTarget> {
    if !url.starts_with("ssh://") {
        return Err(CliError::usage(format!(
            "{}: give the other machine as ssh://USER@HOST[:PORT]",
            escape::quoted(url)
        )));
    }
    SshTarget::parse(url).map_err(CliError::usage)
}

/// How a copy shows what crosses, and how it is cancelled.
struct Work {
    mode: Mode,
    /// Counts the files and bytes that cross; cancelled by Ctrl-C, SIGTERM
    /// or SIGHUP, which stops the export or the import under way.
    progress: Progress,
    /// Cancelled with `progress`: wakes a connection, a read or a write
    /// waiting on the other side.
    cancel: CancellationToken,
}

pub fn copy(args: CopyArgs) -> CliResult {
    // Ctrl-C, SIGTERM or SIGHUP stops the copy: an import here fails,
    // keeping nothing; an export to the other side stops short, and that
    // side's import keeps nothing either.
    let progress = Progress::default();
    let cancel = CancellationToken::new();
    let waking = cancel.clone();
    crate::signals::cancel_work(&progress, move || waking.cancel())?;
    let (direction, url) = match (&args.to, &args.from) {
        (Some(to), None) => ("to", to),
        (None, Some(from)) => ("from", from),
        _ => unreachable!("clap requires exactly one of --to and --from"),
    };
    let target = parse_url(url)?;
    // Whom to trust is this store's question for --from only; for --to the
    // other store decides, and the flags would be ignored.
    let trust = if direction == "from" {
        trust(&args.local.trust)?
    } else {
        refuse_trust_flags(&args.local.trust)?;
        Default::default()
    };
    // Progress goes to stderr under --json too: stdout holds the JSON alone.
    let mode = Mode::unless_quiet(args.quiet.quiet);
    defaults::announce(mode, Some(&args.local.store.store), None);
    let work = Work {
        mode,
        progress,
        cancel,
    };
    // For --to, the objects are ours; for --from, they are named by their
    // paths in the other store, checked before a store is made for them.
    if direction == "to" {
        let store = Store::open_for_reading(&args.local.store.store)
            .map_err(from_promote_saying(NOT_COPIED))?;
        let names = object_names(&store, &args.paths)?;
        let report = copy_with(&args, direction, &target, &trust, &work, &store, names)?;
        return print_copied(args.json, &report);
    }
    let names = args
        .paths
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .filter(|n| fruix_promote::verify::is_object_name(n.as_bytes()))
                .map(str::to_string)
                .ok_or_else(|| {
                    CliError::usage(format!("{}: not a store object path", escape::path(p)))
                })
        })
        .collect::<CliResult<Vec<_>>>()?;
    // A copy that fails (refused, or never connected) leaves no store it
    // made; one that copied keeps it, whatever printing its report does.
    let store = Store::open_tentatively(&args.local.store.store)
        .map_err(from_promote_saying(NOT_COPIED))?;
    let report = copy_with(&args, direction, &target, &trust, &work, &store, names)?;
    store.keep();
    print_copied(args.json, &report)
}

/// `--trusted-key`, `--trusted-keys-file` or `--no-check-sigs` given to
/// `copy --to`, refused: only the other store's keys count there. The keys
/// file of the environment (`FRUIX_TRUSTED_KEYS_FILE`) is no flag given.
fn refuse_trust_flags(trust: &TrustArgs) -> CliResult<()> {
    let file = &trust.trusted_keys_file;
    let file_given = file != Path::new(defaults::TRUSTED_KEYS_FILE)
        && std::env::var_os("FRUIX_TRUSTED_KEYS_FILE").as_deref() != Some(file.as_os_str());
    if !trust.trusted_keys.is_empty() || trust.no_check_sigs || file_given {
        return Err(CliError::usage(
            "--trusted-key, --trusted-keys-file and --no-check-sigs are for --from: with --to, the other store's trusted keys decide what it accepts",
        ));
    }
    Ok(())
}

/// The copy itself, once `store` is open and the objects are named.
fn copy_with(
    args: &CopyArgs,
    direction: &'static str,
    target: &SshTarget,
    trust: &Trust,
    work: &Work,
    store: &Store,
    names: Vec<String>,
) -> CliResult<CopyReport> {
    let (mode, progress) = (work.mode, &work.progress);
    let options = SshOptions {
        identity: args.auth.identity.clone(),
        host_keys: HostKeyPolicy::known_hosts(
            args.auth.known_hosts.clone(),
            args.auth.accept_new_host_key,
        ),
        ..SshOptions::with_key(target.clone(), PathBuf::new(), PathBuf::new())
    };
    let remote_store = args
        .remote_store
        .clone()
        .unwrap_or_else(|| store.path().to_path_buf());
    // The other side's command line is text its shell parses: a store path
    // that is not UTF-8 cannot be named on it exactly, so it is refused
    // before connecting rather than sent altered.
    let remote_text = remote_store.to_str().ok_or_else(|| {
        CliError::usage(format!(
            "the other store's path {} is not UTF-8, which a remote command line cannot name exactly; give --remote-store",
            escape::path(&remote_store)
        ))
    })?;
    // As a local `--store` is: no result bundle or build request could
    // name such a store.
    if remote_text.chars().any(char::is_control) {
        return Err(CliError::usage(format!(
            "the other store's path {} holds a control character, which no result bundle or build request may name; give --remote-store without one",
            escape::path(&remote_store)
        )));
    }
    let command = format!(
        "{} store serve --store {}",
        args.remote_program,
        shell_quote(remote_text)
    );
    let idle_limit = args.idle_timeout;
    let report = crate::runtime()?.block_on(async {
        // `--timeout` stops the copy as Ctrl-C does, but is a timeout.
        let out_of_time = Arc::new(AtomicBool::new(false));
        let _deadline = args.timeout.map(|limit| {
            let (cancel_progress, cancel, out_of_time) = (
                work.progress.canceller(),
                work.cancel.clone(),
                out_of_time.clone(),
            );
            AbortOnDrop(tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                out_of_time.store(true, Ordering::SeqCst);
                cancel_progress();
                cancel.cancel();
            }))
        });
        let timed_out = || {
            out_of_time
                .load(Ordering::SeqCst)
                .then(|| {
                    args.timeout
                        .map(|limit| total_timeout(&command, target, limit))
                })
                .flatten()
        };
        let (session, stdio) = tokio::select! {
            started = connect(&options, &command) => started?,
            () = work.cancel.cancelled() => return Err(match timed_out() {
                Some(e) => from_promote(e),
                None => cancelled_copy(direction),
            }),
        };
        let (stdout, stalled) = IdleLimit::new(stdio.stdout, idle_limit);
        let stdout = stdout.cancelled_by(&work.cancel);
        let stdin =
            IdleLimit::sharing(stdio.stdin, idle_limit, &stalled).cancelled_by(&work.cancel);
        let reader = SyncIoBridge::new(stdout);
        let mut serving = Serving {
            stdin: SyncIoBridge::new(stdin),
            input_ended: false,
            finished: stdio.finished,
            ended: None,
            cancel: work.cancel.clone(),
        };
        let recursive = args.recursive;
        let store = &store;
        let trust = &trust;
        let remote = target.to_string();
        let serving_side = &mut serving;
        // Each session ends with `finish` (or a fetch, which ends it): its
        // last answer must be all the other side sends, and it must exit 0.
        let copying = move || -> Result<CopyReport, Failed> {
            // The other side's answer to the hello: where it has no store,
            // the path is the other machine's (`--remote-store`).
            let reader = BufReader::with_capacity(1 << 20, reader);
            let mut client = Client::start(reader, serving_side).map_err(|e| match e {
                fruix_promote::Error::NoStore { path } => Failed::NoRemoteStore(path),
                e => Failed::Store(e),
            })?;
            // Before anything is sent: an archive of one store is refused
            // by a store at another path, only once it has all crossed.
            if client.store != store.path() {
                return Err(Failed::OtherStore(client.store.clone()));
            }
            let (objects, sent, bytes) = if direction == "to" {
                let order = export_order(store, &names, recursive)?;
                let valid = client.valid(&order).map_err(|e| answered(&client, e))?;
                let there: std::collections::HashSet<String> = valid.into_iter().collect();
                let missing: Vec<String> = order
                    .iter()
                    .filter(|n| !there.contains(*n))
                    .cloned()
                    .collect();
                let (sent, bytes) = if missing.is_empty() {
                    (Vec::new(), 0)
                } else {
                    let (exported, _) =
                        with_progress(mode, ("copy", "files"), progress, None, || {
                            client.send(store, &missing, Some(progress))
                        })
                        .map_err(|e| answered(&client, e))?;
                    (exported.objects, exported.bytes)
                };
                let imported = sent.len();
                client
                    .finish()
                    .map_err(|e| Failed::Unclean { e, imported })?;
                (order.len(), sent, bytes)
            } else {
                let order = if recursive {
                    client.closure(&names).map_err(|e| answered(&client, e))?
                } else {
                    names.clone()
                };
                // A closure comes from the other side, its names checked;
                // `fetch` publishes exactly the missing objects, or nothing.
                let mut missing = Vec::new();
                for name in &order {
                    if !store.is_valid(name)? {
                        missing.push(name.clone());
                    }
                }
                let (sent, bytes) = if missing.is_empty() {
                    let imported = 0;
                    client
                        .finish()
                        .map_err(|e| Failed::Unclean { e, imported })?;
                    (Vec::new(), 0)
                } else {
                    // Ends the session: nothing is published unless it
                    // ends cleanly.
                    let options = ImportOptions {
                        trust,
                        limits: ArchiveLimits::default(),
                        progress: Some(progress),
                        whole_input: false,
                    };
                    let imported = with_progress(mode, ("copy", "files"), progress, None, || {
                        client.fetch(store, &missing, &options)
                    })
                    .map_err(|e| answered(&client, e))?;
                    let mut sent = imported.imported;
                    sent.extend(imported.present);
                    (sent, imported.bytes)
                };
                (order.len(), sent, bytes)
            };
            Ok(CopyReport {
                direction,
                remote,
                objects,
                sent,
                bytes,
            })
        };
        let outcome = tokio::task::block_in_place(copying);
        // Out of time, the copy is stopped as a silent one is.
        let out_of_time = outcome.is_err() && timed_out().is_some();
        let stalled = stalled.fired() || out_of_time;
        // Cancelled, the copy failed whatever error its stop became. An
        // import here kept nothing, and the other side, only exporting, is
        // stopped at once; one importing there is told the archive ended,
        // and is waited for while it drops what it received.
        let cancelled = outcome.is_err() && progress.is_cancelled() && !out_of_time;
        let waited_out = matches!(serving.ended, Some(None));
        let unclean = serving.unclean();
        let ended = match serving.ended.take() {
            // Waited for: it ended, cleanly or not (the copy failed then).
            Some(Some(ended)) => {
                session.disconnect().await;
                Some(ended)
            }
            // It does not answer, so it would not end at end-of-file either
            // (or, cancelled, it has nothing to keep; or it outlived its
            // output): its remote session is stopped (as a cancelled
            // build's is) and the connection closed, not waited on.
            _ if stalled || waited_out || (cancelled && direction == "from") => {
                if let Some(sid) = stdio.session.get() {
                    session.kill_session(sid).await;
                }
                session.disconnect().await;
                tokio::time::timeout(SERVE_END, serving.finished)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            _ => {
                // End-of-file ends the other side, whether it waits for a
                // request or (after a refusal here) is still writing what
                // nobody reads.
                if !serving.input_ended {
                    tokio::task::block_in_place(|| {
                        let _ = serving.stdin.flush();
                        let _ = serving.stdin.shutdown();
                    });
                }
                let ended = tokio::time::timeout(SERVE_END, serving.finished).await;
                session.disconnect().await;
                ended.ok().and_then(Result::ok)
            }
        };
        // Whatever error the reader's timeout became on its way out, the
        // copy failed because the other side went silent.
        // What the other store said it imported stays said.
        let outcome = outcome.map_err(|e| {
            let timeout = match timed_out() {
                Some(t) if out_of_time => t,
                _ if stalled => idle_timeout(&command, target, idle_limit),
                _ => return e,
            };
            match e {
                Failed::Unclean { imported, .. } => Failed::Unclean {
                    e: timeout,
                    imported,
                },
                _ => Failed::Store(timeout),
            }
        });
        if cancelled {
            return Err(cancelled_copy(direction));
        }
        // A fetch fails as the session does not end cleanly.
        let outcome = outcome.map_err(|e| match e {
            Failed::Store(e) if unclean => Failed::Unclean { e, imported: 0 },
            e => e,
        });
        let (stderr, exit) = ended.unwrap_or_default();
        let end = RemoteEnd {
            command: &command,
            target,
            store: store.path(),
            direction,
            stderr,
            exit,
            stalled,
            waited_out,
        };
        outcome.map_err(|e| end.error(e))
    })?;
    Ok(report)
}

/// Connects to the other machine and starts `command` there.
async fn connect(
    options: &SshOptions,
    command: &str,
) -> CliResult<(std::sync::Arc<SshSession>, RemoteStdio)> {
    let session = SshSession::connect(options, &EventSink::discard())
        .await
        .map_err(|e| CliError::new(crate::exit::before_run(&e), e))?;
    let stdio = session
        .stdio(command, 1 << 20)
        .await
        .map_err(|e| CliError::new(crate::exit::before_run(&e), e))?;
    Ok((session, stdio))
}

/// The failure of a copy cancelled by Ctrl-C, SIGTERM or SIGHUP: what it
/// left, for the receiving store (here for `from`, there for `to`).
fn cancelled_copy(direction: &str) -> CliError {
    let left = match direction {
        "from" => "nothing was copied; this store was not changed",
        _ => "the other store keeps no partial object",
    };
    crate::exit::when_cancelled(from_promote(fruix_core::Error::Cancelled.into()), left)
}

/// The failure of a copy that took `limit` (`--timeout`) in all: a
/// timeout, a system failure, whatever the other side did meanwhile.
fn total_timeout(command: &str, target: &SshTarget, limit: Duration) -> fruix_promote::Error {
    timed_out(
        format!("copying with `{}` on {target} (--timeout)", escape::text(command)),
        limit,
        "the other side was stopped and the connection closed (one that sends a byte now and then is never idle)",
    )
}

/// A copy's [`fruix_core::Error::Timeout`]: `what` took `limit`; `then`
/// says what was done about it.
fn timed_out(what: String, limit: Duration, then: &str) -> fruix_promote::Error {
    fruix_core::Error::Timeout {
        what,
        limit,
        detail: format!("; {then}"),
        log: None,
    }
    .into()
}

/// A task aborted when this is dropped: the deadline of a copy that ended.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The failure of a copy whose other side neither sent nor took a byte for
/// `limit` while the copy waited on it: a timeout, a system failure.
fn idle_timeout(command: &str, target: &SshTarget, limit: Duration) -> fruix_promote::Error {
    timed_out(
        format!("waiting for `{}` on {target} to send or to take bytes", escape::text(command)),
        limit,
        "nothing moved for that long, so the other side was stopped and the connection closed (a slow machine may need a longer --idle-timeout)",
    )
}

/// Prints what a copy did: the objects sent, or its report as JSON.
fn print_copied(json: bool, report: &CopyReport) -> CliResult {
    // `sent` in the report (as the README names it) whichever way the
    // objects went; the summary says which.
    let crossed = match report.direction {
        "from" => "received",
        _ => "sent",
    };
    let summary = format!(
        "copied {} of {} object(s) {} {}, {} bytes {crossed}",
        report.sent.len(),
        report.objects,
        report.direction,
        report.remote,
        report.bytes
    );
    print_moved(json, report, &report.sent, summary)?;
    Ok(Status::Success)
}
