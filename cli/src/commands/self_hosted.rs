//! `fruix native-build self-hosted`: the guest side of the
//! `guest-self-hosted` executor.
//!
//! Reads a build request (JSON, as `fruix_core::executor::BuildRequest`
//! serializes) from stdin or `--request FILE`, runs the build driver on this
//! machine into `STATE_DIR/native-builds/RUN-ID/` through the core runner
//! (unfinished marker, cleanup, validation), signs every artifact, and
//! prints the result root's path as the last line of stdout. Stages and every
//! log line go to stderr as they happen, so the host streams them live.
//! Exit statuses are fruix's usual ones; SIGINT and SIGTERM cancel the build
//! and stop make's whole process group.

use std::io::Read;
use std::sync::Arc;

use fruix_core::executor::{run_executor, BuildRequest, EventSink};
use fruix_executors::guest::InGuestBuild;
use tokio_util::sync::CancellationToken;

use crate::args::{OutputArgs, SelfHostedArgs};
use crate::commands::build::{run_error, watch_signals};
use crate::display::show_events;
use crate::exit::{CliError, CliResult, Status};

pub async fn run(args: SelfHostedArgs) -> CliResult {
    let text = match &args.request {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("cannot read request {}: {e}", path.display())))?,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::usage(format!("cannot read the request on stdin: {e}")))?;
            text
        }
    };
    let request: BuildRequest = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("the build request is not valid JSON: {e}")))?;
    let result_root = args
        .state
        .state_dir
        .join("native-builds")
        .join(&request.run_id);
    let executor = Arc::new(InGuestBuild {
        make: args
            .make
            .unwrap_or_else(|| fruix_executors::driver::default_make().to_string()),
    });
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let (events, rx) = EventSink::channel();
    let output = OutputArgs {
        json: false,
        quiet: false,
        verbose: true,
    };
    let printer = tokio::spawn(show_events(rx, output));
    let outcome = run_executor(executor, request, &result_root, events, cancel).await;
    let _ = printer.await;
    let root = outcome.map_err(run_error)?;
    println!("{}", root.path().display());
    Ok(Status::Success)
}
