//! The store-to-store protocol of `fruix store serve` and `fruix store copy`
//! (version 1), over any pair of byte streams: the client runs `fruix store
//! serve` on the other machine over SSH and speaks on its stdin and stdout,
//! like `nix-store --serve`.
//!
//! Requests and answers are single JSON lines. An answer is `{"ok":...}` or
//! `{"error":{"problem":...,"message":...}}`; an error about a name the
//! store does not hold also names it (`"absent":NAME`), and so does one
//! about an object it registers but whose directory is gone
//! (`"inconsistent":NAME`), so that the client reports it as such (not as
//! a failure of the other side):
//!
//! | request | answer |
//! | --- | --- |
//! | `{"op":"hello","version":1}` | `{"ok":{"version":1,"store":PATH}}` |
//! | `{"op":"valid","names":[...]}` | `{"ok":{"valid":[...]}}`: those the store holds |
//! | `{"op":"closure","names":[...]}` | `{"ok":{"names":[...]}}`: their closure, references first |
//! | `{"op":"import"}`, then an archive | `{"ok":IMPORT_REPORT}` once the archive is imported |
//! | `{"op":"export","names":[...]}` | `{"ok":{}}`, then the archive |
//!
//! The server imports with its own trusted keys, never the client's: a
//! store decides whom it trusts. An import refused, or an archive that
//! cannot be written, ends the session (the stream is no longer in step),
//! and so does a bad request, answered with its error.
//!
//! A client whose hello names another protocol version is answered with
//! an error that carries the server's (`"version":N`), and the session
//! ends: each side then says which versions met ([`Error::Version`]).
//!
//! A server that cannot serve (no store at its path: a mistyped
//! `--remote-store`) answers the hello with an error that says so
//! (`"no_store":PATH`), and ends ([`refuse_session`]): the client reports
//! that, typed, rather than a connection closed unanswered.
//!
//! Every message is bounded: a line is at most [`MAX_LINE`] bytes, and a
//! list of names in a request or an answer at most [`MAX_NAMES`] long, so
//! that neither side holds more than a few times [`MAX_LINE`] for one
//! message, whatever the other sends. A line read is parsed straight into
//! its request or answer, with no intermediate copy of its names.
//!
//! The client trusts the server's answers no more than its archives: a
//! closure must name each object asked for once, and only store objects,
//! and an exported archive must hold exactly the objects asked for
//! ([`Client::fetch`]), or it is refused and the store is not changed.
//!
//! The client ends a session by ending the server's input after its last
//! request ([`ServingSide::end_input`]); the server then ends, sending
//! nothing after its last answer (or archive), and exits 0. A session that
//! does not end so fails ([`Client::finish`]); when its last request was an
//! export, before anything of the archive is published.

use std::io::{self, BufRead, Write};
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::archive::{export, export_order, import_for_copy, ImportOptions};
use crate::error::{ArchiveProblem, Error, Result, Versioned};
use crate::store::Store;

mod client;

pub use client::{Client, ServingSide};

/// The protocol's version.
pub const VERSION: u32 = 1;

/// Longest line of the protocol, a request's or an answer's: a list of
/// some 700,000 names (an object's name is 48 to 255 bytes, most under
/// 100) fits.
pub const MAX_LINE: u64 = 64 << 20;

/// Most names one request or answer may list: an archive's object cap
/// ([`ArchiveLimits::max_objects`](crate::archive::ArchiveLimits)), since no
/// copy moves more objects than one archive holds. A longer list is refused
/// as it is read, so that a line of short names (`""`, three bytes each)
/// cannot make the reader hold tens of millions of them.
pub const MAX_NAMES: usize = 1_000_000;

/// A request, as the client writes it (the server reads a [`RawRequest`]).
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Request {
    Hello { version: u32 },
    Valid { names: Vec<String> },
    Closure { names: Vec<String> },
    Import,
    Export { names: Vec<String> },
}

impl Request {
    /// The request's `op`, as the protocol spells it.
    fn op(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Valid { .. } => "valid",
            Request::Closure { .. } => "closure",
            Request::Import => "import",
            Request::Export { .. } => "export",
        }
    }
}

/// A request as the server reads it: a plain struct, parsed as it is read
/// (an internally tagged enum would first copy the whole request into
/// serde's buffer), then checked into a [`Request`] ([`parse_request`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    op: Op,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default, deserialize_with = "some_capped")]
    names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Op {
    Hello,
    Valid,
    Closure,
    Import,
    Export,
}

/// A request line read by the server, checked: each operation with exactly
/// its fields.
fn parse_request(line: &[u8]) -> Result<Request> {
    let raw: RawRequest =
        serde_json::from_slice(line).map_err(|e| protocol_error(format!("bad request: {e}")))?;
    Ok(match (raw.op, raw.version, raw.names) {
        (Op::Hello, Some(version), None) => Request::Hello { version },
        (Op::Valid, None, Some(names)) => Request::Valid { names },
        (Op::Closure, None, Some(names)) => Request::Closure { names },
        (Op::Export, None, Some(names)) => Request::Export { names },
        (Op::Import, None, None) => Request::Import,
        (op, ..) => {
            let (op, takes) = match op {
                Op::Hello => ("hello", "`version`"),
                Op::Import => ("import", "no other field"),
                Op::Valid => ("valid", "`names`"),
                Op::Closure => ("closure", "`names`"),
                Op::Export => ("export", "`names`"),
            };
            return Err(protocol_error(format!(
                "bad request: `{op}` takes {takes}, and nothing else"
            )));
        }
    })
}

/// Deserialises a list of at most [`MAX_NAMES`] items, refusing a longer
/// one as soon as its next item is read (for the name lists of requests
/// and answers, and an import report's paths).
pub(crate) fn capped<'de, D, T>(deserializer: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Capped<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_NAMES} names")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX_NAMES {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_NAMES} names in one message, the most the store protocol carries (an archive's object cap)"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Capped(PhantomData))
}

/// [`capped`], for an optional field.
fn some_capped<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    capped(deserializer).map(Some)
}

/// A failure as the protocol carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteError {
    /// Why an archive was refused, when that is what failed.
    pub problem: Option<ArchiveProblem>,
    /// The object asked for that the serving store does not hold, when
    /// that is what failed (absent from answers of older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<String>,
    /// The path the serving side was given as its store, where it has no
    /// store (an error it answers the hello with, then ends: see
    /// [`refuse_session`]); absent from answers of older servers. As
    /// [`fruix_core::escape::path_text`] spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_store: Option<String>,
    /// The object the serving store registers but finds inconsistent (its
    /// directory gone), when that is what failed: the client reports it
    /// as `store verify` does, not as a failure of the other side. Absent
    /// from answers of older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconsistent: Option<String>,
    /// The store protocol version the serving side speaks, when it refused
    /// the client's hello for speaking another ([`Error::Version`]): the
    /// client says so, typed. Absent from answers of older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The serving side's error message. It comes from the other machine:
    /// escape it before showing it.
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Answer<T> {
    Ok(T),
    Error(RemoteError),
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    version: u32,
    /// The serving store's path; one that is not UTF-8 is sent escaped
    /// ([`fruix_core::escape::path_text`]): the client only shows it.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    store: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Names {
    #[serde(deserialize_with = "capped")]
    names: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Valid {
    #[serde(deserialize_with = "capped")]
    valid: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Empty {}

fn protocol_error(message: impl Into<String>) -> Error {
    fruix_core::Error::system(format!(
        "store protocol: {}",
        fruix_core::escape::text(&message.into())
    ))
    .into()
}

/// Reads one line (at most `max` bytes); `None` at the end of the stream.
fn read_line(input: &mut impl BufRead, max: u64) -> Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = io::Read::take(&mut *input, max + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| protocol_error(format!("cannot read: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(protocol_error(if n as u64 > max {
            format!("a line is longer than {max} bytes")
        } else {
            "the connection ended in the middle of a line".to_string()
        }));
    }
    Ok(Some(line))
}

fn write_json(out: &mut impl Write, value: &impl Serialize) -> Result<()> {
    let mut line = serde_json::to_vec(value).expect("protocol messages serialise");
    line.push(b'\n');
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(cannot_write)
}

fn cannot_write(e: io::Error) -> Error {
    protocol_error(format!("cannot write: {e}"))
}

fn answer_error(e: &Error) -> Answer<Empty> {
    Answer::Error(RemoteError {
        problem: match e {
            Error::ArchiveRefused { problem, .. } => Some(*problem),
            _ => None,
        },
        absent: match e {
            Error::NotInStore { path, .. } | Error::NotValid { path } => {
                path.file_name().map(|n| n.to_string_lossy().into_owned())
            }
            _ => None,
        },
        no_store: match e {
            Error::NoStore { path } => Some(fruix_core::escape::path_text(path).into_owned()),
            // No store there either (a regular file where it is named).
            Error::StoreNotDirectory(not) => {
                Some(fruix_core::escape::path_text(&not.path).into_owned())
            }
            _ => None,
        },
        inconsistent: match e {
            Error::Inconsistent { object, .. } => {
                object.file_name().map(|n| n.to_string_lossy().into_owned())
            }
            _ => None,
        },
        version: match e {
            Error::Version {
                of: Versioned::CopyingSide,
                ..
            } => Some(VERSION),
            _ => None,
        },
        message: match e {
            // The client names the object, in the store over there.
            Error::Inconsistent { message, .. } => message.clone(),
            // The reason alone: the client says it was refused, and that
            // the store was not changed, once (see `remote`).
            Error::ArchiveRefused {
                object: Some(object),
                message,
                ..
            } => format!("at object {}: {message}", fruix_core::escape::text(object)),
            Error::ArchiveRefused { message, .. } => message.clone(),
            e => e.to_string(),
        },
    })
}

/// Answers the hello of a client that cannot be served with `e` (why the
/// server cannot serve: [`Error::NoStore`] for a store path with no
/// store): reads one line from `input`, and when it is a hello, writes the
/// error on `output`, so that the client reports it, typed, rather than a
/// connection closed unanswered (see the module docs). Anything else, or
/// nothing, is not answered. The caller then ends.
pub fn refuse_session(mut input: impl BufRead, mut output: impl Write, e: &Error) -> Result<()> {
    let Some(line) = read_line(&mut input, MAX_HELLO)? else {
        return Ok(());
    };
    match parse_request(&line) {
        Ok(Request::Hello { .. }) => write_json(&mut output, &answer_error(e)),
        _ => Ok(()),
    }
}

/// Longest hello [`refuse_session`] reads (one is some 30 bytes).
const MAX_HELLO: u64 = 4 << 10;

/// Serves `store` on `input` and `output` until the client closes `input`
/// (see the module docs); imports check archives with `options`. An
/// import's refusals speak to the user of the `store copy --to` on the
/// other side (the trusted keys that count are this store's).
pub fn serve(
    store: &Store,
    mut input: impl BufRead,
    mut output: impl Write,
    options: &ImportOptions<'_>,
) -> Result<()> {
    let options = ImportOptions {
        whole_input: false,
        ..*options
    };
    // What this session answered is there, kept from collections until it
    // ends (see `answered`).
    let mut roots = None;
    while let Some(line) = read_line(&mut input, MAX_LINE)? {
        // The line is dropped once parsed: only the request is held.
        let request = match parse_request(&line) {
            Ok(request) => request,
            Err(e) => {
                write_json(&mut output, &answer_error(&e))?;
                return Err(e);
            }
        };
        drop(line);
        match request {
            Request::Hello { version } => {
                if version != VERSION {
                    let e = Error::Version {
                        of: Versioned::CopyingSide,
                        found: u64::from(version),
                        place: None,
                    };
                    write_json(&mut output, &answer_error(&e))?;
                    return Err(e);
                }
                write_json(
                    &mut output,
                    &Answer::Ok(Hello {
                        version: VERSION,
                        store: store.path().to_path_buf(),
                    }),
                )?;
            }
            Request::Valid { names } => {
                let valid = answered(store, &mut roots, || {
                    let mut valid = Vec::new();
                    for name in names {
                        // What is no object name is in no store: not looked up.
                        if crate::verify::is_object_name(name.as_bytes())
                            && store.is_valid(&name)?
                        {
                            valid.push(name);
                        }
                    }
                    Ok(valid)
                })?;
                write_json(&mut output, &Answer::Ok(Valid { valid }))?;
            }
            Request::Closure { names } => {
                match answered(store, &mut roots, || export_order(store, &names, true)) {
                    Ok(names) => write_json(&mut output, &Answer::Ok(Names { names }))?,
                    Err(e) => write_json(&mut output, &answer_error(&e))?,
                }
            }
            Request::Import => match import_for_copy(store, &mut input, &options) {
                Ok(report) => write_json(&mut output, &Answer::Ok(report))?,
                Err(e) => {
                    write_json(&mut output, &answer_error(&e))?;
                    return Err(e);
                }
            },
            Request::Export { names } => {
                // References first, whatever order the client asked in.
                let order = match export_order(store, &names, false) {
                    Ok(order) => {
                        write_json(&mut output, &Answer::Ok(Empty {}))?;
                        order
                    }
                    Err(e) => {
                        write_json(&mut output, &answer_error(&e))?;
                        continue;
                    }
                };
                export(store, &order, &mut output, options.progress)?;
                output.flush().map_err(cannot_write)?;
            }
        }
    }
    Ok(())
}

/// The objects `find` names (what a `valid` or `closure` answer says the
/// store holds), found under the GC lock (shared) and added to this
/// session's temporary roots (`roots`, made at the first): a collection
/// (or `store delete`) between the answer and the import or export that
/// relies on it keeps them, as Nix's daemon keeps the paths it answers
/// for. A store this user may not write (a `--from` export of another
/// user's store) keeps no roots: its objects are then as a `store export`
/// finds them ([`Error::RemovedMeanwhile`]).
fn answered(
    store: &Store,
    roots: &mut Option<crate::temp_roots::TempRoots>,
    find: impl FnOnce() -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let _gc = store.gc_lock(false)?;
    let names = find()?;
    if names.is_empty() {
        return Ok(names);
    }
    let made = match roots.take() {
        Some(made) => Some(made),
        None => match crate::temp_roots::TempRoots::create(store.path()) {
            Ok(made) => Some(made),
            Err(Error::StoreNotWritable { .. }) => None,
            Err(e) => return Err(e),
        },
    };
    if let Some(made) = made {
        made.add_all(&names)?;
        *roots = Some(made);
    }
    Ok(names)
}
