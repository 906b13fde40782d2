//! The benchmark tree shared by `fruix-bench` and `fruix-bench-import`: a
//! deterministic result root the size of a FreeBSD base (about 26,000 files
//! and 0.9 GB over four artifacts, with a realistic size mix, symlinks, exec
//! and setuid bits), and a tree of many small files for `fruix-bench --files`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use fruix_core::testing::sample_metadata;

/// Each artifact's probe file and its size (a 30 MB kernel, as in a real base).
const PROBES: [(&str, &str, u64); 4] = [
    ("world", "bin/sh", 160_000),
    ("kernel", "boot/kernel/kernel", 30_000_000),
    ("headers", "usr/include/sys/param.h", 13_000),
    ("bootloader", "boot/loader", 500_000),
];

/// A small deterministic generator (xorshift64*), so every run measures the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A size drawn from a log-uniform range, like the files of a base system.
    fn size(&mut self, min: u64, max: u64) -> u64 {
        let (lo, hi) = ((min as f64).ln(), (max as f64).ln());
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        (lo + u * (hi - lo)).exp() as u64
    }
}

struct Spec {
    artifact: &'static str,
    dirs: &'static [&'static str],
    files: usize,
    min: u64,
    max: u64,
    exec: bool,
}

const SPECS: [Spec; 4] = [
    Spec {
        artifact: "world",
        dirs: &[
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "lib",
            "usr/lib",
            "usr/share/man/man1",
            "usr/share/locale",
            "etc",
            "usr/libexec",
        ],
        files: 21_000,
        min: 200,
        max: 250_000,
        exec: true,
    },
    Spec {
        artifact: "kernel",
        dirs: &["boot/kernel"],
        files: 900,
        min: 8_000,
        max: 400_000,
        exec: true,
    },
    Spec {
        artifact: "headers",
        dirs: &[
            "usr/include",
            "usr/include/sys",
            "usr/include/net",
            "usr/include/machine",
            "usr/include/netinet",
        ],
        files: 3_900,
        min: 300,
        max: 60_000,
        exec: false,
    },
    Spec {
        artifact: "bootloader",
        dirs: &["boot", "boot/defaults", "boot/lua", "boot/efi"],
        files: 120,
        min: 500,
        max: 600_000,
        exec: false,
    },
];

/// The generators' seed, so every run measures the same tree.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Files per directory of the small-files tree: promotion memory must be
/// bounded by the largest directory, so no directory holds more than this.
const FILES_PER_DIR: u64 = 1000;

/// Generates the four artifact trees under `root/artifacts`; returns files and bytes.
pub fn generate(root: &Path, scale: f64) -> (u64, u64) {
    let mut rng = Rng(SEED);
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut buffer = vec![0u8; 1 << 20];
    for spec in &SPECS {
        let base = root.join("artifacts").join(spec.artifact);
        let count = (spec.files as f64 * scale) as usize;
        for i in 0..count {
            let dir = base
                .join(spec.dirs[i % spec.dirs.len()])
                .join(format!("d{}", i % 97));
            fs::create_dir_all(&dir).unwrap();
            let size = rng.size(spec.min, spec.max);
            let mode = if spec.exec && i % 3 == 0 {
                if i % 997 == 0 {
                    0o4555
                } else {
                    0o555
                }
            } else {
                0o444
            };
            write_random(
                &dir.join(format!("f{i}")),
                size,
                mode,
                &mut rng,
                &mut buffer,
            );
            if i % 15 == 0 {
                symlink(format!("f{i}"), dir.join(format!("link{i}"))).unwrap();
            }
            files += 1;
            bytes += size;
        }
    }
    let (probe_files, probe_bytes) = write_probes(root, &mut rng, &mut buffer);
    (files + probe_files, bytes + probe_bytes)
}

/// Generates `count` small files (16 bytes to 4 KiB of distinct random
/// content) under the world artifact, `FILES_PER_DIR` to a directory, and the
/// four probes; returns files and bytes.
pub fn generate_small_files(root: &Path, count: u64) -> (u64, u64) {
    let mut rng = Rng(SEED);
    let mut buffer = vec![0u8; 1 << 20];
    let base = root.join("artifacts/world/usr/share/small");
    let bytes = write_files(
        count,
        (16, 4096),
        0o444,
        |i| base.join(format!("d{}/f{i}", i / FILES_PER_DIR)),
        &mut rng,
        &mut buffer,
    );
    let (probe_files, probe_bytes) = write_probes(root, &mut rng, &mut buffer);
    (count + probe_files, bytes + probe_bytes)
}

/// Writes `count` files of random content and log-uniform sizes from `min`
/// to `max` bytes with `mode`, the `i`th at `path(i)`; a directory is
/// created with the first of the consecutive files in it. Returns their bytes.
fn write_files(
    count: u64,
    (min, max): (u64, u64),
    mode: u32,
    path: impl Fn(u64) -> PathBuf,
    rng: &mut Rng,
    buffer: &mut [u8],
) -> u64 {
    let mut dir = PathBuf::new();
    let mut bytes = 0;
    for i in 0..count {
        let path = path(i);
        let parent = path.parent().unwrap();
        if parent != dir {
            fs::create_dir_all(parent).unwrap();
            dir = parent.to_path_buf();
        }
        let size = rng.size(min, max);
        write_random(&path, size, mode, rng, buffer);
        bytes += size;
    }
    bytes
}

/// Writes the probe files (a 30 MB kernel, as in a real base); returns files and bytes.
fn write_probes(root: &Path, rng: &mut Rng, buffer: &mut [u8]) -> (u64, u64) {
    for (artifact, probe, size) in PROBES {
        let path = root.join("artifacts").join(artifact).join(probe);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random(&path, size, 0o644, rng, buffer);
    }
    (PROBES.len() as u64, PROBES.iter().map(|p| p.2).sum())
}

/// Writes `size` random bytes to a new file at `path` with `mode`, `buffer` at a time.
fn write_random(path: &Path, size: u64, mode: u32, rng: &mut Rng, buffer: &mut [u8]) {
    let mut file = fs::File::create(path).unwrap();
    let mut left = size as usize;
    while left > 0 {
        let n = left.min(buffer.len());
        for chunk in buffer[..n].chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&buffer[..n]).unwrap();
        left -= n;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
        .unwrap();
}

/// Writes the generated root's `promotion.scm`: the sample metadata of
/// fruix's tests, whose artifacts and probes are those of `PROBES` (no
/// signatures: promotion computes them).
pub fn write_promotion(root: &Path) {
    let metadata = sample_metadata("local", "20260405T213444Z");
    let declared: Vec<_> = metadata
        .artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.probe.as_str()))
        .collect();
    let generated: Vec<_> = PROBES.iter().map(|(a, probe, _)| (*a, *probe)).collect();
    assert_eq!(
        declared, generated,
        "the sample declares the generated probes"
    );
    metadata.write_to(root).unwrap();
}

/// Generates a FreeBSD-sized source tree at `root`: `count` files (about
/// 90,000 by default, 1.5 GB) of log-uniform sizes from 200 bytes to 100 KB,
/// 100 to a directory three levels deep, with `sys/conf/newvers.sh` and a
/// `Makefile` that mentions `buildworld`; returns files and bytes.
pub fn generate_source(root: &Path, count: u64) -> (u64, u64) {
    let mut rng = Rng(SEED);
    let mut buffer = vec![0u8; 1 << 20];
    let bytes = write_files(
        count,
        (200, 100_000),
        0o644,
        |i| {
            root.join(format!(
                "d{}/s{}/t{}/f{i}.c",
                i / 10_000,
                (i / 1000) % 10,
                (i / 100) % 10
            ))
        },
        &mut rng,
        &mut buffer,
    );
    fs::create_dir_all(root.join("sys/conf")).unwrap();
    let newvers = "TYPE=\"FreeBSD\"\nREVISION=\"15.0\"\nBRANCH=\"STABLE\"\n";
    fs::write(root.join("sys/conf/newvers.sh"), newvers).unwrap();
    fs::write(root.join("Makefile"), "buildworld:\n").unwrap();
    (count + 2, bytes + newvers.len() as u64 + 12)
}
