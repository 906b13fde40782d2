//! What `fruix` shows while it works: live stage display on a terminal,
//! plain stage lines otherwise, every log line with `--verbose`, nothing with
//! `--quiet`. Everything goes to stderr; stdout carries only the summary.
//! Log lines and warnings come from builds (possibly a hostile guest), so
//! their control characters are escaped before they reach the terminal.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fruix_core::escape;
use fruix_core::executor::Event;
use fruix_core::manifest::Progress;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::args::OutputArgs;

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    /// No terminal: one line per stage start and end.
    Plain,
    /// A live line with stage, elapsed time and the last log line.
    Terminal,
}

impl Mode {
    pub fn from_output(output: &OutputArgs) -> Mode {
        if output.quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed}] {wide_msg}")
            .expect("static template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Prints events until the channel closes.
pub async fn show_events(mut rx: UnboundedReceiver<Event>, output: OutputArgs) {
    let mode = Mode::from_output(&output);
    let mut bar: Option<ProgressBar> = None;
    while let Some(event) = rx.recv().await {
        match (&event, mode) {
            (_, Mode::Quiet) => {}
            (Event::StageStarted { stage }, Mode::Terminal) => {
                let b = bar.take().unwrap_or_else(spinner);
                b.set_prefix(stage.clone());
                b.reset_elapsed();
                b.set_message("");
                bar = Some(b);
            }
            (Event::StageStarted { stage }, Mode::Plain) => eprintln!("==> {stage}"),
            (Event::Log { line, .. }, _) => {
                let line = escape::terminal(line);
                if output.verbose {
                    match &bar {
                        Some(b) => b.println(line),
                        None => eprintln!("{line}"),
                    }
                } else if let Some(b) = &bar {
                    b.set_message(line);
                }
            }
            (Event::Progress { done, total, .. }, _) => {
                if let Some(b) = &bar {
                    b.set_message(match total {
                        Some(t) => format!("{} of {}", HumanBytes(*done), HumanBytes(*t)),
                        None => HumanBytes(*done).to_string(),
                    });
                }
            }
            (
                Event::StageFinished {
                    stage,
                    ok,
                    elapsed_ms,
                },
                _,
            ) => {
                let word = if *ok { "done" } else { "FAILED" };
                let line = format!("==> {stage} {word} in {:.1}s", *elapsed_ms as f64 / 1000.0);
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            (Event::Warning { message }, _) => {
                let line = format!("warning: {}", escape::terminal(message));
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// Runs `work` while showing files and bytes from `progress` on a terminal.
pub fn with_progress<T>(
    mode: Mode,
    label: &str,
    progress: &Progress,
    work: impl FnOnce() -> T,
) -> T {
    if mode != Mode::Terminal {
        return work();
    }
    let bar = spinner();
    bar.set_prefix(label.to_string());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_message(format!(
                    "{} files, {}",
                    progress.files.load(Ordering::Relaxed),
                    HumanBytes(progress.bytes.load(Ordering::Relaxed))
                ));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        bar.finish_and_clear();
        result
    })
}
