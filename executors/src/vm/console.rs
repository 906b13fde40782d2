//! A guest's live console file, bounded: the QEMU driver has QEMU write its
//! serial console to a socket, and a thread of fruix's copies what comes
//! into the console file ([`BoundedConsole`]), which never grows past its
//! cap. A guest that floods its console (a panic loop, a chatty build)
//! cannot fill this machine's disk; what is kept is the console's *last*
//! part, which is what boot failures quote ([`super::console_tail`]) and
//! what the cleanup keeps in `RESULT_ROOT/logs`.
//!
//! Past the cap, the file is rewritten to hold a line saying how many
//! bytes were cut, then the last half of the cap (starting at a line's
//! start where one begins near there), and grows again from there: it is
//! always one file, at most the cap, and replaced by a rename, so a reader
//! never sees a half-written one. The guest's bytes are copied as they
//! come, never interpreted; whoever shows them escapes them.
//!
//! A write that fails (a full disk) loses those bytes, never the copying,
//! but it is not forgotten: the console remembers the first failure, typed
//! ([`io::ErrorKind`]), and its last bytes in memory, so that a boot
//! failure says the console could not be saved, and quotes its last lines
//! from there, instead of saying the guest printed nothing
//! ([`ConsoleSaving::lost`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fruix_core::{Error, Result};

/// The most a guest's live console file holds: 16 MiB (after a cut, it
/// holds the last 8 MiB and a line saying so).
pub const LIVE_CONSOLE_MAX_BYTES: u64 = 16 << 20;

/// The smallest cap a console takes (a smaller one is raised to it): room
/// for the line saying what was cut, and for some of the console.
pub const MIN_CONSOLE_MAX_BYTES: u64 = 4 << 10;

/// How far into the part kept at a cut a line's start is looked for: a
/// line longer than this is cut where the part begins.
const LINE_START_SEARCH: u64 = 4 << 10;

/// How much of a console's end is kept in memory, to quote when its file
/// could not be written: as much as a console's tail is read from its file
/// ([`super::console_tail`]).
const IN_MEMORY_BYTES: usize = 64 << 10;

/// How many of a console's last lines a [`ConsoleLost`] holds.
pub const LOST_LINES: usize = 20;

/// How a console's file is being written, shared by the console and
/// whoever asks (the driver, while the copying thread writes): the first
/// write that failed, and the console's last bytes.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSaving(Arc<Mutex<Saving>>);

#[derive(Debug, Default)]
struct Saving {
    /// The first write that failed: its error's kind and message.
    failure: Option<(io::ErrorKind, String)>,
    /// The console's last [`IN_MEMORY_BYTES`] bytes.
    last: std::collections::VecDeque<u8>,
}

/// A console whose file lost bytes: why, and what the guest printed last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLost {
    /// The kind of the first write's error (`StorageFull` for a full
    /// disk).
    pub kind: io::ErrorKind,
    /// Its message (`No space left on device (os error 28)`).
    pub error: String,
    /// The console's last lines (at most [`LOST_LINES`]; blank ones
    /// left out), not escaped.
    pub last_lines: Vec<String>,
}

impl ConsoleSaving {
    /// Notes that `bytes` came, and whether writing them failed.
    fn record(&self, bytes: &[u8], written: &io::Result<()>) {
        let mut saving = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(IN_MEMORY_BYTES)..];
        let over = (saving.last.len() + bytes.len()).saturating_sub(IN_MEMORY_BYTES);
        saving.last.drain(..over);
        saving.last.extend(bytes);
        if let (Err(e), None) = (written, &saving.failure) {
            saving.failure = Some((e.kind(), e.to_string()));
        }
    }

    /// `None` while every write of the console went to its file; else the
    /// first failure and the console's last lines, from memory.
    pub fn lost(&self) -> Option<ConsoleLost> {
        let saving = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (kind, error) = saving.failure.clone()?;
        let (front, back) = saving.last.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.trim().is_empty())
            .collect();
        Some(ConsoleLost {
            kind,
            error,
            last_lines: lines[lines.len().saturating_sub(LOST_LINES)..].to_vec(),
        })
    }
}

impl ConsoleLost {
    /// `; its console could not be saved: ERROR`, then `; it ends with:`
    /// and its last lines, escaped, or `; the guest printed nothing`: what
    /// a boot failure says of such a console.
    pub fn quote(&self) -> String {
        let said = format!(
            "; its console could not be saved: {}",
            fruix_core::escape::text(&self.error)
        );
        if self.last_lines.is_empty() {
            return said + "; the guest printed nothing";
        }
        let lines: Vec<String> = self
            .last_lines
            .iter()
            .map(|l| format!("  {}", fruix_core::escape::text(l)))
            .collect();
        format!("{said}; it ends with:\n{}", lines.join("\n"))
    }
}

/// A console file that never grows past its cap (see the module docs).
#[derive(Debug)]
pub struct BoundedConsole {
    path: PathBuf,
    /// The file at `path`, written at its end.
    file: File,
    /// Its length.
    len: u64,
    max_bytes: u64,
    /// How many bytes were given to it in all.
    received: u64,
    /// Whether its writes failed, and its last bytes.
    saving: ConsoleSaving,
}

impl BoundedConsole {
    /// A new, empty console file at `path` (one there is replaced) that
    /// never holds more than `max_bytes` (at least
    /// [`MIN_CONSOLE_MAX_BYTES`]).
    pub fn create(path: &Path, max_bytes: u64) -> Result<Self> {
        let file = read_write(path).map_err(|e| Error::io("create", path, e))?;
        Ok(BoundedConsole {
            path: path.to_path_buf(),
            file,
            len: 0,
            max_bytes: max_bytes.max(MIN_CONSOLE_MAX_BYTES),
            received: 0,
            saving: ConsoleSaving::default(),
        })
    }

    /// How its file is being written: a handle that stays current while a
    /// console copy writes it.
    pub fn saving(&self) -> ConsoleSaving {
        self.saving.clone()
    }

    /// Appends `bytes`, first cutting the file to its last part when they
    /// would take it past the cap. On an error the bytes may be lost (they
    /// are kept in memory, see [`ConsoleSaving`]), and the file is still
    /// within its cap.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let written = self.write_file(bytes);
        self.saving.record(bytes, &written);
        written
    }

    fn write_file(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.received = self.received.saturating_add(bytes.len() as u64);
        if self.len.saturating_add(bytes.len() as u64) > self.max_bytes {
            return self.cut_and_write(bytes);
        }
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Part of it may have been written: the next write cuts
                // the file when the length is not known.
                self.len = self.file.metadata().map_or(self.max_bytes, |m| m.len());
                Err(e)
            }
        }
    }

    /// Replaces the file with a line saying how much was cut, then its last
    /// part and `bytes`: half the cap in all, starting after the first
    /// newline of the file's part when one is near its start.
    fn cut_and_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let keep = self.max_bytes / 2;
        let new = &bytes[bytes.len().saturating_sub(keep as usize)..];
        let mut old_start = self.len - (keep - new.len() as u64).min(self.len);
        let search = (self.len - old_start).min(LINE_START_SEARCH);
        if search > 0 {
            let mut head = vec![0; search as usize];
            self.file.read_exact_at(&mut head, old_start)?;
            if let Some(newline) = head.iter().position(|b| *b == b'\n') {
                old_start += newline as u64 + 1;
            }
        }
        let kept = self.len - old_start + new.len() as u64;
        let marker = format!(
            "[fruix: {} earlier bytes of this console were cut: only its last part is kept, at most {} bytes]\n",
            self.received - kept,
            self.max_bytes
        );
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".new");
        let staged = self.path.with_file_name(name);
        let written = (|| {
            let mut out = read_write(&staged)?;
            out.write_all(marker.as_bytes())?;
            copy_range(&self.file, old_start..self.len, &mut out)?;
            out.write_all(new)?;
            std::fs::rename(&staged, &self.path)?;
            Ok(out)
        })();
        match written {
            Ok(out) => {
                self.file = out;
                self.len = marker.len() as u64 + kept;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                Err(e)
            }
        }
    }
}

/// A new, empty file at `path` (one there is replaced) to write, and to
/// read back what to keep at a cut.
fn read_write(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Copies the bytes `range` of `from` to the end of `to`, reading at their
/// offsets (the file position of `from` is left alone).
fn copy_range(from: &File, range: std::ops::Range<u64>, to: &mut File) -> io::Result<()> {
    let mut chunk = vec![0; 64 << 10];
    let mut at = range.start;
    while at < range.end {
        let want = (range.end - at).min(chunk.len() as u64) as usize;
        let n = from.read_at(&mut chunk[..want], at)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        to.write_all(&chunk[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// The copying of one emulator's console socket into a [`BoundedConsole`],
/// in a thread of its own (independent of any async runtime's being
/// polled, and never joined: only [`ConsoleCopy::finish`] waits for it,
/// within its limit): it ends when the socket does, that is when the
/// emulator has exited, and hands the console back. Given up on (past
/// `finish`'s limit, or dropped), it is ended by shutting the socket
/// down, which wakes its read: a process still holding the other end (an
/// emulator's child that outlived it) cannot keep it, or fruix, waiting.
#[derive(Debug)]
pub(super) struct ConsoleCopy {
    /// The copy's socket (another handle on it), to shut it down.
    socket: UnixStream,
    /// The console, once the copying has ended.
    done: tokio::sync::oneshot::Receiver<BoundedConsole>,
}

impl ConsoleCopy {
    /// Starts copying what comes on `from` into `console`.
    pub(super) fn start(mut from: UnixStream, mut console: BoundedConsole) -> Result<Self> {
        let cannot =
            |e: io::Error| Error::system(format!("cannot start copying a guest's console: {e}"));
        let socket = from.try_clone().map_err(cannot)?;
        let (tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("fruix-vm-console".into())
            .spawn(move || {
                let mut chunk = vec![0; 64 << 10];
                loop {
                    match from.read(&mut chunk) {
                        Ok(0) => break,
                        // A write that fails loses those bytes, never the
                        // copying: the emulator's writes must not block
                        // (the console remembers it: `ConsoleSaving`).
                        Ok(n) => drop(console.write(&chunk[..n])),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                // Nobody may be waiting any more.
                let _ = tx.send(console);
            })
            .map_err(cannot)?;
        Ok(ConsoleCopy { socket, done })
    }

    /// Waits, at most `limit`, for the copying to end (its emulator gone):
    /// the console. Past `limit`, the socket is shut down, which ends the
    /// copying, and the console is what came until then (waited for, at
    /// most `limit` again, for a write under way); `None` when even that
    /// does not end in time (the thread ends by itself, never waited for).
    pub(super) async fn finish(mut self, limit: Duration) -> Option<BoundedConsole> {
        if let Ok(done) = tokio::time::timeout(limit, &mut self.done).await {
            return done.ok();
        }
        self.stop();
        tokio::time::timeout(limit, &mut self.done).await.ok()?.ok()
    }

    /// Ends the copying: its read is woken, and sees the socket's end.
    fn stop(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for ConsoleCopy {
    /// Ends the copying, if it has not ended.
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines `line 000000\n`, `line 000001\n`, ... up to `bytes` bytes.
    fn numbered_lines(bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < bytes {
            out.extend_from_slice(format!("line {i:06}\n").as_bytes());
            i += 1;
        }
        out
    }

    /// The file's cut line (if any) and the guest's bytes after it.
    fn split_marker(file: &[u8]) -> (Option<String>, &[u8]) {
        if !file.starts_with(b"[fruix: ") {
            return (None, file);
        }
        let end = file.iter().position(|b| *b == b'\n').unwrap() + 1;
        let marker = String::from_utf8(file[..end].to_vec()).unwrap();
        (Some(marker), &file[end..])
    }

    /// The number of bytes a cut line says were cut.
    fn cut_bytes(marker: &str) -> u64 {
        let rest = marker.strip_prefix("[fruix: ").unwrap();
        rest.split(' ').next().unwrap().parse().unwrap()
    }

    /// Regression: QEMU wrote the console straight into the file, which
    /// grew for as long as the guest wrote (a panic loop filled the disk).
    #[test]
    fn a_console_fed_far_more_than_its_cap_stays_within_it_and_ends_with_the_last_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let cap = 8 << 10;
        let mut console = BoundedConsole::create(&path, cap).unwrap();
        let stream = numbered_lines(100 * cap as usize);
        // Chunks of odd sizes, as reads from a socket come.
        let mut fed = 0;
        for (i, size) in [1usize, 7, 300, 4093, 64, 2048].iter().cycle().enumerate() {
            if fed == stream.len() {
                break;
            }
            let end = (fed + size + i % 3).min(stream.len());
            console.write(&stream[fed..end]).unwrap();
            fed = end;
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= cap, "{len} bytes after {fed}");
        }
        let file = std::fs::read(&path).unwrap();
        let (marker, kept) = split_marker(&file);
        let marker = marker.expect("a line says what was cut");
        assert!(stream.ends_with(kept), "the file ends with the last bytes");
        // Half the cap, less at most a line (12 bytes) to start at one.
        assert!(kept.len() as u64 >= cap / 2 - 12, "{}", kept.len());
        assert!(kept.starts_with(b"line "), "cut at a line's start");
        assert_eq!(cut_bytes(&marker), (stream.len() - kept.len()) as u64);
        assert!(!dir.path().join("console.log.new").exists());
    }

    #[test]
    fn a_console_within_its_cap_is_the_bytes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut console = BoundedConsole::create(&path, 8 << 10).unwrap();
        let stream = numbered_lines(8 << 10);
        let stream = &stream[..8 << 10];
        console.write(&stream[..100]).unwrap();
        console.write(&stream[100..]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), stream);
    }

    /// Bytes without newlines, and one write larger than the cap, still
    /// keep the console's last part (half the cap), not less.
    #[test]
    fn a_console_without_lines_or_written_at_once_keeps_its_last_half() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let cap = MIN_CONSOLE_MAX_BYTES;
        let mut console = BoundedConsole::create(&path, 1).unwrap();
        let junk: Vec<u8> = (0..10 * cap).map(|i| b'a' + (i % 26) as u8).collect();
        for chunk in junk.chunks(1000) {
            console.write(chunk).unwrap();
        }
        let file = std::fs::read(&path).unwrap();
        assert!(file.len() as u64 <= cap, "the cap is raised to the least");
        let (marker, kept) = split_marker(&file);
        assert!(junk.ends_with(kept));
        assert!(kept.len() as u64 >= cap / 2, "{}", kept.len());
        assert_eq!(
            cut_bytes(&marker.unwrap()),
            junk.len() as u64 - kept.len() as u64
        );
        let mut huge = numbered_lines(5 * cap as usize);
        huge.extend_from_slice(b"the last line\n");
        console.write(&huge).unwrap();
        let file = std::fs::read(&path).unwrap();
        let (_, kept) = split_marker(&file);
        assert!(file.len() as u64 <= cap && kept.len() as u64 == cap / 2);
        assert!(huge.ends_with(kept), "the write's own last part");
    }

    /// The copying thread takes everything written on the socket, and ends
    /// with it, handing the console back.
    #[tokio::test]
    async fn a_console_copy_ends_with_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let console = BoundedConsole::create(&path, 8 << 10).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let copy = ConsoleCopy::start(ours, console).unwrap();
        let stream = numbered_lines(1 << 20);
        theirs.write_all(&stream).unwrap();
        drop(theirs);
        let console = copy.finish(Duration::from_secs(30)).await;
        assert_eq!(console.unwrap().received, stream.len() as u64);
        let file = std::fs::read(&path).unwrap();
        assert!(file.len() <= 8 << 10);
        assert!(stream.ends_with(split_marker(&file).1));
    }

    /// Regression: a process that outlived the emulator (a wrapper's
    /// child) kept the socket open: the copying thread read on for ever,
    /// and the runtime waited, at its end, for the blocking task that
    /// joined it, so fruix never exited. Past its limit, the copying is
    /// ended, keeping what came, and nothing is left to wait for.
    #[test]
    fn a_console_copy_whose_socket_stays_open_is_ended_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let console = BoundedConsole::create(&path, 8 << 10).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let copy = ConsoleCopy::start(ours, console).unwrap();
        theirs.write_all(b"the last line\n").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let console = runtime.block_on(copy.finish(Duration::from_millis(200)));
        // Dropping the runtime waits for its blocking tasks: none are left.
        let (tx, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(runtime);
            let _ = tx.send(());
        });
        assert!(
            dropped.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the runtime waits for the copying"
        );
        assert_eq!(console.unwrap().received, 14);
        assert_eq!(std::fs::read(&path).unwrap(), b"the last line\n");
        drop(theirs);
    }

    /// A console on `/dev/full`, where every write fails as on a full
    /// disk.
    fn on_a_full_disk() -> BoundedConsole {
        BoundedConsole::create(Path::new("/dev/full"), 8 << 10).unwrap()
    }

    /// Regression: on a full disk the console's writes failed unseen, and
    /// a boot failure said the guest's console was empty. The failure is
    /// remembered, typed, with the console's last lines, from memory.
    #[test]
    fn a_console_that_cannot_be_written_remembers_why_and_its_last_lines() {
        let mut console = on_a_full_disk();
        let saving = console.saving();
        assert_eq!(saving.lost(), None, "nothing lost yet");
        let error = console.write(b"booting\r\n\nlogin: \x1b[31m").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        let lost = saving.lost().expect("the failure is remembered");
        assert_eq!(lost.kind, io::ErrorKind::StorageFull);
        assert_eq!(lost.error, error.to_string());
        assert_eq!(lost.last_lines, ["booting", "login: \x1b[31m"]);
        assert_eq!(
            lost.quote(),
            format!(
                "; its console could not be saved: {error}; it ends with:\n  booting\n  login: \\033[31m"
            )
        );
    }

    /// The console's last bytes in memory are bounded, and the last lines
    /// are the console's last ones, written or not.
    #[test]
    fn a_lost_console_keeps_only_its_last_lines_in_memory() {
        let mut console = on_a_full_disk();
        let stream = numbered_lines(10 * IN_MEMORY_BYTES);
        for chunk in stream.chunks(4093) {
            let _ = console.write(chunk);
        }
        let saving = console.saving();
        assert!(saving.0.lock().unwrap().last.len() <= IN_MEMORY_BYTES);
        let lost = saving.lost().unwrap();
        let all: Vec<String> = String::from_utf8(stream)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lost.last_lines, all[all.len() - LOST_LINES..]);
    }

    /// A console that says nothing on a full disk says so: not "empty"
    /// alone, which would blame the guest.
    #[test]
    fn a_lost_console_with_no_lines_says_the_guest_printed_nothing() {
        let mut console = on_a_full_disk();
        console.write(b"\r\n").unwrap_err();
        let lost = console.saving().lost().unwrap();
        assert!(lost.last_lines.is_empty());
        assert!(
            lost.quote()
                .starts_with("; its console could not be saved: ")
                && lost.quote().ends_with("; the guest printed nothing"),
            "{}",
            lost.quote()
        );
    }

    /// The copying thread's failures are seen through the handle taken
    /// before it started.
    #[tokio::test]
    async fn a_console_copy_s_failed_writes_are_seen_through_its_saving() {
        let console = on_a_full_disk();
        let saving = console.saving();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let copy = ConsoleCopy::start(ours, console).unwrap();
        theirs.write_all(b"the last line\n").unwrap();
        drop(theirs);
        copy.finish(Duration::from_secs(30)).await.unwrap();
        let lost = saving.lost().expect("the copy's failure is remembered");
        assert_eq!(lost.kind, io::ErrorKind::StorageFull);
        assert_eq!(lost.last_lines, ["the last line"]);
    }
}
