//! What the guest helper (`fruix native-build self-hosted`) tells the host:
//! a versioned, machine-readable protocol on its stdout, one JSON object per
//! line (JSON Lines).
//!
//! ```text
//! {"v":1,"event":{"event":"stage-started","stage":"buildworld"}}
//! {"v":1,"event":{"event":"log","stage":"buildworld","stream":"stdout","line":">>> World build started"}}
//! ...
//! {"v":1,"outcome":{"result":"succeeded","result_root":"/var/lib/fruix/native-builds/R"}}
//! ```
//!
//! While it runs, the helper sends its [`Event`]s; at the end exactly one
//! [`Outcome`]. A failure says its kind ([`Failure`]) and, for a build
//! failure, the step, its status and its last log lines, so the host
//! deserialises what happened and never parses prose. The helper's stderr is
//! not part of the protocol (the host shows it as log lines). A line that is
//! not a message of [`VERSION`] is a protocol error.

use fruix_core::executor::Event;
use fruix_core::{escape, Error, Failure, LogRef};

/// The protocol version this fruix speaks.
pub const VERSION: u32 = 1;

/// The longest line [`Message::to_line`] writes. Its texts are cut (saying
/// so) so that, JSON's escapes included (a control byte takes 6 bytes), it
/// stays well under the host's default `output_max_line_bytes` (1 MiB), past
/// which the host would cut the line and the protocol break.
pub const MAX_LINE_BYTES: usize = 512 << 10;

/// The bytes kept of a log line, a warning, a failure's message.
const TEXT_BYTES: usize = 32 << 10;

/// The bytes kept of a stage or step name, a status, each of a failure's
/// last log lines; and how many of those lines are kept.
const SHORT_BYTES: usize = 2 << 10;
const TAIL_LINES: usize = 20;

/// `text` cut to at most `max` bytes (at a character boundary), with a
/// note when it was.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [cut at {max} bytes]", &text[..end])
}

/// One line of the helper's stdout: exactly `v` and one of `event` or
/// `outcome`; a line with any other key, or with both, is refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Wire")]
pub struct Message {
    /// The protocol version ([`VERSION`]).
    pub v: u32,
    /// What the message carries; flattened, so the line's other key is
    /// `event` or `outcome`.
    #[serde(flatten)]
    pub body: Body,
}

/// A message as read, before it is checked to carry exactly one body
/// (serde's `deny_unknown_fields` does not work with `flatten`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    event: Option<Event>,
    outcome: Option<Outcome>,
}

impl TryFrom<Wire> for Message {
    type Error = &'static str;

    fn try_from(wire: Wire) -> Result<Message, Self::Error> {
        let body = match (wire.event, wire.outcome) {
            (Some(event), None) => Body::Event(event),
            (None, Some(outcome)) => Body::Outcome(outcome),
            (Some(_), Some(_)) => return Err("both an event and an outcome"),
            (None, None) => return Err("neither an event nor an outcome"),
        };
        Ok(Message { v: wire.v, body })
    }
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Body {
    /// Something that happened in the guest's build.
    Event(Event),
    /// How the helper's run ended: the last message.
    Outcome(Outcome),
}

/// How the helper's run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Outcome {
    /// The result root, finished and signed, is at `result_root` in the guest.
    Succeeded {
        /// The guest result root's absolute path: the one the helper took,
        /// `STATE/native-builds/RUN-ID`, or `STATE/native-builds/RUN-ID.N`
        /// when another build had that name; the host refuses any other
        /// ([`super::GuestExecutor::check_guest_root`]).
        result_root: String,
    },
    /// The run failed.
    Failed {
        /// The kind of failure: it picks the error the host returns
        /// ([`Outcome::into_result`]).
        failure: Failure,
        /// The failed build step (build failures).
        step: Option<String>,
        /// How the step ended (`exit status 2`).
        status: Option<String>,
        /// The step's last log lines.
        tail: Vec<String>,
        /// The error as the helper would print it.
        message: String,
    },
}

impl Message {
    /// A message of this version.
    pub fn new(body: Body) -> Message {
        Message { v: VERSION, body }
    }

    /// The message as one line of JSON (no newline), of at most
    /// [`MAX_LINE_BYTES`]: longer texts are cut.
    pub fn to_line(&self) -> String {
        serde_json::to_string(&self.bounded()).expect("protocol messages serialize")
    }

    /// This message with its texts cut to their bounds.
    fn bounded(&self) -> Message {
        let short = |s: &str| bounded(s, SHORT_BYTES);
        let body = match &self.body {
            Body::Event(event) => Body::Event(match event {
                Event::StageStarted { stage } => Event::StageStarted {
                    stage: short(stage),
                },
                Event::Log {
                    stage,
                    stream,
                    line,
                } => Event::Log {
                    stage: short(stage),
                    stream: *stream,
                    line: bounded(line, TEXT_BYTES),
                },
                Event::Progress { stage, done, total } => Event::Progress {
                    stage: short(stage),
                    done: *done,
                    total: *total,
                },
                Event::StageFinished {
                    stage,
                    ok,
                    elapsed_ms,
                } => Event::StageFinished {
                    stage: short(stage),
                    ok: *ok,
                    elapsed_ms: *elapsed_ms,
                },
                Event::Warning { message } => Event::Warning {
                    message: bounded(message, TEXT_BYTES),
                },
            }),
            Body::Outcome(Outcome::Succeeded { result_root }) => {
                Body::Outcome(Outcome::Succeeded {
                    result_root: result_root.clone(),
                })
            }
            Body::Outcome(Outcome::Failed {
                failure,
                step,
                status,
                tail,
                message,
            }) => Body::Outcome(Outcome::Failed {
                failure: *failure,
                step: step.as_deref().map(short),
                status: status.as_deref().map(short),
                tail: tail[tail.len().saturating_sub(TAIL_LINES)..]
                    .iter()
                    .map(|l| short(l))
                    .collect(),
                message: bounded(message, TEXT_BYTES),
            }),
        };
        Message { v: self.v, body }
    }

    /// Parses one line, the helper's bytes as they came (never text made
    /// of them), refusing anything but a message of [`VERSION`] (another
    /// version is named as such, whatever its keys); a line that is not
    /// UTF-8 is refused as such, and quoted escaped.
    pub fn parse(line: impl AsRef<[u8]>) -> Result<Message, String> {
        #[derive(serde::Deserialize)]
        struct Versioned {
            v: u32,
        }
        let line = line.as_ref();
        let refused = |why: &dyn std::fmt::Display| {
            format!(
                "not a protocol message ({why}): {}",
                escape::bytes(line).cut_at(200)
            )
        };
        // The guest's raw bytes, never text made of them: a line that is
        // not UTF-8 is refused as such.
        if let Err(e) = std::str::from_utf8(line) {
            return Err(refused(&format_args!(
                "not UTF-8 at byte {}",
                e.valid_up_to()
            )));
        }
        match serde_json::from_slice(line) {
            Ok(Versioned { v }) if v != VERSION => return Err(format!(
                "protocol version {v} (this fruix speaks {VERSION}); install the same fruix in the guest"
            )),
            _ => {}
        }
        serde_json::from_slice(line).map_err(|e| refused(&e))
    }
}

impl Outcome {
    /// The outcome of a helper run that ended with `result`.
    pub fn of(result: &Result<String, Error>) -> Outcome {
        match result {
            Ok(root) => Outcome::Succeeded {
                result_root: root.clone(),
            },
            Err(e) => {
                let (step, status) = match e {
                    Error::Build { step, status, .. } => (Some(step.clone()), status.clone()),
                    _ => (None, None),
                };
                let tail = e.log().map(|l| l.tail.clone()).unwrap_or_default();
                Outcome::Failed {
                    failure: e.failure(),
                    step,
                    status,
                    tail,
                    message: e.to_string(),
                }
            }
        }
    }

    /// The host's error for a failed outcome, or the result root of a
    /// successful one. Guest text is escaped where the error's display does
    /// not escape it itself.
    pub fn into_result(self) -> Result<String, Error> {
        let guest = |text: &str| escape::text(text).to_string();
        let (failure, step, status, tail, message) = match self {
            Outcome::Succeeded { result_root } => return Ok(result_root),
            Outcome::Failed {
                failure,
                step,
                status,
                tail,
                message,
            } => (failure, step, status, tail, message),
        };
        Err(match failure {
            Failure::Build => Error::Build {
                step: step.unwrap_or_else(|| "guest-build".into()),
                // Escaped once, by the error's display.
                status: Some(format!(
                    "in the guest: {}",
                    status.as_deref().unwrap_or("failed")
                )),
                // Printed through the terminal escaping, as every log line is.
                log: LogRef { path: None, tail },
            },
            Failure::Cancelled => Error::Cancelled,
            Failure::Input => Error::InvalidRequest {
                message: format!("the guest helper refused the request: {}", guest(&message)),
            },
            Failure::System => Error::System {
                message: format!("the guest helper failed: {}", guest(&message)),
                log: (!tail.is_empty()).then_some(LogRef { path: None, tail }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::executor::Stream;

    #[test]
    fn messages_round_trip_as_one_line_each() {
        let messages = [
            Message::new(Body::Event(Event::Log {
                stage: "buildworld".into(),
                stream: Stream::Stdout,
                line: "a \"quoted\"\nline".into(),
            })),
            Message::new(Body::Outcome(Outcome::Succeeded {
                result_root: "/var/lib/fruix/native-builds/r1".into(),
            })),
            Message::new(Body::Outcome(Outcome::of(&Err(Error::Build {
                step: "buildkernel".into(),
                status: Some("exit status 2".into()),
                log: LogRef {
                    path: None,
                    tail: vec!["cc: error".into()],
                },
            })))),
        ];
        for m in messages {
            let line = m.to_line();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(Message::parse(&line).unwrap(), m);
        }
    }

    #[test]
    fn a_message_fits_a_protocol_line_whatever_its_texts() {
        // A control byte takes 6 bytes in JSON: long lines of them used to
        // make lines the host cut at its 1 MiB cap, breaking the protocol.
        let huge = "\u{1b}".repeat(1 << 20);
        let messages = [
            Message::new(Body::Event(Event::Log {
                stage: huge.clone(),
                stream: Stream::Stdout,
                line: huge.clone(),
            })),
            Message::new(Body::Event(Event::Warning {
                message: huge.clone(),
            })),
            Message::new(Body::Outcome(Outcome::Failed {
                failure: Failure::Build,
                step: Some(huge.clone()),
                status: Some(huge.clone()),
                tail: vec![huge.clone(); 100],
                message: huge.clone(),
            })),
        ];
        for m in messages {
            let line = m.to_line();
            assert!(line.len() <= MAX_LINE_BYTES, "{} bytes", line.len());
            let mut whole = Vec::new();
            let mut lines = fruix_core::bounded::LineSplitter::new(
                crate::ssh::DEFAULT_MAX_LINE_BYTES,
                Some(crate::ssh::LINE_CAP_KEY),
            );
            lines.push(format!("{line}\n").as_bytes(), |l| whole.push(l.to_vec()));
            assert_eq!(whole, [line.as_bytes()], "the host reads it whole");
            let back = Message::parse(&line).unwrap();
            let text = serde_json::to_string(&back).unwrap();
            assert!(text.contains("[cut at "), "it says it was cut");
        }
    }

    #[test]
    fn each_failure_kind_becomes_its_typed_error() {
        let failed = |failure| Outcome::Failed {
            failure,
            step: Some("buildworld".into()),
            status: Some("exit status 2".into()),
            tail: vec!["\u{1b}[31mred".into()],
            message: "boom".into(),
        };
        match failed(Failure::Build).into_result() {
            Err(Error::Build {
                step,
                status,
                log: LogRef { tail, .. },
            }) => {
                assert_eq!(step, "buildworld");
                assert_eq!(status.as_deref(), Some("in the guest: exit status 2"));
                assert_eq!(
                    tail,
                    ["\u{1b}[31mred"],
                    "escaped when printed, like every log line"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            failed(Failure::Cancelled).into_result(),
            Err(Error::Cancelled)
        ));
        assert!(matches!(
            failed(Failure::Input).into_result(),
            Err(Error::InvalidRequest { .. })
        ));
        assert_eq!(
            failed(Failure::System).into_result().unwrap_err().failure(),
            Failure::System
        );
    }

    /// Regression: the status was escaped here and again by the error's
    /// display (`exit \\033[31m2`).
    #[test]
    fn a_guest_s_failure_status_is_escaped_once() {
        let outcome = Outcome::Failed {
            failure: Failure::Build,
            step: Some("buildworld".into()),
            status: Some("exit \u{1b}[31m2".into()),
            tail: vec![],
            message: "x".into(),
        };
        let shown = outcome.into_result().unwrap_err().to_string();
        assert_eq!(
            shown,
            r"build step `buildworld` failed (in the guest: exit \033[31m2)"
        );
    }

    /// Regression: a line with an outcome and an event (or any other key)
    /// was taken as the outcome.
    #[test]
    fn a_line_with_keys_of_no_message_is_refused() {
        let outcome = r#""outcome":{"result":"succeeded","result_root":"/r"}"#;
        let event = r#""event":{"event":"warning","message":"w"}"#;
        for line in [
            format!("{{\"v\":1,{outcome},{event}}}"),
            format!("{{\"v\":1,{event},{outcome}}}"),
            format!("{{\"v\":1,{outcome},\"extra\":1}}"),
            r#"{"v":1,"outcome":{"result":"succeeded","result_root":"/r","extra":1}}"#.into(),
            r#"{"v":1,"outcome":{"result":"failed","failure":"build","tail":[],"message":"m","x":1}}"#.into(),
            r#"{"v":1}"#.into(),
        ] {
            let refused = Message::parse(&line).unwrap_err();
            assert!(refused.contains("not a protocol message"), "{line}: {refused}");
        }
        for line in [
            format!("{{\"v\":1,{outcome}}}"),
            format!("{{\"v\":1,{event}}}"),
        ] {
            Message::parse(&line).unwrap();
        }
        let v2 = format!("{{\"v\":2,{outcome},\"new\":1}}");
        assert!(Message::parse(&v2)
            .unwrap_err()
            .contains("protocol version 2"));
    }

    #[test]
    fn other_versions_and_prose_are_refused() {
        assert!(
            Message::parse(r#"{"v":2,"outcome":{"result":"succeeded","result_root":"/r"}}"#)
                .unwrap_err()
                .contains("protocol version 2")
        );
        assert!(Message::parse("build step `buildworld` failed")
            .unwrap_err()
            .contains("not a protocol message"));
    }

    /// Regression: the guest's raw bytes were turned into text (`\377`)
    /// before parsing, so a line that was not UTF-8 was refused for an
    /// "invalid escape" it never had, and quoted escaped twice (`\\377`).
    #[test]
    fn a_line_that_is_not_utf8_is_refused_as_such_and_quoted_escaped_once() {
        let line =
            b"{\"v\":1,\"event\":{\"event\":\"log\",\"stage\":\"s\",\"stream\":\"stdout\",\"line\":\"ok \xff\xfe\x1b[31m\"}}";
        let at = line.iter().position(|b| *b == 0xff).unwrap();
        let refused = Message::parse(line).unwrap_err();
        assert!(
            refused.starts_with(&format!(
                "not a protocol message (not UTF-8 at byte {at}): "
            )),
            "{refused}"
        );
        assert!(
            refused.ends_with(r#""line":"ok \377\376\033[31m"}}"#),
            "{refused}"
        );
    }
}
