//! What `fruix` shows while it works: live stage display on a terminal,
//! plain stage lines otherwise, every log line with `--verbose`, nothing with
//! `--quiet`. Everything goes to stderr; stdout carries only the summary.
//! Log lines, stage names and warnings come from builds (possibly a hostile
//! guest), so each is escaped to one line before it reaches the terminal.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use console::Term;
use fruix_core::escape;
use fruix_core::executor::{Event, EventReceiver, Phase};
use fruix_core::manifest::Progress;
use fruix_promote::store::LockWait;
use fruix_promote::warning::Warning;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use tokio_util::sync::CancellationToken;

use crate::args::OutputArgs;
use crate::exit::{CliError, CliResult, Status};
use crate::heartbeat::{every, tick, Heartbeat};

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
        Mode::unless_quiet(output.quiet)
    }

    /// [`Mode::Quiet`] when `quiet`, else as standard error is: a
    /// terminal that can redraw a line (`TERM` set, and not `dumb`: an
    /// editor's shell buffer, say) gets the live line, any other stderr
    /// plain lines.
    pub fn unless_quiet(quiet: bool) -> Mode {
        let redraws = std::env::var_os("TERM").is_some_and(|t| !t.is_empty() && t != "dumb");
        if quiet {
            Mode::Quiet
        } else if redraws && std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

/// Standard error as the live lines see it: two columns narrower than the
/// terminal. A live line then never reaches the last column, so the
/// terminal's echo of `^C` stays on the live line (which is cleared next)
/// instead of wrapping below it and leaving the line stale.
#[derive(Debug)]
struct Narrowed(Term);

impl TermLike for Narrowed {
    fn width(&self) -> u16 {
        self.0.size().1.saturating_sub(2).max(1)
    }
    fn height(&self) -> u16 {
        self.0.size().0
    }
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Where live lines are drawn: standard error, [`Narrowed`].
pub fn draw_target() -> ProgressDrawTarget {
    ProgressDrawTarget::term_like_with_hz(Box::new(Narrowed(Term::stderr())), 20)
}

/// The live line of a stage: `template`'s, with `stage` as its prefix.
/// Both are set before the line is first drawn (by its steady tick), so it
/// never shows without its stage's name.
fn spinner(template: &str, stage: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, draw_target());
    bar.set_style(ProgressStyle::with_template(template).expect("static template is valid"));
    bar.set_prefix(stage);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The live line of a build's stage: its name, its elapsed time and its
/// last log line (or bytes so far).
const STAGE: &str = "{spinner} {prefix:.bold} [{elapsed}] {wide_msg}";

/// What is said when Ctrl-C, SIGTERM or SIGHUP arrives.
pub const CANCELLING: &str = "fruix: cancelling: stopping the build and cleaning up";

/// Prints `line` above the live line when there is one (so the live line
/// stays whole), on stderr otherwise.
fn say(bar: &Option<ProgressBar>, line: String) {
    match bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}

/// Prints events until the channel closes. On a terminal, the stage
/// running shows on a live line, which goes when it ends; every stage ends
/// with a line of its own (`==> STAGE done in 1.5s`), as the work fruix
/// does itself does ([`with_progress`]). Without a terminal, a stage's
/// start and end are each a line. Once `cancel` fires, says so
/// above the live line, and a stage of the build that then fails is shown
/// `cancelled`, not `FAILED` (a stage of the cleanup, which is never
/// cancelled, stays `FAILED`); the live line is cleared at the end, so no
/// stale line (or the terminal's `^C`) stays on screen. Without a
/// terminal, a stage that printed nothing for [`every`] says it is still
/// running ([`Heartbeat`]). Warnings are fruix's: `fruix: warning: ...`.
/// Returns the warnings (the first [`KEPT_WARNINGS`]), for a failure's JSON
/// error (`warnings`): what a cleanup left, said only there otherwise.
pub async fn show_events(
    mut rx: EventReceiver,
    output: OutputArgs,
    cancel: CancellationToken,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let mode = Mode::from_output(&output);
    // On a terminal: the live line, and the stage it shows.
    let mut bar: Option<ProgressBar> = None;
    let mut shown = String::new();
    let mut told = false;
    let mut heartbeat = Heartbeat::new(Instant::now());
    let every = every().filter(|_| mode == Mode::Plain);
    // (A disabled ticker is never polled; its period does not matter.)
    let mut ticker = tokio::time::interval(every.map_or(Duration::from_secs(3600), tick));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (event, phase) = tokio::select! {
            event = rx.recv_with_phase() => match event {
                Some(event) => event,
                None => break,
            },
            _ = ticker.tick(), if every.is_some() => {
                let due = every.and_then(|every| heartbeat.due(Instant::now(), every));
                if let Some(line) = due {
                    eprintln!("==> {line}");
                }
                continue;
            }
            () = cancel.cancelled(), if !told => {
                told = true;
                heartbeat.said(Instant::now());
                say(&bar, CANCELLING.to_string());
                if let Some(b) = &bar {
                    b.set_message("cancelling");
                }
                continue;
            }
        };
        if every.is_some() {
            heartbeat.saw(&event, output.verbose, Instant::now());
        }
        match (&event, mode) {
            (_, Mode::Quiet) => {}
            (Event::StageStarted { stage }, Mode::Terminal) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                shown = stage.clone();
                bar = Some(spinner(STAGE, escape::line(stage)));
                set_live(bar.as_ref());
            }
            (Event::StageStarted { stage }, Mode::Plain) => eprintln!("{}", started_line(stage)),
            (Event::Log { line, .. }, _) => {
                let line = escape::line(line);
                if output.verbose {
                    say(&bar, line);
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
                // Cleanup is never cancelled: a stage of it failed by itself.
                let cancelling = cancel.is_cancelled() && phase == Phase::Build;
                let ended = stage_ended(stage, *ok, cancelling, *elapsed_ms);
                // The live line of a stage that ended goes with it: no
                // stale stage stays on screen until the next one starts.
                if *stage == shown {
                    if let Some(b) = bar.take() {
                        set_live(None);
                        b.finish_and_clear();
                    }
                }
                say(&bar, format!("==> {ended}"));
            }
            (Event::Warning { message }, _) => {
                say(&bar, format!("fruix: {}", warning_line(message)));
                if warnings.len() < KEPT_WARNINGS {
                    warnings.push(message.clone());
                }
            }
        }
    }
    if let Some(b) = bar {
        set_live(None);
        b.finish_and_clear();
    }
    warnings
}

/// How many of a build's warnings its JSON error repeats.
pub const KEPT_WARNINGS: usize = 64;

/// Says on stderr what a command waits for while a lock of the store is
/// held: set for every store the process opens ([`set_lock_notice`], in
/// `main`), so that a wait is not taken for a hang. On stderr, which `store
/// copy` shows of a remote `store serve` when it fails.
///
/// [`set_lock_notice`]: fruix_promote::store::set_lock_notice
pub fn lock_wait(waits_for: LockWait, lock: &Path) {
    let queued;
    let what = match waits_for {
        LockWait::Repair => {
            "the store's repair (`store verify --repair`), or another command's sweep of what killed commands left, to end"
        }
        LockWait::Collection => "the garbage collection (or `store delete`) under way to end",
        LockWait::QueuedCollection => {
            queued = format!(
                "the garbage collection (or `store delete`) waiting for the store's users to go first (at most {} s)",
                fruix_promote::store::TURNSTILE_PATIENCE.as_secs()
            );
            &queued
        }
        LockWait::Users => {
            "the promotions, imports, exports and verifications using the store to end"
        }
        LockWait::SameObject => {
            "another promotion, import or `source add` of the same object to end"
        }
        LockWait::Registry => {
            queued = format!(
                "the store's registry, held by another process's transaction, to be free (at most {} s)",
                fruix_promote::db::BUSY_TIMEOUT.as_secs()
            );
            &queued
        }
    };
    notice(&format!(
        "fruix: waiting for {what} ({} is held)",
        escape::path(lock)
    ));
}

/// Says on stderr a warning of the store's (a leftover it removes): set for
/// the process ([`set_warning_hook`], in `main`), above the live line.
///
/// [`set_warning_hook`]: fruix_promote::warning::set_warning_hook
pub fn store_warning(warning: &Warning) {
    // Its text is one line already, its paths escaped.
    notice(&format!("fruix: warning: {warning}"));
}

/// The live line on screen, if any ([`with_progress`]'s, or a build
/// stage's in [`show_events`]): a notice prints above it.
static LIVE: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

/// Makes `bar` the live line a notice prints above (none: `None`).
fn set_live(bar: Option<&ProgressBar>) {
    *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = bar.cloned();
}

/// Prints `line` on stderr, as a line of its own: above the live line when
/// one shows (cleared, then drawn again below it), so the two never mix.
pub fn notice(line: &str) {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match live {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// `path` as a JSON string ([`escape::path_text`]): its text when it is
/// UTF-8, else escaped as fruix prints paths. serde cannot serialise such a
/// path at all.
pub fn json_path(path: &Path) -> serde_json::Value {
    escape::path_text(path).into()
}

/// `value` as JSON. A report holding a path that is not UTF-8 cannot be
/// serialised: that is a system failure (3), never a panic.
pub fn to_json(value: &impl serde::Serialize) -> CliResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| {
        CliError::new(
            Status::SystemFailure,
            anyhow::anyhow!(
                "cannot show the result as JSON: {e}; run the command without --json to see its paths escaped"
            ),
        )
    })
}

/// Prints `value` as one line of JSON on stdout ([`to_json`]).
pub fn print_json(value: &impl serde::Serialize) -> CliResult<()> {
    println!("{}", to_json(value)?);
    Ok(())
}

/// The line saying that `stage` started, on one line whatever its name holds.
fn started_line(stage: &str) -> String {
    format!("==> {}", escape::line(stage))
}

/// How `stage` ended, after `elapsed_ms`: `STAGE done in 1.5s`, `FAILED`
/// in place of `done` when it failed, `cancelled` when it failed once the
/// run was being cancelled.
pub(crate) fn stage_ended(stage: &str, ok: bool, cancelling: bool, elapsed_ms: u64) -> String {
    let word = match (ok, cancelling) {
        (true, _) => "done",
        (false, true) => "cancelled",
        (false, false) => "FAILED",
    };
    format!(
        "{} {word} in {:.1}s",
        escape::line(stage),
        elapsed_ms as f64 / 1000.0
    )
}

/// A warning, on one line: a newline in it cannot start a line that looks
/// like fruix's own.
pub(crate) fn warning_line(message: &str) -> String {
    format!("warning: {}", escape::line(message))
}

/// The live line of [`with_progress`] while the totals are unknown: files
/// and bytes so far, and the rate.
const COUNTING: &str =
    "{spinner} {prefix:.bold} [{elapsed}] {bytes} ({binary_bytes_per_sec}) {wide_msg}";
/// Once the totals are known: a bar, bytes of the total, rate and time left.
const MEASURED: &str =
    "{prefix:.bold} [{elapsed}] {wide_bar} {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta} left) {msg}";

/// The message beside the bar: items (`unit`: files, objects) so far, of
/// how many when known, and what the work does once its reading is done.
fn count_message(done: u64, total: Option<u64>, unit: &str, phase: Option<&str>) -> String {
    let counts = match total {
        Some(t) => format!("{done}/{t} {unit}"),
        None => format!("{done} {unit}"),
    };
    match phase {
        Some(phase) => format!("{counts}; {phase}"),
        None => counts,
    }
}

/// Measures what a piece of work will read: (items, bytes), or `None`
/// when it cannot tell; it should stop once its flag is set.
pub type Totals<'a> = dyn Fn(&AtomicBool) -> Option<(u64, u64)> + Sync + 'a;

/// Runs `work` while showing, on a terminal, the items (files, or `unit`)
/// and bytes `progress` counts, with their rate. `totals`, when given,
/// measures what `work` will read (items, bytes) beside it; once known, the
/// line becomes a bar with the time left. Its flag is set when `work` ends:
/// it should stop then. The live line goes when `work` ends, and a line
/// says how it ended, as a build's stage's does: `==> LABEL done in 1.5s`
/// (`FAILED`, or `cancelled` once `progress` was cancelled). Without a
/// terminal, a line with the counts so far every [`every`].
pub fn with_progress<T, E>(
    mode: Mode,
    (label, unit): (&str, &str),
    progress: &Progress,
    totals: Option<&Totals<'_>>,
    work: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    match (mode, every()) {
        (Mode::Terminal, _) => {}
        (Mode::Plain, Some(every)) => {
            return with_progress_lines((label, unit), progress, every, work)
        }
        _ => return work(),
    }
    let started = Instant::now();
    let bar = spinner(COUNTING, label.to_string());
    set_live(Some(&bar));
    let measured = std::sync::OnceLock::new();
    let measuring_stop = AtomicBool::new(false);
    // Dropped when the work is done, which ends the refresh at once.
    let (done, refresh) = std::sync::mpsc::channel::<()>();
    let result = std::thread::scope(|s| {
        // A thread that cannot start (a limit on threads) leaves the line
        // without its total, or not refreshed: the work runs all the same.
        if let Some(totals) = totals {
            let _ = std::thread::Builder::new().spawn_scoped(s, || {
                if let Some(t) = totals(&measuring_stop) {
                    let _ = measured.set(t);
                }
            });
        }
        let (bar, measured) = (&bar, &measured);
        let _ = std::thread::Builder::new().spawn_scoped(s, move || {
            let mut bar_shown = false;
            loop {
                let total = measured.get().copied();
                if let (Some((_, bytes)), false) = (total, bar_shown) {
                    bar.set_length(bytes);
                    bar.set_style(
                        ProgressStyle::with_template(MEASURED).expect("static template is valid"),
                    );
                    bar_shown = true;
                }
                bar.set_position(progress.bytes.load(Ordering::Relaxed));
                bar.set_message(count_message(
                    progress.files.load(Ordering::Relaxed),
                    total.map(|(files, _)| files),
                    unit,
                    progress.phase(),
                ));
                match refresh.recv_timeout(Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        });
        let result = work();
        measuring_stop.store(true, Ordering::Relaxed);
        drop(done);
        result
    });
    // Cleared once nothing updates it any more.
    set_live(None);
    bar.finish_and_clear();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let ended = stage_ended(label, result.is_ok(), progress.is_cancelled(), elapsed_ms);
    eprintln!("==> {ended}");
    result
}

/// [`with_progress`] without a terminal: every `every`, a line with the
/// items and bytes so far and the rate, until `work` ends.
fn with_progress_lines<T>(
    (label, unit): (&str, &str),
    progress: &Progress,
    every: Duration,
    work: impl FnOnce() -> T,
) -> T {
    let started = Instant::now();
    let (done, ended) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        // No thread for them (a limit on threads): no progress lines.
        let _ = std::thread::Builder::new().spawn_scoped(s, move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = ended.recv_timeout(every) {
                eprintln!(
                    "==> {}",
                    progress_line(label, unit, progress, started.elapsed())
                );
            }
        });
        let result = work();
        drop(done);
        result
    })
}

/// `LABEL: N UNIT, BYTES so far (RATE), after ELAPSED`.
fn progress_line(label: &str, unit: &str, progress: &Progress, elapsed: Duration) -> String {
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let files = progress.files.load(Ordering::Relaxed);
    let rate = (bytes as f64 / elapsed.as_secs_f64().max(0.001)) as u64;
    format!(
        "{label}: {}, {} so far ({}/s), after {}{}",
        count_message(files, None, unit, None),
        HumanBytes(bytes),
        HumanBytes(rate),
        humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
        progress
            .phase()
            .map(|p| format!("; {p}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_says_the_counts_the_rate_and_the_time() {
        let progress = Progress::default();
        progress.files.store(1200, Ordering::Relaxed);
        progress.bytes.store(3 << 30, Ordering::Relaxed);
        assert_eq!(
            progress_line("import", "files", &progress, Duration::from_secs(64)),
            "import: 1200 files, 3.00 GiB so far (48.00 MiB/s), after 1m 4s"
        );
        progress.set_phase("building the source object");
        assert_eq!(
            progress_line("source", "files", &progress, Duration::from_secs(64)),
            "source: 1200 files, 3.00 GiB so far (48.00 MiB/s), after 1m 4s; \
             building the source object"
        );
    }

    #[test]
    fn the_templates_are_valid_and_the_message_counts_files() {
        for template in [COUNTING, MEASURED] {
            ProgressStyle::with_template(template).unwrap();
        }
        assert_eq!(count_message(3, None, "files", None), "3 files");
        assert_eq!(count_message(3, Some(10), "objects", None), "3/10 objects");
        assert_eq!(
            count_message(3, Some(3), "files", Some("building objects")),
            "3/3 files; building objects"
        );
    }

    #[test]
    fn a_failed_stage_shows_as_cancelled_once_the_run_is_cancelled() {
        assert_eq!(stage_ended("world", true, true, 1500), "world done in 1.5s");
        assert_eq!(
            stage_ended("world", false, false, 20),
            "world FAILED in 0.0s"
        );
        assert_eq!(
            stage_ended("world", false, true, 0),
            "world cancelled in 0.0s"
        );
    }

    #[test]
    fn stage_names_and_warnings_show_on_one_line_without_control_characters() {
        let hostile = "world\nfruix: error: forged\u{1b}[2J";
        for line in [
            started_line(hostile),
            stage_ended(hostile, false, false, 1500),
            warning_line(hostile),
        ] {
            assert!(!line.contains('\n'), "{line:?}");
            assert!(!line.contains('\u{1b}'), "{line:?}");
            assert!(
                line.contains("world\\nfruix: error: forged\\033[2J"),
                "{line:?}"
            );
        }
    }
}
