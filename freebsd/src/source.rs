//! Source checks: what makes a directory a FreeBSD source tree, what its
//! `sys/conf/newvers.sh` says about the version, and FreeBSD's names for
//! branches and targets.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use fruix_core::dir::{is_symlink_refusal, OpenDir, TreeKind};
use fruix_core::error::{IoContext, MetadataFileProblem};
use fruix_core::fsutil::MAX_METADATA_BYTES;
use fruix_core::manifest::stat;
use fruix_core::{escape, Error, Result};
use rustix::fs::{FileType, Mode, OFlags};

/// Makefile names BSD make looks for, in its order.
pub const MAKEFILES: [&str; 3] = ["BSDmakefile", "makefile", "Makefile"];

/// Where the version of a FreeBSD source tree is declared.
pub const NEWVERS: &str = "sys/conf/newvers.sh";

/// The source tree `path` of a build request, which must be absolute: a
/// relative one would name another tree in every working directory.
pub fn absolute_source(path: &str) -> Result<PathBuf> {
    let source = PathBuf::from(path);
    if !source.is_absolute() {
        return Err(Error::InvalidRequest {
            message: format!(
                "source path {} is relative; give the absolute path of the source tree",
                escape::path(&source)
            ),
        });
    }
    Ok(source)
}

/// Checks that `dir` is a FreeBSD source tree: a directory whose makefile
/// (the first of [`MAKEFILES`] there) mentions `buildworld`. Anything else
/// is [`Error::InvalidRequest`] naming the directory.
pub fn check_source_tree(dir: &Path) -> Result<()> {
    let invalid = |message: String| Error::InvalidRequest { message };
    if !dir.is_dir() {
        return Err(invalid(format!(
            "source directory {} does not exist or is not a directory; give the path of a FreeBSD source tree",
            escape::path(dir)
        )));
    }
    let no_makefile = || {
        invalid(format!(
            "source directory {} has no {}; it is not a FreeBSD source tree",
            escape::path(dir),
            MAKEFILES.join(", ")
        ))
    };
    let tree = OpenDir::open(dir, SOURCE_TREE)?;
    let name = find_makefile(&tree)?.ok_or_else(no_makefile)?;
    let makefile = dir.join(name);
    let text = match read_file_beneath(&tree, name) {
        Ok(Some(text)) => text,
        Ok(None) => return Err(no_makefile()),
        Err(e @ Error::MetadataFile { .. }) => {
            return Err(invalid(format!(
                "{e}; {} is not a FreeBSD source tree",
                escape::path(dir)
            )))
        }
        Err(e) => return Err(e),
    };
    if !text
        .windows(b"buildworld".len())
        .any(|w| w == b"buildworld")
    {
        return Err(invalid(format!(
            "{} does not mention buildworld: {} is not a FreeBSD source tree",
            escape::path(&makefile),
            escape::path(dir)
        )));
    }
    Ok(())
}

/// The makefile BSD make reads in the tree open at `tree`, if any: the
/// first of [`MAKEFILES`] there, whatever its type (it is not followed).
fn find_makefile(tree: &OpenDir) -> Result<Option<&'static str>> {
    for name in MAKEFILES {
        if tree.lstat(OsStr::new(name))?.is_some() {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// A source tree, as the refusal of a symlink on the way to a file read in
/// it names it; a missing directory on the way is no file there.
const SOURCE_TREE: TreeKind = TreeKind::named("a source tree").missing_hint("absent");

/// The bytes of the file at `relative` (slash-separated) in the source tree
/// open at `tree`, read as metadata is: a regular file of at most
/// [`MAX_METADATA_BYTES`], never blocking on a FIFO, opened beneath the
/// tree one component at a time, never through a symlink (a symlinked
/// directory on the way is [`Error::UnsafePath`], a symlinked file
/// [`Error::MetadataFile`]). `None` when it is not there.
pub fn read_file_beneath(tree: &OpenDir, relative: &str) -> Result<Option<Vec<u8>>> {
    let (parent, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    let path = tree.path().join(relative);
    let parent = match tree.open_beneath(parent) {
        Err(Error::NotFound { .. }) => return Ok(None),
        opened => opened?,
    };
    let refused = |problem| Error::MetadataFile {
        path: path.clone(),
        problem,
    };
    // What lstat shows is not a regular file is refused unopened (opening
    // a device can have effects); the descriptor's fstat stays the
    // authority, for a file swapped in between.
    match parent.lstat(OsStr::new(name))? {
        None => return Ok(None),
        Some(st) => not_regular(stat::file_type(&st)).map_or(Ok(()), |p| Err(refused(p)))?,
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(&parent, name, flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) if is_symlink_refusal(e) => return Err(refused(MetadataFileProblem::Symlink)),
        Err(e) => return Err(Error::io("open", &path, e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("inspect", &path, e.into()))?;
    if let Some(problem) = not_regular(stat::file_type(&st)) {
        return Err(refused(problem));
    }
    let limit = MAX_METADATA_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_path("read", &path)?;
    if bytes.len() > limit {
        return Err(refused(MetadataFileProblem::TooLarge { limit }));
    }
    Ok(Some(bytes))
}

/// Why a file of type `kind` is not read as metadata, if it is not a
/// regular file.
fn not_regular(kind: FileType) -> Option<MetadataFileProblem> {
    let kind = match kind {
        FileType::RegularFile => return None,
        FileType::Symlink => return Some(MetadataFileProblem::Symlink),
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    };
    Some(MetadataFileProblem::NotRegular { kind, named: None })
}

/// What `sys/conf/newvers.sh` declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newvers {
    /// `TYPE` (`FreeBSD` when the file has none).
    pub name: String,
    /// `REVISION-BRANCH`, for example `15.0-STABLE`.
    pub version: String,
}

/// Reads `TYPE`, `REVISION` and `BRANCH` from the source tree's
/// [`NEWVERS`], opened beneath the tree, never through a symlink
/// ([`read_file_beneath`]). A file without `REVISION=` and `BRANCH=` lines
/// is [`Error::InvalidMetadata`] naming the missing field.
pub fn read_newvers(source: &Path) -> Result<Newvers> {
    let tree = OpenDir::open(source, SOURCE_TREE)?;
    let path = source.join(NEWVERS);
    let bytes = read_file_beneath(&tree, NEWVERS)?.ok_or_else(|| Error::NotFound {
        path: path.clone(),
        hint:
            "a FreeBSD source tree declares its version there; give the FreeBSD version explicitly"
                .into(),
    })?;
    parse_newvers(&path, &bytes)
}

/// What the [`NEWVERS`] file named `path` in messages, whose contents are
/// `bytes`, declares (see [`read_newvers`]).
pub fn parse_newvers(path: &Path, bytes: &[u8]) -> Result<Newvers> {
    let invalid = |name: &str, message: String| Error::InvalidMetadata {
        path: path.to_path_buf(),
        field: name.to_string(),
        line: None,
        message,
    };
    // Read as bytes: a value that is not UTF-8 is named escaped (`\377`),
    // not made lossy.
    let var = |name: &str| -> Result<Option<String>> {
        let found = bytes.split(|b| *b == b'\n').find_map(|l| {
            l.trim_ascii()
                .strip_prefix(name.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
        });
        let Some(value) = found else { return Ok(None) };
        let value = value.trim_ascii();
        let start = value.iter().position(|b| *b != b'"').unwrap_or(value.len());
        let end = value
            .iter()
            .rposition(|b| *b != b'"')
            .map_or(start, |i| i + 1);
        let value = &value[start..end.max(start)];
        match std::str::from_utf8(value) {
            Ok(text) => Ok(Some(text.to_string())),
            Err(_) => Err(invalid(
                name,
                format!(
                    "{} is not UTF-8; give the FreeBSD version explicitly",
                    escape::bytes(value)
                ),
            )),
        }
    };
    let required = |name: &str| {
        var(name)?.ok_or_else(|| {
            invalid(
                name,
                format!("no {name}= line; give the FreeBSD version explicitly"),
            )
        })
    };
    let (revision, branch) = (required("REVISION")?, required("BRANCH")?);
    Ok(Newvers {
        name: var("TYPE")?.unwrap_or_else(|| "FreeBSD".into()),
        version: format!("{revision}-{branch}"),
    })
}

/// The source branch a version usually comes from: 15.0-STABLE -> stable/15,
/// 15.0-CURRENT -> main, 14.2-RELEASE -> releng/14.2.
pub fn branch_of(version: &str) -> String {
    let (revision, kind) = version.split_once('-').unwrap_or((version, ""));
    let major = revision.split('.').next().unwrap_or(revision);
    match kind {
        "STABLE" => format!("stable/{major}"),
        "CURRENT" => "main".into(),
        k if k.starts_with("RELEASE") || k.starts_with("BETA") || k.starts_with("RC") => {
            format!("releng/{revision}")
        }
        _ => kind.to_lowercase(),
    }
}

/// FreeBSD's `TARGET` for a `TARGET_ARCH`.
pub fn target_of(arch: &str) -> &str {
    match arch {
        "aarch64" => "arm64",
        "armv6" | "armv7" => "arm",
        a if a.starts_with("powerpc") => "powerpc",
        a if a.starts_with("riscv") => "riscv",
        other => other,
    }
}

/// The `TARGET_ARCH` FreeBSD's Makefile builds for a `TARGET` given alone:
/// arm64 -> aarch64, arm -> armv7, riscv -> riscv64; any other (amd64,
/// i386, powerpc) its own name.
pub fn arch_of(target: &str) -> &str {
    match target {
        "arm64" => "aarch64",
        "arm" => "armv7",
        "riscv" => "riscv64",
        other => other,
    }
}

/// Whether `target` and `target_arch` go together ([`target_of`]): a
/// mismatch (`TARGET=arm64 TARGET_ARCH=amd64`) is refused by FreeBSD's
/// make only once the build runs; this says so before, with what each
/// goes with.
pub fn check_target_pair(target: &str, target_arch: &str) -> Result<(), String> {
    match target_of(target_arch) == target {
        true => Ok(()),
        false => Err(format!(
            "TARGET {} does not go with TARGET_ARCH {}: TARGET {} builds {} by default, and TARGET_ARCH {} is built by TARGET {}; give a matching --target-arch, or leave --target out",
            escape::quoted(target),
            escape::quoted(target_arch),
            escape::quoted(target),
            escape::quoted(arch_of(target)),
            escape::quoted(target_arch),
            escape::quoted(target_of(target_arch)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_tree_needs_a_makefile_that_knows_buildworld() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_source_tree(&dir.path().join("missing")).unwrap_err();
        assert!(
            matches!(e, Error::InvalidRequest { .. }) && e.to_string().contains("does not exist"),
            "{e}"
        );
        let e = check_source_tree(dir.path()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains("has no BSDmakefile, makefile, Makefile"),
            "{text}"
        );
        std::fs::write(dir.path().join("Makefile"), "all:\n").unwrap();
        let e = check_source_tree(dir.path()).unwrap_err();
        assert!(e.to_string().contains("does not mention buildworld"), "{e}");
        std::fs::write(dir.path().join("BSDmakefile"), "buildworld:\n").unwrap();
        check_source_tree(dir.path()).unwrap();
    }

    /// Regression: the makefile and `newvers.sh` were read whole, through
    /// symlinks: a FIFO hung `source add`, and a symlink to a large file
    /// (or `/dev/zero`) took its size in memory. They are read as metadata
    /// is: regular files of at most 1 MiB, never followed, never blocking.
    /// Regression: a source directory whose name is not UTF-8 (or holds a
    /// control character) was named lossily, or raw, in the refusal: it is
    /// named as fruix names every path, escaped (`\377`).
    #[test]
    fn a_refused_source_tree_is_named_escaped() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"src\xff\x1b"));
        std::fs::create_dir(&odd).unwrap();
        std::fs::write(odd.join("Makefile"), "all:\n").unwrap();
        let text = check_source_tree(&odd).unwrap_err().to_string();
        let shown = format!("{}/src\\377\\033", dir.path().display());
        assert!(
            text.contains(&format!(
                "{shown}/Makefile does not mention buildworld: {shown} is not"
            )),
            "{text}"
        );
    }

    #[test]
    fn the_makefile_and_newvers_are_never_followed_blocked_on_or_read_past_a_cap() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(
            &outside,
            "buildworld:\nREVISION=\"15.0\"\nBRANCH=\"STABLE\"\n",
        )
        .unwrap();
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sys/conf")).unwrap();
        let makefile = src.join("Makefile");
        let newvers = src.join(NEWVERS);
        type Make<'a> = &'a dyn Fn(&Path);
        let cases: [(&str, Make, &str); 3] = [
            (
                "a symlink",
                &|p| std::os::unix::fs::symlink(&outside, p).unwrap(),
                "symlink",
            ),
            (
                "a FIFO",
                &|p| fruix_core::testing::mkfifo(p).unwrap(),
                "FIFO",
            ),
            (
                "a large file",
                &|p| {
                    std::fs::copy(&big, p).unwrap();
                },
                "larger than",
            ),
        ];
        for (what, make, says) in cases {
            for path in [&makefile, &newvers] {
                let _ = std::fs::remove_file(path);
                make(path);
            }
            let e = check_source_tree(&src).unwrap_err();
            assert!(matches!(e, Error::InvalidRequest { .. }), "{what}: {e}");
            assert!(e.to_string().contains(says), "{what}: {e}");
            assert!(
                e.to_string().contains("is not a FreeBSD source tree"),
                "{what}: {e}"
            );
            let e = read_newvers(&src).unwrap_err();
            assert!(matches!(e, Error::MetadataFile { .. }), "{what}: {e}");
            assert!(e.to_string().contains(says), "{what}: {e}");
        }
    }

    /// Regression: `newvers.sh` was opened by path, `O_NOFOLLOW` on its
    /// last component only: a `sys` or `conf` symlinked elsewhere gave the
    /// version of a file the source object does not hold. Each directory
    /// on the way is opened beneath the tree, never through a symlink.
    #[test]
    fn newvers_is_never_read_through_a_symlinked_directory() {
        let dir = tempfile::tempdir().unwrap();
        for (link, target) in fruix_core::testing::newvers_outside(dir.path()) {
            let src = dir.path().join(link.replace('/', "-"));
            std::fs::create_dir_all(src.join(link).parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&target, src.join(link)).unwrap();
            let e = read_newvers(&src).unwrap_err();
            assert!(matches!(e, Error::UnsafePath { .. }), "{link}: {e}");
            let says = format!("{}: is a symlink", src.join(link).display());
            assert!(e.to_string().contains(&says), "{link}: {e}");
        }
    }

    #[test]
    fn newvers_gives_type_revision_and_branch() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sys/conf");
        std::fs::create_dir_all(&conf).unwrap();
        let e = read_newvers(dir.path()).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let newvers = |text: &str| {
            std::fs::write(conf.join("newvers.sh"), text).unwrap();
            read_newvers(dir.path())
        };
        let e = newvers("TYPE=\"FreeBSD\"\nREVISION=\"15.0\"\n").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidMetadata { field, .. } if field == "BRANCH"),
            "{e}"
        );
        // A value that is not UTF-8 is named escaped (it was made lossy,
        // U+FFFD), the field with it.
        let bytes = b"REVISION=\"15.\xff\"\nBRANCH=\"STABLE\"\n";
        std::fs::write(conf.join("newvers.sh"), bytes).unwrap();
        let e = read_newvers(dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidMetadata { field, .. } if field == "REVISION"),
            "{e}"
        );
        assert!(e.to_string().contains("15.\\377 is not UTF-8"), "{e}");
        assert_eq!(
            newvers("# comment\nREVISION=\"15.0\"\n  BRANCH=\"STABLE\"\n").unwrap(),
            Newvers {
                name: "FreeBSD".into(),
                version: "15.0-STABLE".into()
            }
        );
    }

    #[test]
    fn branches_follow_freebsd_naming() {
        assert_eq!(branch_of("15.0-STABLE"), "stable/15");
        assert_eq!(branch_of("15.0-CURRENT"), "main");
        assert_eq!(branch_of("14.2-RELEASE-p1"), "releng/14.2");
    }

    #[test]
    fn targets_follow_freebsd_naming() {
        assert_eq!(target_of("amd64"), "amd64");
        assert_eq!(target_of("aarch64"), "arm64");
        assert_eq!(target_of("powerpc64le"), "powerpc");
        for target in ["amd64", "i386", "arm64", "arm", "riscv", "powerpc"] {
            assert_eq!(target_of(arch_of(target)), target, "{target}");
            assert_eq!(check_target_pair(target, arch_of(target)), Ok(()));
        }
        assert_eq!(arch_of("arm64"), "aarch64");
        assert_eq!(arch_of("riscv"), "riscv64");
        assert_eq!(check_target_pair("powerpc", "powerpc64le"), Ok(()));
        let e = check_target_pair("arm64", "amd64").unwrap_err();
        assert!(e.contains("\"arm64\" builds \"aarch64\""), "{e}");
    }
}
