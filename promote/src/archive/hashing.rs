//! Copying a stored file's bytes into an archive while hashing them, so
//! that an export checks every byte it sends against the digest its
//! manifest records: a large file is hashed on a second thread while the
//! next of its chunks is read and written, so that the check costs little
//! time beside the copy itself.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc;

use fruix_core::manifest::Progress;
use sha2::{Digest, Sha256};

use super::{failed, written};
use crate::error::Result;

/// Bytes read, written and hashed at a time.
const CHUNK: usize = 1 << 20;
/// Chunks handed to the hashing thread and not yet hashed, at most.
const IN_FLIGHT: usize = 4;
/// Files at least this large are hashed on a second thread; smaller ones
/// (most of a source tree's) as they are copied, on this one.
const HASHED_APART_FROM: u64 = 4 << 20;

/// Copies at most `size` bytes of `file` (named `display`) to `out` (the
/// archive `archive`, which a failed write names); returns how many it
/// copied (fewer when the file is shorter) and their SHA-256. `buffer` is
/// [`CHUNK`] bytes, reused from file to file.
pub(super) fn copy_hashed(
    file: &File,
    size: u64,
    out: &mut impl Write,
    buffer: &mut Vec<u8>,
    display: &Path,
    archive: &Path,
    progress: Option<&Progress>,
) -> Result<(u64, [u8; 32])> {
    buffer.resize(CHUNK, 0);
    if size < HASHED_APART_FROM {
        let mut hasher = Sha256::new();
        let copied = copy_chunks(file, size, buffer, display, progress, |chunk| {
            hasher.update(chunk);
            written(out.write_all(chunk), archive, progress)
        })?;
        return Ok((copied, hasher.finalize().into()));
    }
    std::thread::scope(|scope| {
        let (to_hasher, chunks) = mpsc::sync_channel::<(Vec<u8>, usize)>(IN_FLIGHT);
        let (to_copier, hashed) = mpsc::channel::<Vec<u8>>();
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for (chunk, n) in chunks {
                hasher.update(&chunk[..n]);
                // The copier may be gone (it failed): the chunk is dropped.
                let _ = to_copier.send(chunk);
            }
            <[u8; 32]>::from(hasher.finalize())
        });
        let mut made = 0;
        let mut copied = 0u64;
        let copying = (|| -> Result<()> {
            while copied < size {
                let mut chunk = match hashed.try_recv() {
                    Ok(chunk) => chunk,
                    Err(_) if made <= IN_FLIGHT => {
                        made += 1;
                        vec![0; CHUNK]
                    }
                    Err(_) => hashed
                        .recv()
                        .expect("the hashing thread returns each chunk"),
                };
                let want = CHUNK.min((size - copied) as usize);
                let n = read_some(file, &mut chunk[..want], display, progress)?;
                if n == 0 {
                    break;
                }
                written(out.write_all(&chunk[..n]), archive, progress)?;
                copied += n as u64;
                to_hasher
                    .send((chunk, n))
                    .expect("the hashing thread takes each chunk");
            }
            Ok(())
        })();
        drop(to_hasher);
        let digest = hasher.join().expect("the hashing thread does not panic");
        copying.map(|()| (copied, digest))
    })
}

/// Reads at most `size` bytes of `file` through `buffer`, each chunk given
/// to `take` (which hashes and writes it); returns how many it read.
fn copy_chunks(
    file: &File,
    size: u64,
    buffer: &mut [u8],
    display: &Path,
    progress: Option<&Progress>,
    mut take: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut copied = 0u64;
    while copied < size {
        let want = buffer.len().min((size - copied) as usize);
        let n = read_some(file, &mut buffer[..want], display, progress)?;
        if n == 0 {
            break;
        }
        take(&buffer[..n])?;
        copied += n as u64;
    }
    Ok(copied)
}

/// One read of `file` into `buffer` (0 at its end), retried when
/// interrupted.
fn read_some(
    mut file: &File,
    buffer: &mut [u8],
    display: &Path,
    progress: Option<&Progress>,
) -> Result<usize> {
    loop {
        match file.read(buffer) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            read => return read.map_err(|e| failed(e, progress, "export", display)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file small enough to be hashed on this thread, and one hashed on
    /// a second, each copied whole or cut to fewer bytes: the copy and the
    /// digest are those of the bytes copied.
    #[test]
    fn the_bytes_copied_are_the_bytes_hashed() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 5, CHUNK + 7, HASHED_APART_FROM as usize + 3 * CHUNK + 11] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join("f");
            std::fs::write(&path, &bytes).unwrap();
            for size in [len as u64, (len / 2) as u64, len as u64 + 9] {
                let file = File::open(&path).unwrap();
                let (mut out, mut buffer) = (Vec::new(), Vec::new());
                let (copied, digest) =
                    copy_hashed(&file, size, &mut out, &mut buffer, &path, &path, None).unwrap();
                let expected = &bytes[..(size as usize).min(len)];
                assert_eq!(copied, expected.len() as u64, "{len}/{size}");
                assert!(out == expected, "{len}/{size}");
                assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(expected)));
            }
        }
    }
}
