//! Artifact slicing: which installed paths of the work directory become which
//! artifact trees of the result root, written once as data ([`Slicing`]).
//! [`Slicing::apply`] does it on this machine; [`crate::sh::slicing_script`]
//! renders the same slices as a POSIX sh script for a machine that has only
//! sh, make, cc, tar and cp.
//!
//! - `world` is the whole world `DESTDIR` (with the `METALOG` a `-DNO_ROOT`
//!   install writes at its top);
//! - `kernel` is `boot/kernel` of the kernel `DESTDIR`, with that
//!   `DESTDIR`'s `METALOG` at its top when there is one;
//! - `headers` is the world's `usr/include`;
//! - `bootloader` is every entry of the world's `boot/` whose name does not
//!   start with `kernel` (so never `boot/kernel`).
//!
//! Each entry keeps its name. Trees are moved by rename when possible and
//! copied otherwise; `headers` and `bootloader` are copied when `world` is
//! also requested (the world tree is moved last). Copies keep modes (setuid
//! included), owners when running as root, hard links within a copy, and
//! symlinks verbatim; no symlink is ever followed ([`crate::tree`]).

use std::ffi::OsStr;
use std::path::Path;

use fruix_core::error::IoContext;
use fruix_core::{Error, Result};

use crate::artifact::Artifact;
use crate::dir::{OpenDir, Tree};
use crate::tree;
use crate::work::{KERNEL_DESTDIR, WORLD_DESTDIR};

pub use crate::tree::Transfer;

/// The directory of the artifact trees, inside the result root.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Which entries of a slice's source directory it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The entry `name`. When it is missing, the slice fails if `required`,
    /// and does nothing otherwise.
    Entry {
        /// The entry's name in the source directory, which it keeps in the
        /// destination.
        name: &'static str,
        /// Whether a missing entry fails the slice ([`Error::NotFound`]);
        /// when false, a missing entry or source directory is skipped.
        required: bool,
    },
    /// Every entry whose name does not start with `prefix` (dot files
    /// included). The source directory must exist.
    EntriesExcept {
        /// The name prefix, compared bytewise, of the entries left behind.
        prefix: &'static str,
    },
}

impl Pick {
    /// The entry `name`, which must be there.
    pub const fn required(name: &'static str) -> Pick {
        Pick::Entry {
            name,
            required: true,
        }
    }

    /// The entry `name`, when it is there.
    pub const fn optional(name: &'static str) -> Pick {
        Pick::Entry {
            name,
            required: false,
        }
    }
}

/// One step of the slicing: entries of a directory of the work directory,
/// placed under their own names into a directory of the result root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// The source directory, relative to the work directory (empty: the
    /// work directory itself).
    pub from: String,
    /// Which entries of `from` the slice takes.
    pub pick: Pick,
    /// The destination directory, relative to the result root; created with
    /// its parents.
    pub into: String,
    /// Whether the entries are moved out of the work directory or copied,
    /// leaving them there for a later slice.
    pub transfer: Transfer,
}

/// The slices of a build, in the order they must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slicing {
    /// The slices, run in this order by [`Slicing::apply`] and by the
    /// script [`crate::sh::slicing_script`] renders.
    pub slices: Vec<Slice>,
}

impl Slicing {
    /// The slices that collect `artifacts` (see the module docs).
    pub fn for_artifacts(artifacts: &[Artifact]) -> Slicing {
        let wants = |a: Artifact| artifacts.contains(&a);
        // Parts of the world are copied when it is wanted whole (it is moved
        // last), and moved out of it when it is not.
        let from_world = if wants(Artifact::World) {
            Transfer::Copy
        } else {
            Transfer::Move
        };
        let into = |a: Artifact, sub: &str| match sub {
            "" => format!("{ARTIFACTS_DIR}/{}", a.name()),
            sub => format!("{ARTIFACTS_DIR}/{}/{sub}", a.name()),
        };
        let mut slices = Vec::new();
        if wants(Artifact::Headers) {
            slices.push(Slice {
                from: format!("{WORLD_DESTDIR}/usr"),
                pick: Pick::required("include"),
                into: into(Artifact::Headers, "usr"),
                transfer: from_world,
            });
        }
        if wants(Artifact::Bootloader) {
            slices.push(Slice {
                from: format!("{WORLD_DESTDIR}/boot"),
                pick: Pick::EntriesExcept { prefix: "kernel" },
                into: into(Artifact::Bootloader, "boot"),
                transfer: from_world,
            });
        }
        if wants(Artifact::Kernel) {
            slices.push(Slice {
                from: format!("{KERNEL_DESTDIR}/boot"),
                pick: Pick::required("kernel"),
                into: into(Artifact::Kernel, "boot"),
                transfer: Transfer::Move,
            });
            slices.push(Slice {
                from: KERNEL_DESTDIR.to_string(),
                pick: Pick::optional("METALOG"),
                into: into(Artifact::Kernel, ""),
                transfer: Transfer::Move,
            });
        }
        if wants(Artifact::World) {
            slices.push(Slice {
                from: String::new(),
                pick: Pick::required(WORLD_DESTDIR),
                into: ARTIFACTS_DIR.to_string(),
                transfer: Transfer::Move,
            });
        }
        Slicing { slices }
    }

    /// Slices the install trees of `work` into `result_root` on this
    /// machine. Blocking. A required entry the build did not install is
    /// [`Error::NotFound`].
    pub fn apply(&self, work: &Path, result_root: &Path) -> Result<()> {
        let work = OpenDir::open(work, Tree::Install)?;
        std::fs::create_dir_all(result_root).with_path("create", result_root)?;
        let root = OpenDir::open(result_root, Tree::ResultRoot)?;
        for slice in &self.slices {
            // Every directory on the way is opened by descriptor, never
            // through a symlink: the build may have planted one anywhere.
            let from = work.open_beneath(&slice.from);
            match slice.pick {
                Pick::Entry { name, required } => {
                    let name = OsStr::new(name);
                    let from = match from {
                        Err(Error::NotFound { .. }) if !required => continue,
                        from => from?,
                    };
                    if !required && from.lstat(name)?.is_none() {
                        continue;
                    }
                    let into = root.create_beneath(&slice.into)?;
                    tree::place_at((&from, name), (&into, name), slice.transfer)?;
                }
                Pick::EntriesExcept { prefix } => {
                    let from = from?;
                    let into = root.create_beneath(&slice.into)?;
                    for name in from.entries()? {
                        if !name.as_encoded_bytes().starts_with(prefix.as_bytes()) {
                            tree::place_at((&from, &name), (&into, &name), slice.transfer)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    use super::*;
    use crate::tree::NOT_INSTALLED_HINT;

    fn file(path: &Path, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, path.file_name().unwrap().as_encoded_bytes()).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A small work directory as the install steps leave it: a world with
    /// setuid files, hard links, symlinks, dot files and kernel entries in
    /// `boot/`, a read-only directory and a METALOG; a kernel with its
    /// METALOG.
    pub(crate) fn installed_work_dir(work: &Path) {
        let world = work.join(WORLD_DESTDIR);
        file(&world.join("bin/sh"), 0o555);
        file(&world.join("usr/bin/su"), 0o4555);
        file(&world.join("usr/bin/vi"), 0o555);
        fs::hard_link(world.join("usr/bin/vi"), world.join("usr/bin/ex")).unwrap();
        file(&world.join("usr/include/sys/param.h"), 0o444);
        file(&world.join("usr/include/stdio.h"), 0o444);
        fs::hard_link(
            world.join("usr/include/stdio.h"),
            world.join("usr/include/sys/stdio.h"),
        )
        .unwrap();
        symlink("sys/param.h", world.join("usr/include/param.h")).unwrap();
        file(&world.join("boot/loader"), 0o555);
        file(&world.join("boot/loader.efi"), 0o555);
        file(&world.join("boot/.hidden"), 0o444);
        file(&world.join("boot/setuid-helper"), 0o4755);
        file(&world.join("boot/..dots"), 0o444);
        file(&world.join("boot/defaults/loader.conf"), 0o444);
        fs::set_permissions(
            world.join("boot/defaults"),
            fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        file(&world.join("boot/kernel/kernel"), 0o555);
        file(&world.join("boot/kernel.old/kernel"), 0o555);
        symlink("/usr/share/zoneinfo/UTC", world.join("boot/localtime")).unwrap();
        symlink("nowhere", world.join("boot/dangling")).unwrap();
        file(&world.join("METALOG"), 0o644);
        let kernel = work.join(KERNEL_DESTDIR);
        file(&kernel.join("boot/kernel/kernel"), 0o555);
        file(&kernel.join("boot/kernel/if_em.ko"), 0o555);
        file(&kernel.join("METALOG"), 0o644);
    }

    /// Each path of `tree` with what identifies it: type, mode, content or
    /// target, and which other paths share its inode.
    pub(crate) fn describe(tree: &Path) -> BTreeMap<PathBuf, String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
            for name in tree::entries(dir).unwrap() {
                let path = dir.join(name);
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    walk(root, &path, out);
                }
                out.push((path.strip_prefix(root).unwrap().to_path_buf(), meta));
            }
        }
        let mut entries = Vec::new();
        walk(tree, tree, &mut entries);
        let mut described = BTreeMap::new();
        for (path, meta) in &entries {
            let full = tree.join(path);
            let what = if meta.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(&full).unwrap().display())
            } else if meta.is_dir() {
                format!("dir {:o}", meta.mode() & 0o7777)
            } else {
                let links: Vec<_> = entries
                    .iter()
                    .filter(|(p, m)| p != path && m.ino() == meta.ino() && m.dev() == meta.dev())
                    .map(|(p, _)| p.display().to_string())
                    .collect();
                format!(
                    "file {:o} {:?} links {links:?}",
                    meta.mode() & 0o7777,
                    fs::read(&full).unwrap()
                )
            };
            described.insert(path.clone(), what);
        }
        described
    }

    fn all() -> Slicing {
        Slicing::for_artifacts(&Artifact::ALL)
    }

    #[test]
    fn install_trees_are_sliced_into_the_base_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let (work, root) = (dir.path().join("work"), dir.path().join("root"));
        installed_work_dir(&work);
        all().apply(&work, &root).unwrap();
        let a = root.join(ARTIFACTS_DIR);
        for present in [
            "world/bin/sh",
            "world/METALOG",
            "world/usr/include/sys/param.h",
            "world/boot/kernel/kernel",
            "kernel/boot/kernel/kernel",
            "kernel/boot/kernel/if_em.ko",
            "kernel/METALOG",
            "headers/usr/include/sys/param.h",
            "bootloader/boot/loader",
            "bootloader/boot/loader.efi",
            "bootloader/boot/.hidden",
            "bootloader/boot/..dots",
            "bootloader/boot/defaults/loader.conf",
        ] {
            assert!(a.join(present).is_file(), "{present} missing");
        }
        for absent in ["bootloader/boot/kernel", "bootloader/boot/kernel.old"] {
            assert!(a.join(absent).symlink_metadata().is_err(), "{absent}");
        }
        assert_eq!(
            fs::read_link(a.join("bootloader/boot/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        let su = fs::metadata(a.join("world/usr/bin/su")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4555);
        let (stdio, sys_stdio) = (
            fs::metadata(a.join("headers/usr/include/stdio.h")).unwrap(),
            fs::metadata(a.join("headers/usr/include/sys/stdio.h")).unwrap(),
        );
        assert_eq!(stdio.ino(), sys_stdio.ino(), "a copy keeps hard links");
        assert_eq!(
            describe(&a.join("headers/usr/include")),
            describe(&a.join("world/usr/include")),
            "headers are the world's usr/include"
        );
        assert!(
            !work.join(WORLD_DESTDIR).exists(),
            "the world is moved, last"
        );
    }

    #[test]
    fn without_the_world_its_parts_are_moved_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let (work, root) = (dir.path().join("work"), dir.path().join("root"));
        installed_work_dir(&work);
        let slicing = Slicing::for_artifacts(&[Artifact::Headers, Artifact::Bootloader]);
        assert!(slicing.slices.iter().all(|s| s.transfer == Transfer::Move));
        slicing.apply(&work, &root).unwrap();
        assert!(root.join("artifacts/headers/usr/include/stdio.h").is_file());
        assert!(!work.join("world/usr/include").exists());
        assert!(!work.join("world/boot/loader").exists());
        assert!(
            work.join("world/boot/kernel.old").is_dir(),
            "kernel entries stay"
        );
        assert!(!root.join("artifacts/world").exists());
        assert!(!root.join("artifacts/kernel").exists());
    }

    #[test]
    fn a_kernel_without_metalog_is_fine_and_a_missing_kernel_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (work, root) = (dir.path().join("work"), dir.path().join("root"));
        installed_work_dir(&work);
        fs::remove_file(work.join("kernel/METALOG")).unwrap();
        let kernel = Slicing::for_artifacts(&[Artifact::Kernel]);
        kernel.apply(&work, &root).unwrap();
        assert!(root.join("artifacts/kernel/boot/kernel/kernel").is_file());
        assert!(!root.join("artifacts/kernel/METALOG").exists());

        let e = kernel.apply(&work, &dir.path().join("again")).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound { path, .. } if path.ends_with("kernel/boot/kernel")),
            "{e}"
        );
        assert!(e.to_string().contains(NOT_INSTALLED_HINT), "{e}");
    }

    /// An installed work directory whose `link` is a symlink to a host
    /// directory holding `secret`: the temporary directory, the work
    /// directory, the result root to be, and the host directory.
    fn planted(link: &str, secret: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (work, root) = (dir.path().join("work"), dir.path().join("root"));
        let outside = dir.path().join("host");
        installed_work_dir(&work);
        file(&outside.join(secret), 0o600);
        fs::remove_dir_all(work.join(link)).unwrap();
        symlink(&outside, work.join(link)).unwrap();
        (dir, work, root, outside)
    }

    #[test]
    fn a_symlinked_source_directory_is_refused_and_never_followed() {
        // The link is the bootloader's source directory itself, or a
        // directory on the way to it; the bootloader is moved when alone,
        // copied with the world.
        for (link, secret) in [("world/boot", "secret"), ("world", "boot/secret")] {
            for artifacts in [&[Artifact::Bootloader][..], &Artifact::ALL[..]] {
                let case = format!("{link} {artifacts:?}");
                let (_dir, work, root, outside) = planted(link, secret);
                let before = describe(&outside);

                let e = Slicing::for_artifacts(artifacts)
                    .apply(&work, &root)
                    .unwrap_err();
                assert!(
                    matches!(&e, Error::UnsafePath { path, message }
                        if path.ends_with(link)
                            && message.contains("is a symlink")
                            && message.contains("never follows symlinks in a build's install tree")),
                    "{case}: {e}"
                );
                assert_eq!(
                    describe(&outside),
                    before,
                    "{case}: the target is untouched"
                );
                assert!(
                    fs::symlink_metadata(root.join("artifacts/bootloader/boot")).is_err(),
                    "{case}: nothing of the target is in the result root"
                );
            }
        }
    }

    #[test]
    fn a_symlink_on_the_way_to_a_moved_entry_is_refused_and_never_followed() {
        let (_dir, work, root, outside) = planted("kernel/boot", "kernel/secret");
        let before = describe(&outside);

        let kernel = Slicing::for_artifacts(&[Artifact::Kernel]);
        assert!(kernel.slices.iter().all(|s| s.transfer == Transfer::Move));
        let e = kernel.apply(&work, &root).unwrap_err();
        assert!(
            matches!(&e, Error::UnsafePath { path, message }
                if path.ends_with("kernel/boot") && message.contains("is a symlink")),
            "{e}"
        );
        assert_eq!(describe(&outside), before, "the target stays where it was");
        assert!(fs::symlink_metadata(root.join("artifacts/kernel/boot/kernel")).is_err());
    }

    #[test]
    fn a_symlinked_entry_is_placed_as_a_symlink() {
        let (_dir, work, root, outside) = planted("world/usr/include", "secret.h");
        Slicing::for_artifacts(&Artifact::ALL)
            .apply(&work, &root)
            .unwrap();
        let headers = root.join("artifacts/headers/usr/include");
        assert_eq!(fs::read_link(&headers).unwrap(), outside);
        assert!(outside.join("secret.h").is_file());
    }
}
