//! A guest's input is bounded and its modes stay data (issue 10, classes 6
//! and 7): an import over `import_max_bytes` is refused whole, modes that
//! would let other local users write arrive without group and world write,
//! and an enormous output line is cut, saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::ssh_import::{import_refused, nothing_partial, tampered_build, tampered_build_fresh};
use crate::sshd::Sshd;

#[test]
fn an_import_over_import_max_bytes_is_refused_and_leaves_nothing() {
    let sshd = Sshd::trusted();
    let (host, stderr) = import_refused(
        &sshd,
        "dd if=/dev/zero of=\"$ROOT/logs/big\" bs=1048576 count=4 2>/dev/null",
        &["import_max_bytes=1048576"],
    );
    assert!(
        stderr.contains(
            "the tar stream is longer than 1048576 bytes, over the cap import_max_bytes = 1048576"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("raise the executor configuration key `import_max_bytes`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("import attempt"),
        "a refused import is not retried as a dropped connection: {stderr}"
    );
    assert!(
        crate::util::nothing_promoted(&host.path().join("store")),
        "nothing was promoted"
    );
}

/// Every entry under `dir` (not `dir` itself) with its permission bits.
fn modes_under(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            if !m.file_type().is_symlink() {
                let relative = e.path().strip_prefix(dir).unwrap().display().to_string();
                found.push((relative, m.permissions().mode() & 0o7777));
            }
        }
    }
    found
}

#[test]
fn guest_modes_0777_and_0666_arrive_as_0755_and_0644_through_a_0700_staging() {
    let sshd = Sshd::trusted_with_bin();
    let host = tempfile::tempdir().unwrap();
    // This machine is the guest: its tar, started by the import after the
    // host created the staging directory, records that directory's mode.
    let recorded = sshd.dir.path().join("staging-modes");
    sshd.guest_program(
        "tar",
        &format!(
            "#!/bin/sh\nfor s in {host}/.r1.import-*; do\n  if [ -d \"$s\" ]; then stat -c %a \"$s\" >> {recorded}; fi\ndone\nexec /usr/bin/tar \"$@\"\n",
            host = host.path().display(),
            recorded = recorded.display()
        ),
    );
    let loosen = "chmod 0777 \"$ROOT\" \"$ROOT/logs\"\n\
         printf x > \"$ROOT/logs/open\"; chmod 0666 \"$ROOT/logs/open\"\n\
         cp /bin/true \"$ROOT/logs/run\"; chmod 0777 \"$ROOT/logs/run\"\n\
         chmod -R go+w \"$ROOT/artifacts\"";
    let (code, stderr) = tampered_build(&sshd, host.path(), loosen, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&recorded).expect("the guest's tar ran during the import"),
        "700\n",
        "the staging directory is 0700"
    );
    let root = host.path().join("r1");
    let modes = modes_under(&root);
    let mode = |path: &str| {
        modes
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} is not in the result root: {modes:?}"))
            .1
    };
    assert_eq!(mode("logs"), 0o755);
    assert_eq!(mode("logs/open"), 0o644);
    assert_eq!(mode("logs/run"), 0o755);
    assert_eq!(mode("artifacts/world"), 0o755);
    let writable: Vec<_> = modes.iter().filter(|(_, m)| m & 0o022 != 0).collect();
    assert!(
        writable.is_empty(),
        "group or world writable in the result root: {writable:?}"
    );
    assert!(
        modes.len() > 20,
        "the whole result root was checked: {modes:?}"
    );
}

/// The end of `text`, for a failure message that must stay readable.
fn end(text: &str) -> &str {
    let mut from = text.len().saturating_sub(4000);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}

const FIFTY_MB: usize = 50 << 20;

#[test]
fn fifty_megabytes_on_one_line_from_the_helper_or_tar_are_cut_and_say_so() {
    let sshd = Sshd::trusted_with_bin();
    let cut = format!(
        "[line cut at 4096 bytes: {} more bytes dropped; the cap is output_max_line_bytes]",
        FIFTY_MB - 4096
    );

    // The guest helper prints the line on stderr, then fails.
    let (host, (code, stderr)) = tampered_build_fresh(
        &sshd,
        &format!("head -c {FIFTY_MB} /dev/zero | tr '\\0' x >&2\nexit 1"),
        &["output_max_line_bytes=4096"],
    );
    assert_eq!(code, Some(1), "{}", end(&stderr));
    assert!(stderr.contains(&cut), "{}", end(&stderr));
    assert!(
        stderr.len() < 1 << 20,
        "the line was not passed on whole: {} bytes of stderr",
        stderr.len()
    );
    nothing_partial(host.path());

    // The guest's tar prints it on stderr instead of sending the archive.
    sshd.guest_program(
        "tar",
        &format!(
            "#!/bin/sh\nif [ -f ./.noisy-tar ]; then head -c {FIFTY_MB} /dev/zero | tr '\\0' y >&2; exit 1; fi\nexec /usr/bin/tar \"$@\"\n"
        ),
    );
    let (host, (code, stderr)) = tampered_build_fresh(
        &sshd,
        ": > \"$ROOT/.noisy-tar\"",
        &["output_max_line_bytes=4096"],
    );
    assert_eq!(code, Some(3), "{}", end(&stderr));
    assert!(
        stderr.contains("tar of the guest result root"),
        "{}",
        end(&stderr)
    );
    assert!(stderr.contains(&cut), "{}", end(&stderr));
    assert!(stderr.len() < 1 << 20, "{} bytes of stderr", stderr.len());
    nothing_partial(host.path());
}
