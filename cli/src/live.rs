//! What `fruix matrix run` and `run-cell` show while cells run: on a
//! terminal, one live line per running cell (cell, machine, stage, elapsed
//! time, last log line); otherwise one line when a cell starts, when each of
//! its stages starts and ends, and when it ends, each starting `==> CELL:`.
//! With `--verbose`, every build log line too, as `CELL| LINE`; and a
//! stage that printed nothing for `--progress-every` says it is still
//! running ([`Heartbeat`]). Everything goes to stderr.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fruix_core::escape;
use fruix_core::executor::{Event, Phase};
use fruix_matrix::cell::Observer;
use fruix_matrix::runner::CellRecord;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::display::{stage_ended, warning_line, Mode, CANCELLING};
use crate::heartbeat::{every, tick, Heartbeat};

/// The live view of a matrix run.
pub struct Live {
    mode: Mode,
    /// `--verbose`: every log line, prefixed with its cell.
    verbose: bool,
    /// Set once the run is being cancelled: a stage of a build that then
    /// fails is shown `cancelled`, not `FAILED` (a stage of a cleanup,
    /// which is never cancelled, stays `FAILED`).
    cancelling: AtomicBool,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, String)>>,
    /// Without a terminal: what each running cell has said.
    heartbeats: Mutex<HashMap<String, Heartbeat>>,
}

impl Live {
    pub fn new(mode: Mode, verbose: bool) -> Live {
        Live {
            mode,
            verbose: verbose && mode != Mode::Quiet,
            cancelling: AtomicBool::new(false),
            multi: MultiProgress::with_draw_target(crate::display::draw_target()),
            bars: Mutex::default(),
            heartbeats: Mutex::default(),
        }
    }

    /// Without a terminal, says of each cell whose stage has printed
    /// nothing for [`every`] that it is still running, as long as the view
    /// lives.
    pub fn keep_saying_still_running(live: &Arc<Live>) {
        let Some(every) = every().filter(|_| live.mode == Mode::Plain) else {
            return;
        };
        let live = Arc::downgrade(live);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick(every));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(live) = live.upgrade() else { break };
                let now = Instant::now();
                let mut heartbeats = live.heartbeats.lock().expect("live view lock");
                for (id, heartbeat) in heartbeats.iter_mut() {
                    if let Some(line) = heartbeat.due(now, every) {
                        eprintln!("==> {}: {line}", escape::line(id));
                    }
                }
            }
        });
    }

    /// Prints `line` on stderr, above the live lines on a terminal.
    fn say(&self, line: String) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{line}"),
            Mode::Terminal => self.above_live_lines(&line),
        }
    }

    /// Prints `line` above the live lines, which are cleared, then drawn
    /// again below it: the line ends with its newline, so the next one,
    /// and the table once no live line is left, start a line of their own.
    /// (indicatif's `println` leaves the cursor at the end of the line it
    /// printed when no live line is left, counting on its padding to the
    /// terminal's width to wrap, which it never does two columns short of
    /// the edge, where `display::Narrowed` stops it.)
    fn above_live_lines(&self, line: &str) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    /// Cell `id`'s attempt or the cell itself ended: its live line goes, and
    /// `line`, when given, says how.
    fn finished(&self, id: &str, line: Option<&str>) {
        self.heartbeats.lock().expect("live view lock").remove(id);
        if let Some((bar, _)) = self.bars.lock().expect("live view lock").remove(id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let Some(line) = line else { return };
        self.say(format!("==> {id}: {}", escape::line(line)));
    }
}

impl Live {
    /// The line cell `id`'s `event`, sent during its build or its cleanup
    /// (`phase`), prints: a stage's start (when no live line shows it) or
    /// end, a warning, and with --verbose a log line. Once the run is
    /// being cancelled, a stage of the build that fails was stopped by it
    /// (`cancelled`); a stage of the cleanup, never cancelled, failed by
    /// itself (`FAILED`), as `fruix build` shows them.
    fn printed(&self, id: &str, event: &Event, phase: Phase) -> Option<String> {
        let id = escape::line(id);
        match (event, self.mode) {
            (_, Mode::Quiet) => None,
            (Event::StageStarted { stage }, Mode::Plain) => {
                Some(format!("==> {id}: {}", escape::line(stage)))
            }
            (
                Event::StageFinished {
                    stage,
                    ok,
                    elapsed_ms,
                },
                _,
            ) => {
                let cancelling = self.cancelling.load(Ordering::Relaxed) && phase == Phase::Build;
                let ended = stage_ended(stage, *ok, cancelling, *elapsed_ms);
                Some(format!("==> {id}: {ended}"))
            }
            (Event::Warning { message }, _) => Some(format!("==> {id}: {}", warning_line(message))),
            (Event::Log { line, .. }, _) if self.verbose => {
                Some(format!("{id}| {}", escape::line(line)))
            }
            _ => None,
        }
    }

    /// Says that the run is being cancelled: above the live lines, whose
    /// messages then say `cancelling`.
    pub fn cancelling(&self) {
        self.stopping(CANCELLING);
    }

    /// Marks the live lines `cancelling`, and says `line` above them.
    fn stopping(&self, line: &str) {
        self.cancelling.store(true, Ordering::Relaxed);
        let bars = self.bars.lock().expect("live view lock");
        for (bar, _) in bars.values() {
            bar.set_message("cancelling");
        }
        match self.mode {
            Mode::Terminal => self.above_live_lines(line),
            Mode::Plain | Mode::Quiet => eprintln!("{line}"),
        }
    }
}

impl Observer for Live {
    fn time_limit_reached(&self, limit: Duration) {
        self.stopping(&format!(
            "fruix: the run's time limit of {} was reached: cancelling its cells and cleaning up",
            humantime::format_duration(limit)
        ));
    }

    fn fail_fast(&self, id: &str) {
        self.stopping(&format!(
            "fruix: cell {} did not pass, and the matrix fails fast: cancelling its other cells and cleaning up",
            fruix_core::escape::text(id)
        ));
    }

    fn attempt_started(&self, id: &str, machine: &str, attempt: u32) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => {
                eprintln!("{}", started_line(id, machine, attempt));
                if every().is_some() {
                    let heartbeat = Heartbeat::new(Instant::now());
                    let mut heartbeats = self.heartbeats.lock().expect("live view lock");
                    heartbeats.insert(id.to_string(), heartbeat);
                }
            }
            Mode::Terminal => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed}] {wide_msg}")
                        .expect("static template is valid"),
                );
                let machine = escape::text(machine);
                bar.set_prefix(format!("{id} @{machine}{}", retry(attempt)));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars
                    .lock()
                    .expect("live view lock")
                    .insert(id.to_string(), (bar, String::new()));
            }
        }
    }

    fn event(&self, id: &str, event: &Event, phase: Phase) {
        if self.mode == Mode::Plain {
            let mut heartbeats = self.heartbeats.lock().expect("live view lock");
            if let Some(heartbeat) = heartbeats.get_mut(id) {
                heartbeat.saw(event, self.verbose, Instant::now());
            }
        }
        if let Some(line) = self.printed(id, event, phase) {
            self.say(line);
        }
        if self.mode != Mode::Terminal {
            return;
        }
        let mut bars = self.bars.lock().expect("live view lock");
        let Some((bar, stage)) = bars.get_mut(id) else {
            return;
        };
        match event {
            Event::StageStarted { stage: s } => {
                *stage = escape::line(s);
                bar.set_message(stage.clone());
            }
            Event::Log { line, .. } => bar.set_message(format!("{stage}: {}", escape::line(line))),
            _ => {}
        }
    }

    fn attempt_ended(&self, cell: &str, failure: Option<&str>) {
        self.finished(cell, failure);
    }

    fn cell_finished(&self, cell: &str, record: &CellRecord) {
        self.finished(cell, Some(&record.summary()));
    }
}

/// ` (attempt N)` after a retried attempt's machine; nothing for the first.
fn retry(attempt: u32) -> String {
    if attempt > 1 {
        format!(" (attempt {attempt})")
    } else {
        String::new()
    }
}

/// The plain live view's line for cell `id`'s attempt `attempt` starting
/// on `machine` (a machines file's name, escaped).
fn started_line(id: &str, machine: &str, attempt: u32) -> String {
    let machine = escape::text(machine);
    format!("==> {id}: started on {machine}{}", retry(attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of stage `stage`, failed, after 1.5 s.
    fn failed(stage: &str) -> Event {
        Event::StageFinished {
            stage: stage.into(),
            ok: false,
            elapsed_ms: 1500,
        }
    }

    /// Regression: once the run was cancelled, every stage that then failed
    /// was shown `cancelled`, a cleanup's too, though cleanup is never
    /// cancelled: it failed by itself, and is shown so, as `fruix build`
    /// shows it.
    #[test]
    fn a_cleanup_stage_failing_after_a_cancel_is_failed_not_cancelled() {
        for mode in [Mode::Plain, Mode::Terminal] {
            let live = Live::new(mode, false);
            let line = |event: &Event, phase| live.printed("c1", event, phase);
            assert_eq!(
                line(&failed("buildworld"), Phase::Build).as_deref(),
                Some("==> c1: buildworld FAILED in 1.5s")
            );
            live.cancelling();
            assert_eq!(
                line(&failed("buildworld"), Phase::Build).as_deref(),
                Some("==> c1: buildworld cancelled in 1.5s")
            );
            assert_eq!(
                line(&failed("cleanup"), Phase::Cleanup).as_deref(),
                Some("==> c1: cleanup FAILED in 1.5s")
            );
        }
        let quiet = Live::new(Mode::Quiet, true);
        assert_eq!(
            quiet.printed("c1", &failed("cleanup"), Phase::Cleanup),
            None
        );
    }

    /// Regression: a machine name's format characters (U+202E reverses
    /// what follows it) were printed raw in `==> CELL: started on MACHINE`.
    #[test]
    fn a_machine_name_is_escaped_where_a_cell_starts() {
        assert_eq!(
            started_line("c1", "m\u{202e}1", 2),
            "==> c1: started on m\\342\\200\\2561 (attempt 2)"
        );
        assert_eq!(started_line("c1", "m1", 1), "==> c1: started on m1");
    }
}
