//! Deterministic triggers for race tests, never sleeps: inotify tells what
//! fruix opened or closed, and a fanotify permission event holds fruix inside
//! an `open` until the attack has been carried out, so that the attack lands
//! exactly in the window under test. fanotify permission events need
//! CAP_SYS_ADMIN: the tests run as root, like the rest of the suite.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a trigger waits before failing the test (a bound, not a delay).
pub const LIMIT: Duration = Duration::from_secs(120);

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Waits until `fd` is readable (or `stop` is), failing the test after `limit`.
/// Returns false when `stop` became readable first.
fn poll_readable(fd: i32, stop: Option<i32>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let mut fds = vec![libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(s) = stop {
            fds.push(libc::pollfd {
                fd: s,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no event within {limit:?}");
        // SAFETY: a valid array of pollfd of the given length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, left.as_millis() as i32) };
        if rc < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
        if fds.get(1).is_some_and(|s| s.revents != 0) {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

/// One inotify event.
#[derive(Debug, Clone)]
pub struct Event {
    pub wd: i32,
    pub mask: u32,
    pub name: Vec<u8>,
}

/// An inotify instance.
pub struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    pub fn new() -> Inotify {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor we own.
        Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }

    /// Watches `path` for the events in `mask`; returns the watch descriptor.
    pub fn watch(&self, path: &Path, mask: u32) -> i32 {
        let c = c_path(path);
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        wd
    }

    /// The events queued now, without waiting.
    pub fn pending(&self) -> Vec<Event> {
        let mut buf = vec![0u8; 64 << 10];
        let mut out = Vec::new();
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            let mut at = 0usize;
            while at < n as usize {
                // SAFETY: the kernel writes whole inotify_event records.
                let e: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let start = at + std::mem::size_of::<libc::inotify_event>();
                let name = &buf[start..start + e.len as usize];
                let name = name.split(|b| *b == 0).next().unwrap_or(&[]).to_vec();
                out.push(Event {
                    wd: e.wd,
                    mask: e.mask,
                    name,
                });
                at = start + e.len as usize;
            }
        }
    }

    /// Waits for an event matching `wanted`, failing the test after [`LIMIT`].
    /// Returns every event read meanwhile (the matching one among them).
    pub fn wait(&self, wanted: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            seen.extend(self.pending());
            if seen.iter().any(&wanted) {
                return seen;
            }
            poll_readable(self.fd.as_raw_fd(), None, LIMIT);
        }
    }
}

/// What a gate saw.
#[derive(Debug)]
pub struct GateReport {
    /// Opens of the gated path by other processes.
    pub opens: usize,
    /// Whether the attack ran.
    pub attacked: bool,
}

/// Holds opens of one path by other processes until an attack has run.
pub struct Gate {
    stop: OwnedFd,
    thread: Option<JoinHandle<GateReport>>,
}

impl Gate {
    /// Gates `path` (a file or a directory): the first open of it by another
    /// process blocks in the kernel until `attack(pid)` has returned, then
    /// proceeds; later opens pass. Returns once the gate is in place.
    pub fn new(path: &Path, attack: impl FnOnce(i32) + Send + 'static) -> Gate {
        let mut pipe = [0; 2];
        // SAFETY: a two-element array for pipe2.
        assert_eq!(
            unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: fresh descriptors we own.
        let (stop_read, stop) =
            unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        let path = path.to_path_buf();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe {
                libc::fanotify_init(
                    libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC,
                    libc::O_RDONLY as u32,
                )
            };
            assert!(
                fd >= 0,
                "fanotify_init (the race tests need root and fanotify permission events): {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor we own.
            let fan = unsafe { OwnedFd::from_raw_fd(fd) };
            let c = c_path(&path);
            // SAFETY: valid descriptor and NUL-terminated path.
            let rc = unsafe {
                libc::fanotify_mark(
                    fan.as_raw_fd(),
                    libc::FAN_MARK_ADD,
                    libc::FAN_OPEN_PERM | libc::FAN_ONDIR,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                )
            };
            assert_eq!(
                rc,
                0,
                "fanotify_mark {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            ready_tx.send(()).unwrap();
            let me = std::process::id() as i32;
            let mut attack = Some(attack);
            let mut opens = 0;
            let mut buf = vec![0u8; 4096];
            while poll_readable(fan.as_raw_fd(), Some(stop_read.as_raw_fd()), LIMIT) {
                // SAFETY: reading into a buffer of the given length.
                let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                assert!(n > 0, "read fanotify: {}", std::io::Error::last_os_error());
                let mut at = 0usize;
                while at < n as usize {
                    // SAFETY: the kernel writes whole event records.
                    let e: libc::fanotify_event_metadata =
                        unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                    if e.pid != me {
                        opens += 1;
                        if let Some(attack) = attack.take() {
                            attack(e.pid);
                        }
                    }
                    let response = libc::fanotify_response {
                        fd: e.fd,
                        response: libc::FAN_ALLOW,
                    };
                    // SAFETY: writing a whole response record.
                    let w = unsafe {
                        libc::write(
                            fan.as_raw_fd(),
                            (&response as *const libc::fanotify_response).cast(),
                            std::mem::size_of::<libc::fanotify_response>(),
                        )
                    };
                    // A killed opener's event is gone (ENOENT): nothing to answer.
                    let e_write = std::io::Error::last_os_error();
                    assert!(
                        w > 0 || e_write.raw_os_error() == Some(libc::ENOENT),
                        "answer fanotify: {e_write}"
                    );
                    // SAFETY: the event's descriptor is ours to close.
                    unsafe { libc::close(e.fd) };
                    at += e.event_len as usize;
                }
            }
            GateReport {
                opens,
                attacked: attack.is_none(),
            }
        });
        ready_rx.recv().expect("the gate thread starts");
        Gate {
            stop,
            thread: Some(thread),
        }
    }

    /// Removes the gate and says what it saw.
    pub fn finish(mut self) -> GateReport {
        // SAFETY: writing one byte to our pipe.
        assert_eq!(
            unsafe { libc::write(self.stop.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the gate thread did not panic")
    }
}

/// Exchanges two names atomically (`renameat2(RENAME_EXCHANGE)`).
pub fn exchange(a: &Path, b: &Path) {
    let (ca, cb) = (c_path(a), c_path(b));
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(
        rc,
        0,
        "renameat2 RENAME_EXCHANGE: {}",
        std::io::Error::last_os_error()
    );
}

/// A shared, writable memory mapping of a whole file.
pub struct SharedMapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; writes go through `&mut self`.
unsafe impl Send for SharedMapping {}

impl SharedMapping {
    /// Maps `path` (read-write, `MAP_SHARED`); the descriptor is closed at once.
    pub fn new(path: &Path) -> SharedMapping {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: mapping an open file of `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        SharedMapping {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Overwrites the mapped bytes with `bytes` (same length) and flushes them.
    pub fn write(&mut self, bytes: &[u8]) {
        assert_eq!(bytes.len(), self.len);
        // SAFETY: `len` bytes are mapped writable at `ptr`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, self.len);
            assert_eq!(libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC), 0);
        }
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
