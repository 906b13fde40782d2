//! Sending a source object to a guest: the guest gets it at the same name
//! under its own store directory (`guest_store`, default `/frx/store`),
//! only when it does not have it yet, as a tar stream over the existing SSH
//! connection. The guest checks every object it has or receives against the
//! object's own manifest with its stock `mtree` before anything builds from
//! it: a copy that differs (corrupted, or tampered with in the guest) is
//! refused, never used and never silently replaced.

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use fruix_core::executor::{Event, EventSink};
use fruix_core::{escape, Error, Result};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::ssh::{shell_quote, SshSession};

/// Counts the bytes read through it, and says so every
/// [`PROGRESS_EVERY`] bytes (stage `source`): a long upload shows how far
/// it got, and is no silence (`--max-silent-time`).
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
    events: EventSink,
    reported: u64,
}

/// How many bytes of upload between two progress events.
const PROGRESS_EVERY: u64 = 16 << 20;

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        let done = self.count.fetch_add(read as u64, Ordering::Relaxed) + read as u64;
        if done - self.reported >= PROGRESS_EVERY {
            self.reported = done;
            self.events.emit(Event::Progress {
                stage: "source".into(),
                done,
                total: None,
            });
        }
        poll
    }
}

/// How a source object reached the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// The guest had it, and it matches its manifest.
    Present,
    /// It was sent: this many bytes of tar stream.
    Sent(u64),
}

/// The shell function `matches DIR`: whether DIR matches its object's
/// manifest, that is mtree succeeds and says nothing (mtree exits 0 on a
/// file the manifest does not list, printing `extra: PATH`). Otherwise it
/// passes on the first 20 lines mtree said, on stderr.
const MATCHES: &str = r#"matches() { out=$(cd "$1" && mtree -f .fruix-manifest.mtree -p . 2>&1) && [ -z "$out" ] && return 0; printf '%s\n' "$out" | head -n 20 >&2; return 1; }"#;

/// The script that says whether `dest` is `absent`, `present` (and sound)
/// or `corrupt` in the guest.
fn probe_script(dest: &str) -> String {
    let dest = shell_quote(dest);
    format!(
        r#"if [ ! -e {dest} ]; then echo absent; exit 0; fi
command -v mtree >/dev/null 2>&1 || {{ echo "mtree is missing in the guest; it checks the source objects the guest holds" >&2; exit 3; }}
{MATCHES}
if matches {dest} 2>/dev/null; then echo present; else echo corrupt; fi"#
    )
}

/// The script that receives `name` as a tar stream on stdin into
/// `store`, checks it with mtree, and only then renames it into place.
///
/// Its temporary directory goes however the script ends: sh runs no EXIT
/// trap when a signal kills it, so SIGTERM (what the kill loop of a
/// cancelled upload sends, [`crate::ssh::remote`]), SIGINT and SIGHUP
/// become exits. The cleanup ignores them, and so does its `rm`, which
/// inherits that: the kill loop sends SIGTERM every second.
fn receive_script(store: &str, name: &str) -> String {
    let (store_q, name_q) = (shell_quote(store), shell_quote(name));
    format!(
        r#"set -e
command -v mtree >/dev/null 2>&1 || {{ echo "mtree is missing in the guest; it checks the source objects the guest receives" >&2; exit 3; }}
mkdir -p {store_q}
tmp=
trap 'trap "" TERM INT HUP; if [ -n "$tmp" ]; then chmod -R u+w "$tmp" 2>/dev/null || :; rm -rf "$tmp"; fi' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
tmp=$(mktemp -d {store_q}/.tmp-fruix-source.XXXXXX)
tar -xf - -C "$tmp"
{MATCHES}
matches "$tmp"/{name_q} || {{ echo "the source object arrived different from its manifest" >&2; exit 4; }}
mv "$tmp"/{name_q} {store_q}/{name_q}"#
    )
}

/// Makes the host source object `object` present and sound in the guest
/// under `guest_store`; returns its path there and how it got there. The
/// upload has no time limit (its length depends on the tree): `cancel`
/// stops it. Its progress goes to `events`.
pub(super) async fn deliver(
    session: &SshSession,
    object: &Path,
    guest_store: &str,
    cancel: &CancellationToken,
    events: &EventSink,
) -> Result<(String, Delivery)> {
    let name = object
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::system(format!("{}: not a source object", object.display())))?;
    let dest = format!("{guest_store}/{name}");
    let probe = session.output(&probe_script(&dest), None).await?;
    if !probe.exit.success() {
        return Err(Error::system(format!(
            "cannot look for the source object {dest} in the guest {}: {}",
            session.target(),
            escape::text(&probe.stderr_text())
        )));
    }
    match probe.stdout_text().trim() {
        "present" => return Ok((dest, Delivery::Present)),
        "corrupt" => {
            return Err(Error::system(format!(
                "the source object {dest} in the guest {} does not match its manifest (mtree); remove it there, and the next build sends it again",
                session.target()
            )))
        }
        _ => {}
    }
    let store = object.parent().unwrap_or(Path::new("/"));
    let mut tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(store)
        .args(["-cf", "-"])
        .arg(name)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::system(format!("cannot run tar to send the source: {e}")))?;
    let count = Arc::new(AtomicU64::new(0));
    let stream = Counted {
        inner: tar.stdout.take().expect("piped"),
        count: count.clone(),
        events: events.clone(),
        reported: 0,
    };
    let received = session
        .output_within(
            &receive_script(guest_store, name),
            Some(stream),
            cancel,
            None,
        )
        .await?;
    let packed = tar
        .wait()
        .await
        .map_err(|e| Error::system(format!("tar of the source failed: {e}")))?;
    if !packed.success() || !received.exit.success() {
        return Err(Error::system(format!(
            "cannot send the source object {name} to the guest {} ({}): {}",
            session.target(),
            received.exit.describe(),
            escape::text(&received.stderr_text())
        )));
    }
    Ok((dest, Delivery::Sent(count.load(Ordering::Relaxed))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    fn write_script(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The upload temporary directories in `store`.
    fn leftovers(store: &Path) -> Vec<std::path::PathBuf> {
        fruix_core::testing::entries_starting_with(store, ".tmp-fruix-source.")
    }

    /// Regression: the temporary directory was removed by an EXIT trap
    /// only, which sh does not run when SIGTERM kills it, as the kill loop
    /// of a cancelled upload does to the whole remote session.
    #[test]
    fn a_receive_stopped_by_sigterm_leaves_no_temporary_directory() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // mtree is only looked for; tar says it is receiving, then reads a
        // stdin that never ends, as a slow upload would.
        write_script(&bin.join("mtree"), "#!/bin/sh\nexit 0\n");
        write_script(
            &bin.join("tar"),
            "#!/bin/sh\n: > \"$4/.receiving\"\nexec cat > /dev/null\n",
        );
        let store = dir.path().join("store");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let mut child = std::process::Command::new("sh")
            .args(["-c", &receive_script(store.to_str().unwrap(), "obj")])
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        // Held open to the end: `wait` would close it.
        let _stdin = child.stdin.take();
        fruix_core::testing::wait_until("the script receives", || {
            leftovers(&store)
                .iter()
                .any(|t| t.join(".receiving").exists())
        });
        let group = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process_group(group, rustix::process::Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(leftovers(&store), Vec::<std::path::PathBuf>::new());
        assert_eq!(status.code(), Some(143), "{status:?}");
    }

    #[tokio::test]
    async fn an_upload_says_how_far_it_got_every_16_mib() {
        use tokio::io::AsyncReadExt;
        let (events, mut rx) = EventSink::channel();
        let count = Arc::new(AtomicU64::new(0));
        let mut counted = Counted {
            inner: tokio::io::repeat(b'x').take(40 << 20),
            count: count.clone(),
            events,
            reported: 0,
        };
        let mut sink = tokio::io::sink();
        let copied = tokio::io::copy(&mut counted, &mut sink).await.unwrap();
        assert_eq!(
            (copied, count.load(Ordering::Relaxed)),
            (40 << 20, 40 << 20)
        );
        drop(counted);
        let mut said = Vec::new();
        while let Some(event) = rx.recv().await {
            match event {
                Event::Progress {
                    stage,
                    done,
                    total: None,
                } if stage == "source" => said.push(done),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0] >= 16 << 20 && said[1] >= 32 << 20 && said[1] < 40 << 20,
            "{said:?}"
        );
    }
}
