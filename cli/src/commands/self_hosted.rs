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
    let request = match read_request(&args).and_then(sign_guest_checkout) {
        // Without a job count from the host, as many as this machine has CPUs.
        Ok(request) => request.with_jobs(fruix_core::executor::default_jobs()),
        Err(message) => {
            let refused = Err(Error::InvalidRequest {
                message: message.clone(),
            });
            say(&Body::Outcome(Outcome::of(&refused)));
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
            say(&Body::Outcome(Outcome::of(&refused)));
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
    let cancel = CancellationToken::new();
    crate::signals::watch_signals(cancel.clone())?;
    let (events, mut rx) = EventSink::channel();
    let speaker = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            say(&Body::Event(event));
        }
    });
    let outcome = match result_root {
        Ok(root) => run_executor(executor, request, &root, events, cancel)
            .await
            // A request refused before anything was written leaves no root
            // (`remove_dir` removes only an empty one; a failed build's stays).
            .inspect_err(|_| {
                let _ = std::fs::remove_dir(&root);
            }),
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
    say(&Body::Outcome(Outcome::of(&outcome)));
    outcome.map_err(run_error)?;
    Ok(Status::Success)
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

/// Prints one protocol message on stdout.
fn say(body: &Body) {
    let line = Message::new(body.clone()).to_line();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
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
    use super::parse_request;

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
