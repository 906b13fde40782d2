//! What `fruix matrix run` shows while cells run: on a terminal, one live
//! line per running cell (cell, machine, stage, elapsed time, last log line);
//! otherwise one line when a cell starts and one when it ends. Everything
//! goes to stderr.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fruix_core::escape;
use fruix_core::executor::Event;
use fruix_matrix::cell::Observer;
use fruix_matrix::runner::CellRecord;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::display::{Mode, CANCELLING};

/// The live view of a matrix run.
pub struct Live {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, String)>>,
}

impl Live {
    pub fn new(mode: Mode) -> Live {
        Live {
            mode,
            multi: MultiProgress::with_draw_target(crate::display::draw_target()),
            bars: Mutex::default(),
        }
    }

    /// Cell `id`'s attempt or the cell itself ended: its live line goes, and
    /// `line`, when given, says how.
    fn finished(&self, id: &str, line: Option<&str>) {
        if let Some((bar, _)) = self.bars.lock().expect("live view lock").remove(id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let Some(line) = line else { return };
        let line = escape::line(line);
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("==> {id}: {line}"),
            Mode::Terminal => {
                let _ = self.multi.println(format!("==> {id}: {line}"));
            }
        }
    }
}

impl Live {
    /// Says that the run is being cancelled: above the live lines, whose
    /// messages then say `cancelling`.
    pub fn cancelling(&self) {
        let bars = self.bars.lock().expect("live view lock");
        for (bar, _) in bars.values() {
            bar.set_message("cancelling");
        }
        match self.mode {
            Mode::Terminal => {
                let _ = self.multi.println(CANCELLING);
            }
            Mode::Plain | Mode::Quiet => eprintln!("{CANCELLING}"),
        }
    }
}

impl Observer for Live {
    fn attempt_started(&self, id: &str, machine: &str, attempt: u32) {
        let retry = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("==> {id}: started on {machine}{retry}"),
            Mode::Terminal => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed}] {wide_msg}")
                        .expect("static template is valid"),
                );
                bar.set_prefix(format!("{id} @{machine}{retry}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars
                    .lock()
                    .expect("live view lock")
                    .insert(id.to_string(), (bar, String::new()));
            }
        }
    }

    fn event(&self, id: &str, event: &Event) {
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
