//! Without a terminal, a stage that has printed nothing for a while says it
//! is still running (`--progress-every`): a CI log then shows a long
//! `buildworld` at work rather than hours of silence that look like a hang.
//! Long store work (promotion, source add, import, export, copy, verify,
//! gc) says how far it is at the same interval ([`every`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fruix_core::escape;
use fruix_core::executor::Event;
use indicatif::HumanBytes;

/// The default of `--progress-every`.
pub const PROGRESS_EVERY: &str = "5min";

static EVERY: OnceLock<Option<Duration>> = OnceLock::new();

/// Sets the interval from the command's `--progress-every` (or
/// `FRUIX_PROGRESS_EVERY`, which clap reads for it; `None`: never, or a
/// command without the flag), before anything asks for [`every`].
pub fn set_every(every: Option<Duration>) {
    let _ = EVERY.set(every);
}

/// How often, without a terminal, long work says how far it is: what
/// [`set_every`] set; `None` (0, or never set): never.
pub fn every() -> Option<Duration> {
    EVERY.get().copied().flatten()
}

/// The most of the build's last log line a still-running line shows.
const LAST_LINE_CHARS: usize = 160;

/// What one view (a build, or one matrix cell) has said, for its
/// still-running lines.
#[derive(Debug)]
pub struct Heartbeat {
    /// Open stages, innermost last, with when each started.
    stages: Vec<(String, Instant)>,
    /// The build's last log line, cut (escaped only when shown: it is
    /// kept for every line, and shown rarely).
    last_line: Option<String>,
    /// The innermost stage's last progress (done, total), in bytes.
    progress: Option<(u64, Option<u64>)>,
    /// When a line was last printed for this view.
    said_at: Instant,
}

impl Heartbeat {
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            stages: Vec::new(),
            last_line: None,
            progress: None,
            said_at: now,
        }
    }

    /// Stage `stage` started (and its line was printed).
    pub fn started(&mut self, stage: &str, now: Instant) {
        self.stages.push((escape::line(stage), now));
        self.progress = None;
        self.said_at = now;
    }

    /// Stage `stage` ended (and its line was printed).
    pub fn finished(&mut self, stage: &str, now: Instant) {
        let stage = escape::line(stage);
        if let Some(i) = self.stages.iter().rposition(|(s, _)| *s == stage) {
            self.stages.truncate(i);
        }
        self.progress = None;
        self.said_at = now;
    }

    /// The build printed `line` (shown only with `--verbose`: `shown`).
    pub fn log(&mut self, line: &str, shown: bool, now: Instant) {
        let kept = self.last_line.get_or_insert_with(String::new);
        kept.clear();
        match line.char_indices().nth(LAST_LINE_CHARS) {
            Some((end, _)) => {
                kept.push_str(&line[..end]);
                kept.push('…');
            }
            None => kept.push_str(line),
        }
        if shown {
            self.said_at = now;
        }
    }

    /// A line was printed for this view.
    pub fn said(&mut self, now: Instant) {
        self.said_at = now;
    }

    /// Notes `event`, which was shown as views without a terminal show
    /// events: stages and warnings printed, log lines with `--verbose`
    /// (`verbose`) only.
    pub fn saw(&mut self, event: &Event, verbose: bool, now: Instant) {
        match event {
            Event::StageStarted { stage } => self.started(stage, now),
            Event::StageFinished { stage, .. } => self.finished(stage, now),
            Event::Log { line, .. } => self.log(line, verbose, now),
            Event::Warning { .. } => self.said(now),
            Event::Progress { done, total, .. } => self.progress = Some((*done, *total)),
        }
    }

    /// The still-running line due at `now`: once a stage is open and no
    /// line was printed for `every`. Counts as printed.
    pub fn due(&mut self, now: Instant, every: Duration) -> Option<String> {
        let (stage, started) = self.stages.last()?;
        if now.duration_since(self.said_at) < every {
            return None;
        }
        self.said_at = now;
        let running = Duration::from_secs(now.duration_since(*started).as_secs());
        let progress = match self.progress {
            Some((done, Some(total))) => format!("{} of {}; ", HumanBytes(done), HumanBytes(total)),
            Some((done, None)) => format!("{} so far; ", HumanBytes(done)),
            None => String::new(),
        };
        let last = match &self.last_line {
            Some(line) => format!("last output: {}", escape::line(line)),
            None => "no output yet".to_string(),
        };
        Some(format!(
            "{stage} still running after {}; {progress}{last}",
            humantime::format_duration(running)
        ))
    }
}

/// How often to look for a due still-running line when lines are due
/// every `every`: a quarter of it (at least 250 ms), so a line comes at
/// most a quarter late.
pub fn tick(every: Duration) -> Duration {
    (every / 4).max(Duration::from_millis(250))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heartbeat made at time 0, and the time `secs` after it.
    fn at_zero() -> (Heartbeat, impl Fn(u64) -> Instant) {
        let t0 = Instant::now();
        (Heartbeat::new(t0), move |secs| {
            t0 + Duration::from_secs(secs)
        })
    }

    #[test]
    fn a_stage_silent_for_the_interval_says_it_is_still_running() {
        let every = Duration::from_secs(300);
        let (mut h, at) = at_zero();
        assert_eq!(h.due(at(1000), every), None, "no stage open");
        h.started("buildworld", at(0));
        assert_eq!(h.due(at(299), every), None);
        assert_eq!(
            h.due(at(300), every).as_deref(),
            Some("buildworld still running after 5m; no output yet")
        );
        assert_eq!(h.due(at(301), every), None, "it counts as printed");
        h.log("cc -c a.c\n\u{1b}[2J", false, at(400));
        assert_eq!(
            h.due(at(600), every).as_deref(),
            Some("buildworld still running after 10m; last output: cc -c a.c\\n\\033[2J")
        );
        // A line shown (--verbose) is output enough.
        h.log("cc -c b.c", true, at(850));
        assert_eq!(h.due(at(900), every), None);
        h.started("import", at(1000));
        h.finished("import", at(1100));
        assert_eq!(h.due(at(1399), every), None);
        assert!(h
            .due(at(1400), every)
            .unwrap()
            .starts_with("buildworld still running after 23m 20s;"));
        h.finished("buildworld", at(1500));
        assert_eq!(h.due(at(9000), every), None, "no stage open");
    }

    #[test]
    fn a_stage_s_progress_is_shown_until_the_next_stage() {
        let every = Duration::from_secs(60);
        let (mut h, at) = at_zero();
        let progress = |done, total| Event::Progress {
            stage: "source".into(),
            done,
            total,
        };
        h.saw(
            &Event::StageStarted {
                stage: "source".into(),
            },
            false,
            at(0),
        );
        h.saw(&progress(3 << 30, Some(8 << 30)), false, at(10));
        assert_eq!(
            h.due(at(60), every).as_deref(),
            Some("source still running after 1m; 3.00 GiB of 8.00 GiB; no output yet")
        );
        h.saw(&progress(5 << 30, None), false, at(70));
        assert!(h
            .due(at(120), every)
            .unwrap()
            .contains("; 5.00 GiB so far; "));
        h.saw(
            &Event::StageStarted {
                stage: "buildworld".into(),
            },
            false,
            at(130),
        );
        assert_eq!(
            h.due(at(190), every).as_deref(),
            Some("buildworld still running after 1m; no output yet")
        );
    }

    #[test]
    fn the_last_line_is_cut() {
        let (mut h, at) = at_zero();
        h.started("world", at(0));
        h.log(&"x".repeat(1000), false, at(0));
        let line = h.due(at(1), Duration::from_secs(1)).unwrap();
        assert!(line.len() < 300, "{line}");
    }
}
