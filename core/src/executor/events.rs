//! What happens during a run, as events sent to whoever displays or records it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, Notify};

use crate::bounded::Tail;
use crate::error::{LogRef, Result};

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// Something that happened during a run, in the order it happened.
///
/// Read from a guest helper (untrusted), an event has exactly its own
/// fields: an unknown one is refused, as the protocol's other parts are.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// A stage (`buildworld`, `import`, `collect`, ...) started.
    StageStarted {
        /// The stage's name; its log lines, progress and
        /// [`Event::StageFinished`] carry the same name.
        stage: String,
    },
    /// One line of output of the current stage.
    Log {
        /// The stage the line belongs to (the innermost open stage).
        stage: String,
        /// Which of the command's streams it came from.
        stream: Stream,
        /// The line without its line ending. Untrusted output: control
        /// characters are kept, so displays print it through
        /// [`escape::line`](crate::escape::line). From a command run by
        /// [`crate::process`], bytes that are not UTF-8 arrive as `\ooo`
        /// and a line over [`MAX_LINE_BYTES`](crate::process::MAX_LINE_BYTES)
        /// is cut, with a note.
        line: String,
    },
    /// Progress within a stage (`done` of `total` units, e.g. bytes).
    Progress {
        /// The stage making progress.
        stage: String,
        /// Units done so far. Bytes in practice (an import counts the bytes
        /// received), and the CLI shows them as byte counts.
        done: u64,
        /// Units in all, when known in advance.
        total: Option<u64>,
    },
    /// A stage ended.
    StageFinished {
        /// The name its [`Event::StageStarted`] gave.
        stage: String,
        /// Whether the stage's work returned `Ok`.
        ok: bool,
        /// Wall-clock time from start to end, in milliseconds.
        elapsed_ms: u64,
    },
    /// Something worth telling that did not stop the run (a failed cleanup).
    Warning {
        /// What happened, as formatted text whose embedded values are
        /// already escaped; one line (the CLI prints it through
        /// [`escape::line`](crate::escape::line), so an embedded newline
        /// shows as `\n`).
        message: String,
    },
}

/// When an event was sent: during the run's build, or during its cleanup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// The build, which cancellation stops: a stage that fails once the
    /// run is cancelled was stopped by it.
    #[default]
    Build,
    /// The run's cleanup ([`Run::cleanup`](super::Run::cleanup)), which is
    /// never cancelled: a stage of it that fails, even while the run is
    /// cancelled, failed by itself (its own timeout, its own exit status).
    Cleanup,
}

/// How many bytes of events may wait in a sink's channel before the readers
/// of untrusted output stop reading ([`EventSink::room`]).
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// What an event costs in the queue: its text, plus a fixed overhead.
fn cost(event: &Event) -> usize {
    64 + match event {
        Event::StageStarted { stage } | Event::Progress { stage, .. } => stage.len(),
        Event::Log { stage, line, .. } => stage.len() + line.len(),
        Event::StageFinished { stage, .. } => stage.len(),
        Event::Warning { message } => message.len(),
    }
}

/// The bytes waiting in a channel, shared by its sinks and its receiver.
#[derive(Debug, Default)]
struct Gauge {
    queued: AtomicUsize,
    /// Set when the receiver is gone: nobody will make room any more.
    closed: AtomicBool,
    /// Woken when the queue falls to [`MAX_QUEUED_BYTES`], or closes.
    drained: Notify,
    /// How many [`EventSink::room`] calls are waiting.
    waiting: AtomicUsize,
    /// Woken when one starts to wait.
    stalled: Notify,
}

/// One [`EventSink::room`] call waiting, counted while it lives.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.waiting.fetch_add(1, Ordering::SeqCst);
        gauge.stalled.notify_waiters();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gauge {
    fn full(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > MAX_QUEUED_BYTES && !self.closed.load(Ordering::SeqCst)
    }

    fn taken(&self, cost: usize) {
        let before = self.queued.fetch_sub(cost, Ordering::SeqCst);
        if before > MAX_QUEUED_BYTES && before - cost <= MAX_QUEUED_BYTES {
            self.drained.notify_waiters();
        }
    }
}

/// Where executors send [`Event`]s. Cheap to clone; sending never blocks.
///
/// # Contract
///
/// - Events arrive in the order they were sent, and none is lost, except
///   [`Event::Progress`] sent while the queue holds more than
///   [`MAX_QUEUED_BYTES`]: a later one says the same, better.
/// - Memory stays bounded because whoever reads output it does not control
///   (a child's pipes, a guest's stream) waits for [`EventSink::room`]
///   before reading more: the queue then holds at most
///   [`MAX_QUEUED_BYTES`] plus what one read produced, and the writer of the
///   output waits, as it would for a slow terminal.
/// - [`EventReceiver::stalled`] tells the receiver when a reader has stopped
///   for want of room (a display may say the output is paused).
/// - When the receiver is dropped, events are discarded and `room` never
///   waits.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<(mpsc::UnboundedSender<Queued>, Arc<Gauge>)>,
    /// Stamped by every event sent, when watched ([`EventSink::watched`]).
    activity: Option<Arc<Activity>>,
    /// When its events are sent ([`EventSink::in_cleanup`]).
    phase: Phase,
}

/// What a watched [`EventSink`] sent: when its last event was (how long a
/// run has been silent), and its last log lines and stage (what a run
/// stopped by a limit was doing).
#[derive(Debug)]
pub struct Activity {
    since: Instant,
    /// Milliseconds from `since` to the last event.
    last_ms: AtomicU64,
    recent: Mutex<Recent>,
}

/// The stage of the last log line or stage start, and the last log lines.
#[derive(Debug)]
struct Recent {
    stage: Option<String>,
    tail: Tail,
}

/// The most bytes of one line an [`Activity`] keeps (a longer one is cut):
/// untrusted output, held in memory.
const RECENT_LINE_BYTES: usize = 4096;

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            recent: Mutex::new(Recent {
                stage: None,
                tail: Tail::new(crate::process::TAIL_LINES),
            }),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(now, Ordering::SeqCst);
    }

    fn record(&self, event: &Event) {
        self.touch();
        let (stage, line) = match event {
            Event::Log { stage, line, .. } => (stage, Some(line)),
            Event::StageStarted { stage } => (stage, None),
            _ => return,
        };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.stage.as_deref() != Some(stage.as_str()) {
            recent.stage = Some(stage.clone());
        }
        if let Some(line) = line {
            let mut end = line.len().min(RECENT_LINE_BYTES);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            recent.tail.push(&line[..end]);
        }
    }

    /// When the last event was sent (when watching started, before any).
    pub fn last(&self) -> Instant {
        self.since + std::time::Duration::from_millis(self.last_ms.load(Ordering::SeqCst))
    }

    /// The last log lines, and the log file of the last stage in
    /// `result_root` (`logs/STAGE.log`) when one is there: a regular file,
    /// of a stage named as one path component.
    pub fn log(&self, result_root: &Path) -> LogRef {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let path = recent
            .stage
            .as_deref()
            .filter(|s| !s.is_empty() && !s.contains('/') && *s != "." && *s != "..")
            .map(|s| result_root.join("logs").join(format!("{s}.log")))
            .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()));
        LogRef {
            path,
            tail: recent.tail.lines().map(str::to_string).collect(),
        }
    }
}

/// An event in the channel, with its [`cost`] and [`Phase`].
type Queued = (Event, usize, Phase);

/// The receiving end of an [`EventSink::channel`].
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    gauge: Arc<Gauge>,
}

impl EventReceiver {
    /// The next event; `None` once every sink is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Event> {
        self.recv_with_phase().await.map(|(event, _)| event)
    }

    /// The next event and when it was sent; `None` once every sink is gone
    /// and the queue is empty.
    pub async fn recv_with_phase(&mut self) -> Option<(Event, Phase)> {
        let (event, cost, phase) = self.rx.recv().await?;
        self.gauge.taken(cost);
        Some((event, phase))
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        self.try_recv_with_phase().map(|(event, _)| event)
    }

    /// The next event and when it was sent, if one is waiting.
    pub fn try_recv_with_phase(&mut self) -> Result<(Event, Phase), mpsc::error::TryRecvError> {
        let (event, cost, phase) = self.rx.try_recv()?;
        self.gauge.taken(cost);
        Ok((event, phase))
    }

    /// Bytes of events waiting (as [`MAX_QUEUED_BYTES`] counts them).
    pub fn queued_bytes(&self) -> usize {
        self.gauge.queued.load(Ordering::SeqCst)
    }

    /// Waits until a sender waits for [`EventSink::room`]: the reader of
    /// some output has stopped reading it because this receiver is behind
    /// (at once if one already waits). Cancel-safe.
    pub async fn stalled(&self) {
        loop {
            let stalled = self.gauge.stalled.notified();
            tokio::pin!(stalled);
            // Registered before the check, so a wait that starts between
            // the two is not missed.
            stalled.as_mut().enable();
            if self.gauge.waiting.load(Ordering::SeqCst) > 0 {
                return;
            }
            stalled.await;
        }
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.gauge.closed.store(true, Ordering::SeqCst);
        self.gauge.drained.notify_waiters();
    }
}

impl EventSink {
    /// A sink and the receiver that gets its events.
    pub fn channel() -> (EventSink, EventReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauge = Arc::new(Gauge::default());
        let sink = EventSink {
            tx: Some((tx, gauge.clone())),
            activity: None,
            phase: Phase::Build,
        };
        (sink, EventReceiver { rx, gauge })
    }

    /// A sink that drops every event.
    pub fn discard() -> EventSink {
        EventSink {
            tx: None,
            activity: None,
            phase: Phase::Build,
        }
    }

    /// This sink, and when it (or a clone of it) last sent an event: how a
    /// runner tells a silent run ([`crate::executor::RunLimits::max_silent`]).
    pub fn watched(&self) -> (EventSink, Arc<Activity>) {
        let activity = Arc::new(Activity::new());
        let sink = EventSink {
            tx: self.tx.clone(),
            activity: Some(activity.clone()),
            phase: self.phase,
        };
        (sink, activity)
    }

    /// This sink, its events sent in the run's cleanup ([`Phase::Cleanup`]):
    /// the runner gives it to [`Run::cleanup`](super::Run::cleanup).
    pub fn in_cleanup(&self) -> EventSink {
        EventSink {
            phase: Phase::Cleanup,
            ..self.clone()
        }
    }

    /// Sends `event` (ignored when nobody listens any more; a progress
    /// event is dropped while the queue is full).
    pub fn emit(&self, event: Event) {
        if let Some(activity) = &self.activity {
            activity.record(&event);
        }
        let Some((tx, gauge)) = &self.tx else { return };
        if matches!(event, Event::Progress { .. }) && gauge.full() {
            return;
        }
        let cost = cost(&event);
        gauge.queued.fetch_add(cost, Ordering::SeqCst);
        if tx.send((event, cost, self.phase)).is_err() {
            gauge.queued.fetch_sub(cost, Ordering::SeqCst);
        }
    }

    /// Waits until the queue holds at most [`MAX_QUEUED_BYTES`] (at once
    /// when it does, when nobody listens, or for a discarding sink).
    /// Cancel-safe.
    pub async fn room(&self) {
        let Some((_, gauge)) = &self.tx else { return };
        loop {
            let drained = gauge.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a wake-up between the two is
            // not missed.
            drained.as_mut().enable();
            if !gauge.full() {
                return;
            }
            let _waiting = Waiting::new(gauge);
            drained.await;
        }
    }

    /// Counts as activity, sending nothing: for work that shows no event
    /// but is no silence either (a guest's progress, which the host does
    /// not show).
    pub fn alive(&self) {
        if let Some(activity) = &self.activity {
            activity.touch();
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
    /// outcome and elapsed time. A stage whose future is dropped before
    /// `work` ended (a build the runner drops once
    /// [`CANCEL_GRACE`](crate::executor::CANCEL_GRACE) has passed) ends
    /// too, failed: every stage that starts also ends.
    pub async fn stage<T, F>(&self, stage: &str, work: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        self.emit(Event::StageStarted {
            stage: stage.to_string(),
        });
        let mut open = OpenStage {
            sink: self,
            stage,
            started: Instant::now(),
            ended: false,
        };
        // Awaited, `work` is dropped before `open`: the stages it started
        // end before this one.
        let result = work.await;
        open.end(result.is_ok());
        result
    }
}

/// A stage of [`EventSink::stage`]: dropped before it ended, it ends failed.
struct OpenStage<'a> {
    sink: &'a EventSink,
    stage: &'a str,
    started: Instant,
    ended: bool,
}

impl OpenStage<'_> {
    /// Emits the stage's end, `ok` or not.
    fn end(&mut self, ok: bool) {
        self.ended = true;
        self.sink.emit(Event::StageFinished {
            stage: self.stage.to_string(),
            ok,
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }
}

impl Drop for OpenStage<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.end(false);
        }
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
