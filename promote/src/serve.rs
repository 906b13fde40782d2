//! The store-to-store protocol of `fruix store serve` and `fruix store copy`
//! (version 1), over any pair of byte streams: the client runs `fruix store
//! serve` on the other machine over SSH and speaks on its stdin and stdout,
//! like `nix-store --serve`.
//!
//! Requests and answers are single JSON lines. An answer is `{"ok":...}` or
//! `{"error":{"problem":...,"message":...}}`; an error about a name the
//! store does not hold also names it (`"absent":NAME`), so that the client
//! reports it as such (not as a failure of the other side):
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
//! closure must name each object asked for once, and an exported archive
//! must hold exactly the objects asked for ([`Client::fetch`]), or it is
//! refused and the store is not changed.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::archive::{
    export, export_order, import_for_copy, ExportReport, ImportOptions, ImportReport,
};
use crate::error::{ArchiveProblem, Error, Result};
use crate::store::Store;

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
        .map_err(|e| protocol_error(format!("cannot write: {e}")))
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
        message: match e {
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
                    let e = protocol_error(format!(
                        "the client speaks version {version}, this fruix version {VERSION}"
                    ));
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
                let mut valid = Vec::new();
                for name in names {
                    // What is no object name is in no store: not looked up.
                    if crate::verify::is_object_name(name.as_bytes()) && store.is_valid(&name)? {
                        valid.push(name);
                    }
                }
                write_json(&mut output, &Answer::Ok(Valid { valid }))?;
            }
            Request::Closure { names } => match export_order(store, &names, true) {
                Ok(names) => write_json(&mut output, &Answer::Ok(Names { names }))?,
                Err(e) => write_json(&mut output, &answer_error(&e))?,
            },
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
                output
                    .flush()
                    .map_err(|e| protocol_error(format!("cannot write: {e}")))?;
            }
        }
    }
    Ok(())
}

/// The client side of a session with a serving store.
pub struct Client<R, W> {
    input: R,
    output: W,
    /// The serving store's path.
    pub store: PathBuf,
}

/// What went wrong on the other side (the store at `store`, once known),
/// as an error here.
fn remote(e: RemoteError, store: Option<&Path>) -> Error {
    let absent = e
        .absent
        .filter(|n| crate::verify::is_object_name(n.as_bytes()));
    match (e.problem, absent, store) {
        _ if e.no_store.is_some() => Error::NoStore {
            path: e.no_store.map(PathBuf::from).unwrap_or_default(),
        },
        (Some(problem), _, _) => Error::ArchiveRefused {
            object: None,
            problem,
            message: format!(
                "the other store refused it: {}",
                fruix_core::escape::text(&e.message)
            ),
        },
        (None, Some(name), Some(store)) => Error::NotInStore {
            path: store.join(name),
            store: store.to_path_buf(),
            remote: true,
        },
        _ => fruix_core::Error::system(format!(
            "the other store: {}",
            fruix_core::escape::text(&e.message)
        ))
        .into(),
    }
}

impl<R: BufRead, W: Write> Client<R, W> {
    /// Greets the server on `input` (its output) and `output` (its input).
    /// A server with no store at the path it was given answers so:
    /// [`Error::NoStore`] with that path, which is the other machine's.
    pub fn start(mut input: R, mut output: W) -> Result<Client<R, W>> {
        write_json(&mut output, &Request::Hello { version: VERSION })?;
        let hello: Hello = Self::read_answer(&mut input, None)?;
        Ok(Client {
            input,
            output,
            store: hello.store,
        })
    }

    /// The next answer; `store` is the serving store's path, once known.
    fn read_answer<T: for<'de> Deserialize<'de>>(input: &mut R, store: Option<&Path>) -> Result<T> {
        let line = read_line(input, MAX_LINE)?.ok_or_else(|| {
            protocol_error(
                "the other side closed the connection without answering (is fruix installed there, and on PATH? see --remote-program)",
            )
        })?;
        match serde_json::from_slice::<Answer<T>>(&line) {
            Ok(Answer::Ok(value)) => Ok(value),
            Ok(Answer::Error(e)) => Err(remote(e, store)),
            Err(e) => Err(protocol_error(format!(
                "bad answer ({e}): {}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))),
        }
    }

    fn ask<T: for<'de> Deserialize<'de>>(&mut self, request: &Request) -> Result<T> {
        if let Request::Valid { names } | Request::Closure { names } | Request::Export { names } =
            request
        {
            if names.len() > MAX_NAMES {
                return Err(protocol_error(format!(
                    "{} objects in one request, more than the {MAX_NAMES} the store protocol carries (an archive's object cap); copy fewer at a time",
                    names.len()
                )));
            }
        }
        write_json(&mut self.output, request)?;
        Self::read_answer(&mut self.input, Some(&self.store))
    }

    /// Those of `names` the other store holds.
    pub fn valid(&mut self, names: &[String]) -> Result<Vec<String>> {
        let valid: Valid = self.ask(&Request::Valid {
            names: names.to_vec(),
        })?;
        Ok(valid.valid)
    }

    /// The closure of `names` in the other store, references first. An
    /// answer that names an object twice, or leaves out one of `names`, is
    /// refused ([`Error::ArchiveRefused`]); whether each is a store object
    /// name is [`Client::fetch`]'s check.
    pub fn closure(&mut self, names: &[String]) -> Result<Vec<String>> {
        let closure: Names = self.ask(&Request::Closure {
            names: names.to_vec(),
        })?;
        let mut seen = BTreeSet::new();
        let twice = closure.names.iter().find(|n| !seen.insert(n.as_str()));
        let left_out = names.iter().find(|n| !seen.contains(n.as_str()));
        let fault = match (twice, left_out) {
            (Some(name), _) => format!("names {} twice", fruix_core::escape::quoted(name)),
            (None, Some(name)) => format!("leaves out {}", fruix_core::escape::quoted(name)),
            (None, None) => return Ok(closure.names),
        };
        Err(Error::ArchiveRefused {
            object: None,
            problem: ArchiveProblem::Malformed,
            message: format!("the other store's closure of the objects asked for {fault}"),
        })
    }

    /// Sends `names` of `store` (references first) for the other store to
    /// import. Returns what was written and what the other side imported.
    pub fn send(
        &mut self,
        store: &Store,
        names: &[String],
        progress: Option<&fruix_core::manifest::Progress>,
    ) -> Result<(ExportReport, ImportReport)> {
        write_json(&mut self.output, &Request::Import)?;
        let sent = export(store, names, &mut self.output, progress)?;
        self.output
            .flush()
            .map_err(|e| protocol_error(format!("cannot write: {e}")))?;
        let imported: ImportReport = Self::read_answer(&mut self.input, Some(&self.store))?;
        Ok((sent, imported))
    }

    /// Fetches `names` from the other store (which sends references first) into
    /// `store`, checked with `options`. The archive must hold exactly
    /// `names` ([`ImportOptions::import_expected`]): one that lacks one, or
    /// holds another object, is refused, and a name that is no store object
    /// name refuses it before it is read; nothing else is ever published.
    pub fn fetch(
        &mut self,
        store: &Store,
        names: &[String],
        options: &ImportOptions<'_>,
    ) -> Result<ImportReport> {
        let expected: BTreeSet<String> = names.iter().cloned().collect();
        let _: Empty = self.ask(&Request::Export {
            names: names.to_vec(),
        })?;
        let options = ImportOptions {
            whole_input: false,
            ..*options
        };
        options.import_expected(store, &mut self.input, &expected)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use fruix_core::testing::TestDir;

    use super::*;
    use crate::archive::Trust;
    use crate::{promote_native_build_result, PromoteOptions};

    /// A store's sample objects exported, then the store moved away, so
    /// that `here` (a new, empty store at its path) lacks them all.
    struct Exported {
        dir: TestDir,
        here: Store,
        /// The sample world and kernel artifacts' names.
        world: String,
        kernel: String,
        /// The archive of `[world]`, of `[kernel]`, and of both.
        of_world: Vec<u8>,
        of_kernel: Vec<u8>,
        of_both: Vec<u8>,
    }

    impl Exported {
        fn new() -> Exported {
            let dir = TestDir::new();
            let there = Store::open(&dir.store()).unwrap();
            let root = dir.root("r1", "local", "20260405T213444Z", true);
            let report =
                promote_native_build_result(&root, &there, &PromoteOptions::default()).unwrap();
            let name = |a: &str| {
                let path = &report.artifacts[a].store_path;
                path.file_name().unwrap().to_str().unwrap().to_string()
            };
            let (world, kernel) = (name("world"), name("kernel"));
            let archive = |names: &[&String]| {
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                let mut out = Vec::new();
                export(&there, &names, &mut out, None).unwrap();
                out
            };
            let (of_world, of_kernel) = (archive(&[&world]), archive(&[&kernel]));
            let of_both = archive(&[&world, &kernel]);
            drop(there);
            std::fs::rename(dir.store(), dir.join("there")).unwrap();
            let here = Store::open(&dir.store()).unwrap();
            Exported {
                dir,
                here,
                world,
                kernel,
                of_world,
                of_kernel,
                of_both,
            }
        }

        /// A client whose server answers `hello`, then `answers` (each a
        /// whole answer: a JSON line, an export's followed by its archive).
        fn client(&self, answers: &[&[u8]]) -> Client<Cursor<Vec<u8>>, Vec<u8>> {
            let mut input = format!(
                "{{\"ok\":{{\"version\":1,\"store\":{}}}}}\n",
                serde_json::to_string(&self.dir.store()).unwrap()
            )
            .into_bytes();
            input.extend(answers.concat());
            Client::start(Cursor::new(input), Vec::new()).unwrap()
        }

        /// `names` fetched into `here` from a server answering `archive`,
        /// without signature checks.
        fn fetch(&self, names: &[&String], archive: &[u8]) -> Result<ImportReport> {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut client = self.client(&[b"{\"ok\":{}}\n", archive]);
            let trust = Trust::default();
            let options = ImportOptions::new(&trust);
            client.fetch(&self.here, &names, &options)
        }

        /// The objects in `here`, by name (its entries not starting with `.`).
        fn objects(&self) -> Vec<String> {
            let mut out: Vec<String> = std::fs::read_dir(self.here.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            out.sort();
            out
        }
    }

    /// The message of a refusal as malformed; panics on any other error.
    fn malformed(e: Error) -> String {
        match e {
            Error::ArchiveRefused {
                problem: ArchiveProblem::Malformed,
                ..
            } => e.to_string(),
            other => panic!("not refused as malformed: {other}"),
        }
    }

    /// Regression: a server could answer an export with an empty archive,
    /// or with objects not asked for (which were imported), and the fetch
    /// succeeded. The archive must hold exactly the objects asked for, or
    /// nothing is published.
    #[test]
    fn a_fetch_publishes_the_objects_asked_for_and_nothing_else() {
        let t = Exported::new();
        let store = t.dir.store().display().to_string();
        let empty = format!("fruix-archive 1\nstore {store}\nend-archive\n");
        let world = &t.world;
        let too_long = format!("{}{}", &world[..47], "x".repeat(1000));
        let cases: [(&str, Vec<&String>, &[u8], &str); 5] = [
            (
                "an empty archive",
                vec![world],
                empty.as_bytes(),
                "the object was asked for, but the archive ends without it",
            ),
            (
                "another object",
                vec![world],
                &t.of_kernel,
                "was not asked for",
            ),
            (
                "one more object",
                vec![world],
                &t.of_both,
                "was not asked for",
            ),
            (
                "one object of two",
                vec![world, &t.kernel],
                &t.of_world,
                "the archive ends without it",
            ),
            (
                "a name no object has",
                vec![world, &too_long],
                &t.of_world,
                "which is not a store object name",
            ),
        ];
        for (what, names, archive, says) in cases {
            let message = malformed(t.fetch(&names, archive).unwrap_err());
            assert!(message.contains(says), "{what}: {message}");
            assert!(t.objects().is_empty(), "{what}: {:?}", t.objects());
            assert!(!t.here.is_valid(&t.kernel).unwrap(), "{what}");
        }
        let report = t.fetch(&[world], &t.of_world).unwrap();
        assert_eq!(report.imported, [t.here.path().join(world)]);
        assert_eq!(t.objects(), std::slice::from_ref(world));
    }

    /// Regression: a closure answer was taken as it came; one that leaves
    /// out an object asked for made a copy fetch nothing and succeed.
    #[test]
    fn a_closure_that_leaves_out_an_object_asked_for_or_names_one_twice_is_refused() {
        let t = Exported::new();
        let asked = [t.world.clone()];
        let answer = |names: &[&String]| format!("{{\"ok\":{{\"names\":{names:?}}}}}\n");
        let cases = [
            (answer(&[&t.kernel]), "leaves out"),
            (answer(&[&t.world, &t.world]), "twice"),
        ];
        for (line, says) in cases {
            let mut client = t.client(&[line.as_bytes()]);
            let message = malformed(client.closure(&asked).unwrap_err());
            assert!(message.contains(says), "{line}: {message}");
        }
        let line = answer(&[&t.kernel, &t.world]);
        let mut client = t.client(&[line.as_bytes()]);
        assert_eq!(
            client.closure(&asked).unwrap(),
            [t.kernel.clone(), t.world.clone()]
        );
    }
}
