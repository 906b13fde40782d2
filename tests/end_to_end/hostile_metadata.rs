//! Issue 10, classes 4, 5 and 8: `fruix native-build promote` on result
//! roots whose metadata or names are hostile. Each attack is refused with
//! exit status 4 and a message naming the file, never crashes or hangs, shows
//! nothing it should not, and leaves the store as it was.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fruix_core::testing::mkfifo;
use fruix_core::PromotionMetadata;

use crate::util::{promote_refused, sample_root, PopulatedStore};

/// The store holds no object and no temporary (staging) directory.
fn assert_no_object_and_no_staging(store: &Path) {
    let names: Vec<String> = match fs::read_dir(store) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
            Vec::new()
        }
    };
    let left: Vec<&String> = names
        .iter()
        .filter(|n| !n.starts_with('.') || n.starts_with(".tmp-"))
        .collect();
    assert!(
        left.is_empty(),
        "objects or staging left in the store: {left:?}"
    );
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Replaces the value of `guest-host-name` in `root`'s promotion.scm with
/// `value` (raw text), returning the line it is on.
fn with_guest_host_name(root: &Path, value: &str) -> usize {
    let path = root.join("promotion.scm");
    let text = fs::read_to_string(&path).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.contains("(guest-host-name "))
        .expect("promotion.scm has guest-host-name");
    let text = text.replace(
        "(guest-host-name \"builder-1\")",
        &format!("(guest-host-name {value})"),
    );
    fs::write(&path, text).unwrap();
    line
}

/// Issue 10, class 4: ~20,000 nested quotes overflowed the reader's stack
/// (exit 134), leaving staging behind.
#[test]
fn deeply_nested_promotion_scm_is_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("20,000 nested quotes", format!("{}x", "'".repeat(20_000))),
        ("100,000 open parentheses", "(".repeat(100_000)),
    ];
    for (i, (what, value)) in cases.iter().enumerate() {
        let root = sample_root(dir.path(), &format!("deep{i}"));
        let line = with_guest_host_name(&root, value);
        let store = dir.path().join(format!("store{i}"));
        let stderr = promote_refused(
            what,
            &store,
            &root,
            &[
                "promotion.scm",
                &format!("line {line}"),
                "more than 64 levels",
            ],
        );
        assert!(!stderr.contains("overflow"), "{what}: {stderr}");
        assert_no_object_and_no_staging(&store);
    }
}

/// Issue 10, class 5: `.fruix-special-modes` as a symlink was followed, and
/// an error then printed part of the file it points to.
#[test]
fn special_modes_symlink_is_refused_without_showing_its_target() {
    let s = PopulatedStore::new();
    let secret = s.dir.path().join("secret.scm");
    fs::write(
        &secret,
        "(fruix-special-modes (format-version 1) (modes SECRET-MARKER-51d0))\n",
    )
    .unwrap();
    // `refuses_changed` checks that stdout is empty.
    let stderr = s.refuses_changed(
        "special modes as a symlink",
        "root",
        |root| std::os::unix::fs::symlink(&secret, root.join(".fruix-special-modes")).unwrap(),
        &[
            ".fruix-special-modes",
            "is a symlink; fruix never follows symlinks in metadata",
        ],
    );
    assert!(
        !stderr.contains("SECRET-MARKER"),
        "stderr shows the symlink's target: {stderr}"
    );
}

/// Issue 10, class 5: `.fruix-special-modes` as a FIFO hung forever.
#[test]
fn special_modes_fifo_is_refused_promptly() {
    PopulatedStore::new().refuses_changed(
        "special modes as a FIFO",
        "root",
        |root| mkfifo(&root.join(".fruix-special-modes")).unwrap(),
        &[".fruix-special-modes", "is a FIFO, not a regular file"],
    );
}

/// Issue 10, class 5: `/dev/zero` as promotion.scm ate memory until killed;
/// a 2 MiB file was read whole.
#[test]
fn promotion_scm_device_or_oversized_is_refused_without_reading() {
    let s = PopulatedStore::new();

    let device = |root: &Path| {
        let path = root.join("promotion.scm");
        fs::remove_file(&path).unwrap();
        // SAFETY: valid NUL-terminated path; 1,5 is /dev/zero's device number.
        let status = unsafe {
            libc::mknod(
                c_path(&path).as_ptr(),
                libc::S_IFCHR | 0o644,
                libc::makedev(1, 5),
            )
        };
        assert_eq!(
            status,
            0,
            "this test makes a device node and needs root (run scripts/test.sh as root): {}",
            std::io::Error::last_os_error()
        );
    };
    s.refuses_changed(
        "promotion.scm as a character device",
        "device",
        device,
        &["promotion.scm", "is a character device, not a regular file"],
    );

    let oversized = |root: &Path| {
        let path = root.join("promotion.scm");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!(";{}\n", "x".repeat(2 << 20)));
        fs::write(&path, text).unwrap();
    };
    s.refuses_changed(
        "a 2 MiB promotion.scm",
        "oversized",
        oversized,
        &["promotion.scm", "is larger than 1048576 bytes"],
    );
}

/// Issue 10, class 8: a newline inside `source-store` `path` added a line
/// to the store's `.references`.
#[test]
fn newline_in_source_store_path_is_refused_naming_field_and_line() {
    let s = PopulatedStore::new();
    let root = s.sample("root");
    let mut m = PromotionMetadata::read(&root.join("promotion.scm")).unwrap();
    m.source_store
        .path
        .push_str("\n/frx/store/forged-reference");
    m.write_to(&root).unwrap();
    let text = fs::read_to_string(root.join("promotion.scm")).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.contains("(source-store"))
        .unwrap();
    let stderr = s.refuses(
        "newline in source-store path",
        &root,
        &[
            "promotion.scm",
            "source-store.path",
            &format!("line {line}"),
            "control character `\\n`",
        ],
    );
    assert!(!stderr.contains("\n/frx/store/forged"), "{stderr}");
}

/// Issue 10, class 8: file names with newlines or ANSI escapes were echoed
/// raw, so a hostile name could forge output lines.
#[test]
fn hostile_file_name_is_escaped_in_the_error() {
    let s = PopulatedStore::new();
    let root = s.sample("root");
    let name = std::ffi::OsStr::from_bytes(b"evil\nfruix: forged line \x1b[31mred");
    mkfifo(&root.join("artifacts/world/etc").join(name)).unwrap();
    // Unsigned, so that promotion reaches the file instead of the mismatch.
    let mut m = PromotionMetadata::read(&root.join("promotion.scm")).unwrap();
    m.artifacts[0].tree_signature = None;
    m.write_to(&root).unwrap();
    let stderr = s.refuses(
        "FIFO with a hostile name",
        &root,
        &["etc/evil\\nfruix: forged line \\033[31mred"],
    );
    assert!(!stderr.contains('\x1b'), "raw ESC in stderr: {stderr:?}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("fruix: forged line")),
        "the name forged an output line: {stderr:?}"
    );
}

/// Regression: a field refused in promotion.scm was named "field `F`:
/// (line N) …", where every other file's errors say "field `F` (line N):
/// …", as the README shows.
#[test]
fn a_refused_promotion_field_is_named_with_its_line_as_in_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    let line = with_guest_host_name(&root, "\"builder-1\") (guest-host-name \"again\"");
    let stderr = promote_refused(
        "guest-host-name twice",
        &dir.path().join("store"),
        &root,
        &[&format!(
            "promotion.scm: field `guest-host-name` (line {line}): given more than once; give it once"
        )],
    );
    assert!(!stderr.contains(": (line"), "{stderr}");
}
