//! What happens during a run, as events sent to whoever displays or records it.

use std::time::Instant;

use tokio::sync::mpsc;

use crate::error::Result;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Something that happened during a run, in the order it happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A stage (`buildworld`, `import`, `collect`, ...) started.
    StageStarted { stage: String },
    /// One line of output of the current stage.
    Log {
        stage: String,
        stream: Stream,
        line: String,
    },
    /// Progress within a stage (`done` of `total` units, e.g. bytes).
    Progress {
        stage: String,
        done: u64,
        total: Option<u64>,
    },
    /// A stage ended.
    StageFinished {
        stage: String,
        ok: bool,
        elapsed_ms: u64,
    },
    /// Something worth telling that did not stop the run (a failed cleanup).
    Warning { message: String },
}

/// Where executors send [`Event`]s. Cheap to clone; sending never blocks.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl EventSink {
    /// A sink and the receiver that gets its events.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink { tx: Some(tx) }, rx)
    }

    /// A sink that drops every event.
    pub fn discard() -> EventSink {
        EventSink { tx: None }
    }

    /// Sends `event` (ignored when nobody listens any more).
    pub fn emit(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// Sends a log line of `stage`.
    pub fn log(&self, stage: &str, stream: Stream, line: impl Into<String>) {
        self.emit(Event::Log {
            stage: stage.to_string(),
            stream,
            line: line.into(),
        });
    }

    /// Sends a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning {
            message: message.into(),
        });
    }

    /// Runs `work` as stage `stage`: emits its start, then its end with the
    /// outcome and elapsed time.
    pub async fn stage<T, F>(&self, stage: &str, work: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.emit(Event::StageStarted {
            stage: stage.to_string(),
        });
        let started = Instant::now();
        let result = work.await;
        self.emit(Event::StageFinished {
            stage: stage.to_string(),
            ok: result.is_ok(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        result
    }
}
