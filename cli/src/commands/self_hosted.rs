//! `fruix native-build self-hosted`: the guest side of the
//! `guest-self-hosted` executor.
//!
//! Reads a build request (JSON, as `fruix_core::executor::BuildRequest`
//! serializes) from stdin or `--request FILE`, runs the build driver on this
//! machine through the core runner (unfinished marker, cleanup, validation)
//! into a result root of its own, `STATE_DIR/native-builds/RUN-ID/` or, when
//! another build has that name (hosts sharing this state directory may start
//! builds in the same second), the first free `RUN-ID.N/`, and signs every
//! artifact. It
//! speaks the guest helper protocol on stdout
//! ([`fruix_executors::guest::protocol`]): one JSON line per event as it
//! happens, so the host streams them live, then one outcome line with the
//! result root or the typed failure. Exit statuses are fruix's usual ones;
//! SIGINT and SIGTERM cancel the build and stop make's whole process group.
//!
//! So does its host going away (killed, its connection lost, its terminal
//! closed): sshd then closes its end of the helper's stdout. A write there
//! failing says so, and, since a make may be silent for a long while, so
//! does stdout's reader being gone, checked every second without writing
//! ([`watch_reader`]). A cancelled run's result root is removed: no host
//! imports it.

use std::io::{Read, Write};
use std::sync::Arc;

use fruix_core::executor::{run_executor, BuildRequest, EventSink};
use fruix_core::run_id::create_numbered_run_dir;
use fruix_core::Error;
use fruix_executors::guest::in_guest_build;
use fruix_executors::guest::protocol::{Body, Message, Outcome};
use tokio_util::sync::CancellationToken;

use crate::args::SelfHostedArgs;
use crate::commands::build::run_error;
use crate::exit::{CliError, CliResult, Status};

pub async fn run(args: SelfHostedArgs) -> CliResult {
    // Cancelled by SIGINT or SIGTERM, or once nobody hears the helper.
    let cancel = CancellationToken::new();
    let request = match read_request(&args).and_then(sign_guest_checkout) {
        // Without a job count from the host, as many as this machine has CPUs.
        Ok(request) => request.with_jobs(fruix_core::executor::default_jobs()),
        Err(message) => {
            let refused = Err(Error::InvalidRequest {
                message: message.clone(),
            });
            say(&Body::Outcome(Outcome::of(&refused)), &cancel);
            return Err(CliError::usage(message));
        }
    };
    // The key is read before anything is built: a build that could not be
    // signed is not started.
    let key = match args
        .sign_with
        .as_deref()
        .map(fruix_promote::sign::SecretKey::read)
    {
        Some(Err(e)) => {
            let refused = Err(Error::InvalidRequest {
                message: format!("--sign-with: {e}"),
            });
            say(&Body::Outcome(Outcome::of(&refused)), &cancel);
            return Err(CliError::usage(format!("--sign-with: {e}")));
        }
        Some(Ok(key)) => Some(key),
        None => None,
    };
    let result_root =
        create_numbered_run_dir(&args.state.state_dir.join("native-builds"), &request.run_id);
    let executor =
        Arc::new(in_guest_build(args.make.unwrap_or_else(|| {
            fruix_executors::driver::default_make().to_string()
        })));
    crate::signals::watch_signals(cancel.clone())?;
    watch_reader(std::io::stdout(), cancel.clone());
    let (events, mut rx) = EventSink::channel();
    let heard = cancel.clone();
    let speaker = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            say(&Body::Event(event), &heard);
        }
    });
    let outcome = match result_root {
        Ok(root) => run_executor(executor, request, &root, events, cancel.clone())
            .await
            .inspect_err(|e| discard(&root, e)),
        Err(e) => {
            // The speaker ends once the sink is gone.
            drop(events);
            Err(e)
        }
    }
    .and_then(|root| {
        if let (Some(key), Some(store)) = (&key, &args.sign_for_store) {
            fruix_promote::attest::sign_result(&root, store, key).map_err(|e| match e {
                fruix_promote::Error::Core(c) => c,
                other => Error::system(other.to_string()),
            })?;
        }
        Ok(root.path().to_string_lossy().into_owned())
    });
    let _ = speaker.await;
    say(&Body::Outcome(Outcome::of(&outcome)), &cancel);
    outcome.map_err(run_error)?;
    Ok(Status::Success)
}

/// Removes what a run that failed with `e` left in its result root `root`
/// that nobody wants: a cancelled run's whole root (its host is gone or
/// stopped it, and imports nothing of it), or the empty root of a request
/// refused before anything was written. A failed build's root stays, for
/// a look at what failed.
fn discard(root: &std::path::Path, e: &Error) {
    let _ = match e {
        Error::Cancelled => std::fs::remove_dir_all(root),
        _ => std::fs::remove_dir(root),
    };
}

/// How often [`watch_reader`] checks for a reader.
const READER_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Cancels `gone` once `out` has no reader left: its pipe's (or socket's)
/// other end was closed, as sshd closes it when the session that ran this
/// helper ended (its host killed, its connection lost), or a terminal hung
/// up. Nothing is written: `poll` asks for no event, and reports only a
/// hang-up or an error; every [`READER_CHECK`], since FreeBSD does not wake
/// a `poll` that asked for nothing. A file or `/dev/null` is never gone.
/// The watch, on a thread of its own, ends once `gone` is cancelled.
fn watch_reader(out: impl std::os::fd::AsFd + Send + 'static, gone: CancellationToken) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let check = Timespec::try_from(READER_CHECK).expect("a second is a timespec");
    let hung_up = PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
    let watch = move || {
        while !gone.is_cancelled() {
            let mut fds = [PollFd::new(&out, PollFlags::empty())];
            match poll(&mut fds, Some(&check)) {
                Ok(_) if fds[0].revents().intersects(hung_up) => {
                    host_gone(&gone, "its stdout has no reader");
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                // Cannot watch: a write failing still says it.
                Err(_) => return,
            }
        }
    };
    // Without the thread, a write failing still says the host is gone.
    let _ = std::thread::Builder::new()
        .name("reader".into())
        .spawn(watch);
}

/// Cancels `gone`, the build's token: nobody hears the helper any more
/// (`why`), its host is gone.
fn host_gone(gone: &CancellationToken, why: &str) {
    if !gone.is_cancelled() {
        eprintln!("fruix: nobody hears this helper any more ({why})");
        gone.cancel();
    }
}

/// A request whose source is this machine's own checkout (`--guest-source`
/// on the host: no source object was delivered) gets the checkout's tree
/// signature, which promotion records with the source: `.git` and what git
/// ignores left out, as for a source object.
fn sign_guest_checkout(mut request: BuildRequest) -> Result<BuildRequest, String> {
    if request.source_dir.is_none() && request.source.tree_signature.is_none() {
        let dir = std::path::Path::new(&request.source.path);
        let sign = || {
            let git = fruix_freebsd::checkout::inspect(dir)?;
            let exclude = |path: &[u8]| git.excludes(path);
            let options = fruix_core::manifest::WalkOptions {
                exclude: Some(&exclude),
                ..Default::default()
            };
            fruix_core::manifest::tree_signature_with(dir, &options)
        };
        let signature = sign().map_err(|e| format!("cannot sign the source checkout: {e}"))?;
        request.source.tree_signature = Some(signature.to_string());
    }
    Ok(request)
}

/// Prints one protocol message on stdout ([`say_to`]).
fn say(body: &Body, gone: &CancellationToken) {
    say_to(&mut std::io::stdout().lock(), body, gone);
}

/// Writes one protocol message on `out`. A write that fails (a broken
/// pipe: the host's session closed it) means nobody hears the helper any
/// more, and cancels `gone`, the build's token, as SIGTERM would.
fn say_to(out: &mut impl Write, body: &Body, gone: &CancellationToken) {
    let line = Message::new(body.clone()).to_line();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        host_gone(gone, &format!("writing to stdout: {e}"));
    }
}

/// The build request, from `--request FILE` or stdin.
fn read_request(args: &SelfHostedArgs) -> Result<BuildRequest, String> {
    // Bounded as every metadata file is: a request is a few kilobytes.
    let max = fruix_core::fsutil::MAX_METADATA_BYTES;
    let text = match &args.request {
        Some(path) => fruix_core::fsutil::read_file_of_kind(path, "build request")
            .map_err(|e| format!("cannot read the build request: {e}"))?,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .take(max as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read the request on stdin: {e}"))?;
            if text.len() > max {
                return Err(format!("the request on stdin is larger than {max} bytes"));
            }
            text
        }
    };
    parse_request(&text)
}

/// The build request in `text`. JSON that parses but does not fit (a
/// missing field, a value of the wrong type) is not said to be invalid
/// JSON: serde_json's category of the error decides which it is.
fn parse_request(text: &str) -> Result<BuildRequest, String> {
    use serde_json::error::Category;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => format!("the build request is JSON, but not a valid build request: {e}"),
        Category::Syntax | Category::Eof => format!("the build request is not valid JSON: {e}"),
        Category::Io => format!("cannot read the build request: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_request, say_to, watch_reader, Body};
    use fruix_core::executor::Event;
    use tokio_util::sync::CancellationToken;

    /// Regression: the helper dropped a failed write to stdout, so a build
    /// whose host was gone (its SSH session had closed the pipe) ran on to
    /// its end. A write nobody reads cancels the build's token.
    #[test]
    fn a_write_nobody_reads_cancels_the_build() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let gone = CancellationToken::new();
        let warning = Body::Event(Event::Warning {
            message: "w".into(),
        });
        say_to(&mut writer, &warning, &gone);
        assert!(!gone.is_cancelled(), "a write that was read");
        drop(reader);
        say_to(&mut writer, &warning, &gone);
        assert!(gone.is_cancelled(), "a write nobody reads");
    }

    /// Regression: a helper whose make was silent never wrote, so it never
    /// learnt that its host was gone. Its stdout's reader going away is
    /// noticed without a write.
    #[test]
    fn a_reader_gone_is_noticed_without_a_write() {
        let (reader, writer) = std::io::pipe().unwrap();
        let gone = CancellationToken::new();
        watch_reader(writer, gone.clone());
        assert!(!gone.is_cancelled(), "the reader is there");
        drop(reader);
        fruix_core::testing::wait_until("the reader's going is noticed", || gone.is_cancelled());
    }

    /// Regression: `{}`, valid JSON that is no build request, was refused
    /// as "not valid JSON".
    #[test]
    fn a_request_that_is_json_but_no_build_request_is_not_called_invalid_json() {
        let cases = [
            (
                "{}",
                "is JSON, but not a valid build request: missing field `run_id`",
            ),
            (
                "[1]",
                "is JSON, but not a valid build request: invalid type",
            ),
            ("{", "is not valid JSON: EOF while parsing"),
            ("", "is not valid JSON: EOF while parsing"),
            ("{\"run_id\" 1}", "is not valid JSON: expected `:`"),
        ];
        for (text, said) in cases {
            let message = parse_request(text).unwrap_err();
            assert!(message.contains(said), "{text:?}: {message}");
        }
    }
}
