//! `fruix store serve`: serves an existing store on standard input and
//! output for `fruix store copy` on another machine (see
//! [`fruix_promote::serve`]), under an idle limit, so that a client alive for
//! SSH keepalives but hung cannot hold the store (and its garbage collector
//! lock, mid-export or mid-import) forever.

use std::io::{BufReader, BufWriter, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use fruix_promote::archive::ImportOptions;
use fruix_promote::serve::{refuse_session, serve as serve_store};
use fruix_promote::Store;
use tokio_util::io::SyncIoBridge;

use super::archive::trust;
use super::idle::{IdleLimit, PolledReader};
use crate::args::ServeArgs;
use crate::exit::{from_promote, from_promote_saying, CliError, CliResult, Status};
use crate::signals::ExitAtSignal;

/// Serves a store in an existing directory only (an empty one becomes
/// one): a mistyped `--remote-store` of a copy makes no store over there. Once the client has neither sent nor taken a
/// byte for `--idle-timeout` while the server waited on it, the request
/// under way fails (an import keeps nothing), and so does the command: a
/// timeout. Ctrl-C, SIGTERM or SIGHUP ends a wait for the store's repair
/// (exit 130); once serving, whose reads and writes may wait on the client
/// as long as the idle limit, it exits at once (what an import under way
/// published stays unregistered, for `store gc`).
pub fn serve(args: ServeArgs) -> CliResult {
    let trust = trust(&args.local.trust)?;
    let serving = ExitAtSignal::default();
    {
        let serving = serving.clone();
        crate::signals::on_cancel(move || serving.exit_if_running())?;
    }
    // A client waits for the answer to its hello: one that cannot be
    // served is told why on the protocol (typed), not only on stderr. A
    // terminal is no client: nothing is waited for.
    // A store made in an empty directory goes again unless the session
    // imported into it (a copy refused after its hello leaves none).
    let store = match Store::open_directory_tentatively(&args.local.store.store) {
        Ok(store) => store,
        Err(e) => {
            let stdin = std::io::stdin();
            if !stdin.is_terminal() {
                let answered = || refuse_session(stdin.lock(), std::io::stdout().lock(), &e);
                let _ = serving.run("cancelled; no store was served", answered);
            }
            return Err(from_promote_saying(super::UNCHANGED)(e));
        }
    };
    let options = ImportOptions::new(&trust);
    let limit = args.idle_timeout;
    let runtime = crate::runtime()?;
    let (input, output, stalled) = {
        let _context = runtime.enter();
        let system = |e| CliError::new(Status::SystemFailure, e);
        let stdin = std::io::stdin().as_fd().try_clone_to_owned();
        let stdout = tokio_file(std::io::stdout().as_fd()).map_err(system)?;
        let (output, stalled) = IdleLimit::new(stdout, limit);
        let input = PolledReader::sharing(stdin.map_err(system)?, limit, &stalled);
        (input, SyncIoBridge::new(output), stalled)
    };
    let served = serving.run(
        "cancelled; the store keeps no object of an import under way",
        || {
            serve_store(
                &store,
                BufReader::with_capacity(1 << 20, input),
                BufWriter::with_capacity(1 << 20, output),
                &options,
            )
        },
    );
    // A write to stdout that never ended cannot be cancelled (Tokio makes
    // it on a thread of its own): not waited for.
    runtime.shutdown_background();
    match served {
        Ok(()) => Ok(Status::Success),
        Err(_) if stalled.fired() => Err(from_promote(idle_timeout(limit))),
        Err(e) => Err(from_promote(e)),
    }
}

/// `fd`, duplicated, as a Tokio file, written on Tokio's blocking threads
/// (a megabyte a hand-over, as the `BufWriter` above it flushes). Not
/// `tokio::io::stdout`: that writes through std's `Stdout`, whose lock a
/// write stuck on a client that does not read would hold past the end of
/// the command, so the command's last flush would wait forever.
fn tokio_file(fd: BorrowedFd<'_>) -> std::io::Result<tokio::fs::File> {
    Ok(tokio::fs::File::from_std(std::fs::File::from(
        fd.try_clone_to_owned()?,
    )))
}

/// The failure of a `store serve` whose client neither sent nor took a byte
/// for `limit` while the server waited on it: a timeout, a system failure.
fn idle_timeout(limit: Duration) -> fruix_promote::Error {
    fruix_core::Error::Timeout {
        what: "waiting for the client of `store serve` to send or to take bytes".to_string(),
        limit,
        detail: "; nothing moved for that long, so the server stopped (an import under way keeps nothing)".to_string(),
        log: None,
    }
    .into()
}
