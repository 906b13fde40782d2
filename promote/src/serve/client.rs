//! The client side of the store protocol (see [`super`]): what `fruix
//! store copy` speaks to the other machine's `fruix store serve`.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use super::*;
use crate::archive::{export, ExportReport, ImportOptions, ImportReport};
use crate::error::{ArchiveProblem, Error, Result, Versioned};
use crate::store::Store;

/// What the client writes its requests on (the server's input), and how it
/// learns that the server ended.
pub trait ServingSide: Write {
    /// Ends the server's input (end-of-file): no request follows.
    fn end_input(&mut self) -> io::Result<()>;
    /// Once the server's output ended, whether the server ended cleanly
    /// (a process: waited for, it exited 0); an error says how it did not.
    fn ended(&mut self) -> Result<()>;
}

impl<T: ServingSide + ?Sized> ServingSide for &mut T {
    fn end_input(&mut self) -> io::Result<()> {
        (**self).end_input()
    }
    fn ended(&mut self) -> Result<()> {
        (**self).ended()
    }
}

/// A server on the other end of a Unix socket: its end of the stream is all
/// there is of its ending.
impl ServingSide for &std::os::unix::net::UnixStream {
    fn end_input(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn ended(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A writer that remembers whether a write or flush to it failed: the
/// other side gone, rather than what was being written failing here.
struct Watched<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf);
        self.failed |= written.is_err();
        written
    }
    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.inner.flush();
        self.failed |= flushed.is_err();
        flushed
    }
}

/// The client side of a session with a serving store.
pub struct Client<R, W> {
    input: R,
    output: W,
    /// The serving store's path.
    pub store: PathBuf,
    /// Whether the other side answered a request with an error.
    answered_error: bool,
}

/// What went wrong on the other side (the store at `store`, once known),
/// as an error here. Its message, escaped over there, is shown as it came,
/// only made safe for a terminal ([`shown`]): never escaped twice.
fn remote(e: RemoteError, store: Option<&Path>) -> Error {
    let named = |n: Option<String>| n.filter(|n| crate::verify::is_object_name(n.as_bytes()));
    let absent = named(e.absent);
    let inconsistent = named(e.inconsistent);
    match (e.problem, absent, inconsistent, store) {
        _ if e.version.is_some_and(|v| v != VERSION) => Error::Version {
            of: Versioned::ServingSide,
            found: e.version.map(u64::from).unwrap_or_default(),
            place: None,
        },
        _ if e.no_store.is_some() => Error::NoStore {
            path: e.no_store.map(PathBuf::from).unwrap_or_default(),
        },
        (Some(problem), ..) => Error::ArchiveRefused {
            object: None,
            problem,
            message: format!("the other store refused it: {}", shown(&e.message)),
        },
        (None, Some(name), _, Some(store)) => Error::NotInStore {
            path: store.join(name),
            store: store.to_path_buf(),
            remote: true,
        },
        (None, None, Some(name), Some(store)) => Error::Inconsistent {
            object: store.join(name),
            message: format!("in the store on the other machine: {}", shown(&e.message)),
        },
        _ => fruix_core::Error::system(format!("the other store: {}", shown(&e.message))).into(),
    }
}

/// `message`, from the other side (which escaped what it names), safe for
/// a terminal and cut to [`fruix_core::escape::MAX_SHOWN_BYTES`].
fn shown(message: &str) -> String {
    let mut end = message.len().min(fruix_core::escape::MAX_SHOWN_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < message.len() { "…" } else { "" };
    format!("{}{cut}", fruix_core::escape::line(&message[..end]))
}

impl<R, W> Client<R, W> {
    /// Whether the other side answered a request with an error: the error
    /// a call returned is then the other side's own words (which it may
    /// also have said on its stderr), not something that failed here.
    pub fn answered_error(&self) -> bool {
        self.answered_error
    }
}

impl<R: BufRead, W: ServingSide> Client<R, W> {
    /// Greets the server on `input` (its output) and `output` (its input).
    /// A server with no store at the path it was given answers so:
    /// [`Error::NoStore`] with that path, which is the other machine's.
    pub fn start(mut input: R, mut output: W) -> Result<Client<R, W>> {
        if let Err(e) = write_json(&mut output, &Request::Hello { version: VERSION }) {
            return Err(Self::not_taken(&mut input, None, "hello", e).0);
        }
        let hello: Hello = Self::read_answer(&mut input, None, "hello")??;
        // A server that answers in another version is not spoken to.
        if hello.version != VERSION {
            return Err(Error::Version {
                of: Versioned::ServingSide,
                found: u64::from(hello.version),
                place: None,
            });
        }
        Ok(Client {
            input,
            output,
            store: hello.store,
            answered_error: false,
        })
    }

    /// The next answer, to the request `op`; `store` is the serving
    /// store's path, once known (once the hello is answered). The inner
    /// error is the other side's answer; the outer one, no answer read.
    fn read_answer<T: for<'de> Deserialize<'de>>(
        input: &mut R,
        store: Option<&Path>,
        op: &str,
    ) -> Result<Result<T>> {
        let line = read_line(input, MAX_LINE)?.ok_or_else(|| {
            protocol_error(match store {
                None => "the other side closed the connection without answering (is fruix installed there, and on PATH? see --remote-program)".to_string(),
                Some(_) => format!("the other side closed the connection in the middle of the session ({op})"),
            })
        })?;
        match serde_json::from_slice::<Answer<T>>(&line) {
            Ok(Answer::Ok(value)) => Ok(Ok(value)),
            Ok(Answer::Error(e)) => Ok(Err(remote(e, store))),
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
        if let Err(e) = write_json(&mut self.output, request) {
            return Err(self.unwritten(request.op(), e));
        }
        self.answer(request.op())
    }

    /// The next answer, to the request `op` (as [`Client::read_answer`]),
    /// noting an error answer ([`Client::answered_error`]).
    fn answer<T: for<'de> Deserialize<'de>>(&mut self, op: &str) -> Result<T> {
        let answer = Self::read_answer(&mut self.input, Some(&self.store), op)?;
        self.answered_error |= answer.is_err();
        answer
    }

    /// Those of `names` the other store holds.
    pub fn valid(&mut self, names: &[String]) -> Result<Vec<String>> {
        let valid: Valid = self.ask(&Request::Valid {
            names: names.to_vec(),
        })?;
        Ok(valid.valid)
    }

    /// The closure of `names` in the other store, references first. An
    /// answer that names what is no store object name, an object twice, or
    /// leaves out one of `names`, is refused ([`Error::ArchiveRefused`]).
    pub fn closure(&mut self, names: &[String]) -> Result<Vec<String>> {
        let closure: Names = self.ask(&Request::Closure {
            names: names.to_vec(),
        })?;
        let quoted = fruix_core::escape::quoted;
        let mut seen = BTreeSet::new();
        let not_name = closure
            .names
            .iter()
            .find(|n| !crate::verify::is_object_name(n.as_bytes()));
        let twice = closure.names.iter().find(|n| !seen.insert(n.as_str()));
        let left_out = names.iter().find(|n| !seen.contains(n.as_str()));
        let fault = match (not_name, twice, left_out) {
            (Some(name), ..) => format!("names {}, which is not a store object name", quoted(name)),
            (_, Some(name), _) => format!("names {} twice", quoted(name)),
            (.., Some(name)) => format!("leaves out {}, which was asked for", quoted(name)),
            (None, None, None) => return Ok(closure.names),
        };
        Err(Error::ArchiveRefused {
            object: None,
            problem: ArchiveProblem::Malformed,
            message: format!("the other store's closure answer {fault}"),
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
        let op = Request::Import.op();
        if let Err(e) = write_json(&mut self.output, &Request::Import) {
            return Err(self.unwritten(op, e));
        }
        let mut output = Watched {
            inner: &mut self.output,
            failed: false,
        };
        let sent = export(store, names, &mut output, progress)
            .and_then(|sent| output.flush().map_err(cannot_write).map(|()| sent));
        let sent = match sent {
            Ok(sent) => sent,
            // Not the archive's failing here: the other side's.
            Err(e) if output.failed => return Err(self.unwritten(op, e)),
            Err(e) => return Err(e),
        };
        let imported: ImportReport = self.answer(op)?;
        Ok((sent, imported))
    }

    /// What the request `op`, which the other side did not take (the
    /// write `e` failed: it ended, or stopped reading), fails with: its
    /// answer's error (why it did not), or how it ended, once read; else
    /// `e`. Whether it answered with an error goes with it.
    fn not_taken(input: &mut R, store: Option<&Path>, op: &str, e: Error) -> (Error, bool) {
        match Self::read_answer::<serde::de::IgnoredAny>(input, store, op) {
            Ok(Err(answered)) => (answered, true),
            Ok(Ok(_)) => (e, false),
            Err(ended) => (ended, false),
        }
    }

    /// [`Client::not_taken`] once the session started.
    fn unwritten(&mut self, op: &str, e: Error) -> Error {
        let (e, answered) = Self::not_taken(&mut self.input, Some(&self.store), op, e);
        self.answered_error |= answered;
        e
    }

    /// Fetches `names` from the other store (which sends references first) into
    /// `store`, checked with `options`. The archive must hold exactly
    /// `names` ([`ImportOptions::import_expected`]): one that lacks one, or
    /// holds another object, is refused, and a name that is no store object
    /// name refuses it before it is read; nothing else is ever published.
    ///
    /// Once the other store agrees to send the archive, this is the
    /// session's last request: its input is ended, the archive must be all
    /// the rest of what it sends (bytes after it refuse it, as a local
    /// import of them is refused), and it must end cleanly
    /// ([`ServingSide::ended`]), or nothing is published.
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
        self.output.end_input().map_err(cannot_write)?;
        let options = ImportOptions {
            whole_input: true,
            ..*options
        };
        let output = &mut self.output;
        options.import_expected(store, &mut self.input, &expected, || output.ended())
    }

    /// Ends the session after its last answer: ends the other side's input,
    /// then reads the rest of its output, which must be nothing, and it
    /// must end cleanly ([`ServingSide::ended`]); an error otherwise.
    pub fn finish(mut self) -> Result<()> {
        self.output.end_input().map_err(cannot_write)?;
        let more = self
            .input
            .fill_buf()
            .map_err(|e| protocol_error(format!("cannot read: {e}")))?;
        if !more.is_empty() {
            // Escaped once: not through `protocol_error`.
            let shown = String::from_utf8_lossy(&more[..more.len().min(200)]);
            return Err(fruix_core::Error::system(format!(
                "store protocol: the other side sent more after its last answer: {}",
                fruix_core::escape::quoted(&shown)
            ))
            .into());
        }
        self.output.ended()
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
        /// whole answer: a JSON line, an export's followed by its archive),
        /// then ends as `ends` says.
        fn client(&self, answers: &[&[u8]], ends: Ends) -> Client<Cursor<Vec<u8>>, Server> {
            let mut input = format!(
                "{{\"ok\":{{\"version\":1,\"store\":{}}}}}\n",
                serde_json::to_string(&self.dir.store()).unwrap()
            )
            .into_bytes();
            input.extend(answers.concat());
            let server = Server {
                requests: Vec::new(),
                takes: usize::MAX,
                input_ended: false,
                ends,
            };
            Client::start(Cursor::new(input), server).unwrap()
        }

        /// `names` fetched into `here` from a server answering `archive`,
        /// without signature checks, the server ending cleanly.
        fn fetch(&self, names: &[&String], archive: &[u8]) -> Result<ImportReport> {
            self.fetch_ending(names, archive, Ok(())).0
        }

        /// [`Exported::fetch`] from a server ending as `ends` says; and
        /// whether its input was ended.
        fn fetch_ending(
            &self,
            names: &[&String],
            archive: &[u8],
            ends: Ends,
        ) -> (Result<ImportReport>, bool) {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut client = self.client(&[b"{\"ok\":{}}\n", archive], ends);
            let trust = Trust::default();
            let options = ImportOptions::new(&trust);
            let fetched = client.fetch(&self.here, &names, &options);
            (fetched, client.output.input_ended)
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

    /// How a test's server ends: cleanly, or as the message says.
    type Ends = std::result::Result<(), &'static str>;

    /// A test's server, as the client sees it: its input (the requests
    /// written, and whether it was ended), and how it ends.
    struct Server {
        requests: Vec<u8>,
        /// How many bytes it reads before it ends: a write past them fails.
        takes: usize,
        input_ended: bool,
        ends: Ends,
    }

    impl Write for Server {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.takes.saturating_sub(self.requests.len());
            if room == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.requests.write(&buf[..buf.len().min(room)])
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ServingSide for Server {
        fn end_input(&mut self) -> io::Result<()> {
            self.input_ended = true;
            Ok(())
        }
        fn ended(&mut self) -> Result<()> {
            self.ends
                .map_err(|how| fruix_core::Error::system(how.to_string()).into())
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

    /// Regression: a server that sent the archive asked for, then more
    /// bytes, or that then failed, made a fetch succeed and publish. A
    /// fetch ends the server's input once the export is agreed; the archive
    /// must be all the rest, and the server must end cleanly, before
    /// anything is published.
    #[test]
    fn a_fetch_publishes_nothing_unless_the_archive_is_the_rest_and_the_server_ends_cleanly() {
        let t = Exported::new();
        let world = &t.world;
        let more = [t.of_world.as_slice(), b"EXTRA\n"].concat();
        let (fetched, ended) = t.fetch_ending(&[world], &more, Ok(()));
        let message = malformed(fetched.unwrap_err());
        assert!(
            message.contains("data follows the archive's last line"),
            "{message}"
        );
        assert!(ended, "the server's input was not ended");
        let (fetched, ended) = t.fetch_ending(&[world], &t.of_world, Err("exit status 9"));
        let message = fetched.unwrap_err().to_string();
        assert!(message.contains("exit status 9"), "{message}");
        assert!(ended, "the server's input was not ended");
        assert!(t.objects().is_empty(), "{:?}", t.objects());
        let (fetched, ended) = t.fetch_ending(&[world], &t.of_world, Ok(()));
        assert_eq!(fetched.unwrap().imported, [t.here.path().join(world)]);
        assert!(ended, "the server's input was not ended");
    }

    /// Regression: nothing checked that a session ended cleanly after its
    /// last answer: bytes after it, or a server that then failed, passed.
    #[test]
    fn a_session_ends_with_nothing_after_its_last_answer_and_a_clean_end() {
        let t = Exported::new();
        t.client(&[], Ok(())).finish().unwrap();
        let e = t.client(&[b"EXTRA\n"], Ok(())).finish().unwrap_err();
        assert!(
            e.to_string()
                .contains("the other side sent more after its last answer: \"EXTRA\\n\""),
            "{e}"
        );
        let e = t.client(&[], Err("exit status 9")).finish().unwrap_err();
        assert!(e.to_string().contains("exit status 9"), "{e}");
    }

    /// Regression: a closure answer was taken as it came; one that leaves
    /// out an object asked for made a copy fetch nothing and succeed.
    #[test]
    fn a_closure_that_leaves_out_an_object_asked_for_or_names_one_twice_is_refused() {
        let t = Exported::new();
        let asked = [t.world.clone()];
        let answer = |names: &[&str]| format!("{{\"ok\":{{\"names\":{names:?}}}}}\n");
        let (world, kernel) = (t.world.as_str(), t.kernel.as_str());
        let cases = [
            (answer(&[kernel]), "leaves out"),
            (answer(&[world, world]), "twice"),
            // Regression: such a name was said to be one "asked for".
            (
                answer(&["../../etc/passwd", world]),
                "the other store's closure answer names \"../../etc/passwd\", which is not a store object name",
            ),
        ];
        for (line, says) in cases {
            let mut client = t.client(&[line.as_bytes()], Ok(()));
            let message = malformed(client.closure(&asked).unwrap_err());
            assert!(message.contains(says), "{line}: {message}");
        }
        let line = answer(&[kernel, world]);
        let mut client = t.client(&[line.as_bytes()], Ok(()));
        assert_eq!(
            client.closure(&asked).unwrap(),
            [t.kernel.clone(), t.world.clone()]
        );
    }

    /// Regression: every answer missing was blamed on fruix missing over
    /// there ("is fruix installed there, and on PATH?"), even after the
    /// hello was answered. Only a hello unanswered is; later, the session
    /// ended in its middle, at the request named.
    #[test]
    fn only_an_unanswered_hello_asks_whether_fruix_is_installed_there() {
        let t = Exported::new();
        let unanswered = Client::start(Cursor::new(Vec::new()), t.client(&[], Ok(())).output);
        let e = unanswered
            .err()
            .expect("a hello unanswered fails")
            .to_string();
        assert!(e.contains("is fruix installed there"), "{e}");
        let mut client = t.client(&[], Ok(()));
        let e = client.valid(std::slice::from_ref(&t.world)).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("the other side closed the connection in the middle of the session (valid)"),
            "{e}"
        );
        assert!(!e.contains("is fruix installed"), "{e}");
    }

    /// Regression: a server of another protocol version was reported as
    /// `the other store: system failure: store protocol: the client speaks
    /// version 1, this fruix version 2` (exit 3), naming neither side nor
    /// what to do; and one that answered the hello in another version was
    /// spoken to. Both are the caller's choice of fruix (exit 2), said
    /// from the typed version.
    #[test]
    fn a_server_of_another_protocol_version_is_said_to_be_one() {
        let t = Exported::new();
        let other = VERSION + 1;
        let answered = format!("{{\"ok\":{{\"version\":{other},\"store\":\"/s\"}}}}\n");
        let refused =
            format!("{{\"error\":{{\"problem\":null,\"version\":{other},\"message\":\"no\"}}}}\n");
        for answer in [answered, refused] {
            let server = t.client(&[], Ok(())).output;
            let e = Client::start(Cursor::new(answer.into_bytes()), server)
                .err()
                .expect("another version is refused");
            assert!(
                matches!(e, Error::Version { of: Versioned::ServingSide, found, place: None } if found == u64::from(other)),
                "{e:?}"
            );
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
            let text = e.to_string();
            let said = format!("speaks store protocol version {other}, this fruix");
            assert!(text.contains(&said), "{text}");
            assert!(text.contains("--remote-program"), "{text}");
        }
    }

    /// The server's side of it: a hello of another version is answered
    /// with this side's version, typed, and the session ends (exit 2).
    #[test]
    fn a_client_of_another_protocol_version_is_answered_with_this_one() {
        let t = Exported::new();
        let other = VERSION + 1;
        let hello = format!("{{\"op\":\"hello\",\"version\":{other}}}\n");
        let mut answer = Vec::new();
        let trust = Trust::default();
        let options = ImportOptions::new(&trust);
        let e = serve(
            &t.here,
            Cursor::new(hello.into_bytes()),
            &mut answer,
            &options,
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Version { of: Versioned::CopyingSide, found, .. } if found == u64::from(other)),
            "{e:?}"
        );
        assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
        assert!(e.to_string().contains("the client"), "{e}");
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["error"]["version"], VERSION, "{answer}");
    }

    /// Regression: the other side's message, escaped there, was escaped
    /// again here (`nl\\nx` for `nl\nx`). It is shown as it came, only
    /// made safe for a terminal.
    #[test]
    fn the_other_side_s_message_is_not_escaped_twice() {
        let t = Exported::new();
        let answer =
            "{\"error\":{\"problem\":null,\"message\":\"store /s/nl\\\\nx: bad \\u001b[31m\"}}\n";
        let mut client = t.client(&[answer.as_bytes()], Ok(()));
        let e = client
            .valid(std::slice::from_ref(&t.world))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store /s/nl\\nx: bad \\033[31m"), "{e}");
        assert!(!e.contains("nl\\\\nx"), "{e}");
    }

    /// Regression: an object the other store registers but whose directory
    /// is gone failed a fetch as an archive cut short (the other side
    /// answered the export, then failed to send it). It answers the export
    /// so (`inconsistent`), and the fetch fails as `store verify` finds it
    /// (exit 4), naming the object over there.
    #[test]
    fn an_object_gone_over_there_is_reported_as_inconsistent() {
        let t = Exported::new();
        let answer = format!(
            "{{\"error\":{{\"problem\":null,\"inconsistent\":\"{}\",\"message\":\"registered, but its directory is gone\"}}}}\n",
            t.world
        );
        let mut client = t.client(&[answer.as_bytes()], Ok(()));
        let trust = Trust::default();
        let e = client
            .fetch(
                &t.here,
                std::slice::from_ref(&t.world),
                &ImportOptions::new(&trust),
            )
            .unwrap_err();
        match &e {
            Error::Inconsistent { object, .. } => assert_eq!(*object, t.dir.store().join(&t.world)),
            other => panic!("not inconsistent: {other}"),
        }
        assert!(e.to_string().contains("on the other machine"), "{e}");
        assert!(t.objects().is_empty(), "{:?}", t.objects());
    }

    /// Regression: a server that refused an import before it read all of
    /// its archive (then ended: the rest could not be written) failed the
    /// send as a failed write. Its answer is the error now, said to be its
    /// own; one that ended without answering ended the session in its
    /// middle.
    #[test]
    fn an_import_refused_before_its_archive_was_all_written_fails_as_answered() {
        let t = Exported::new();
        let there = Store::open(&t.dir.join("there")).unwrap();
        let refused = Error::ArchiveRefused {
            object: None,
            problem: ArchiveProblem::Untrusted,
            message: "it is not signed".into(),
        };
        let mut answer = serde_json::to_vec(&answer_error(&refused)).unwrap();
        answer.push(b'\n');
        let names = [t.world.clone()];
        let answers: [&[&[u8]]; 2] = [&[&answer], &[]];
        for (n, answers) in answers.into_iter().enumerate() {
            let mut client = t.client(answers, Ok(()));
            client.output.takes = client.output.requests.len() + 100;
            let e = client.send(&there, &names, None).unwrap_err();
            assert_eq!(client.answered_error(), n == 0, "{e}");
            match n {
                0 => assert!(
                    matches!(
                        e,
                        Error::ArchiveRefused {
                            problem: ArchiveProblem::Untrusted,
                            ..
                        }
                    ),
                    "{e}"
                ),
                _ => assert!(
                    e.to_string()
                        .contains("in the middle of the session (import)"),
                    "{e}"
                ),
            }
        }
    }
}
