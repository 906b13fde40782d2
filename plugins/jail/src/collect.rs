//! Slicing the install trees of the work directory into the artifacts of
//! the result root, as fruix's build driver does: `world` is the whole world
//! `DESTDIR`, `kernel` is `boot/kernel` of the kernel `DESTDIR` (with its
//! `METALOG`), `headers` is the world's `usr/include`, `bootloader` is every
//! entry of the world's `boot/` not named `kernel*`.
//!
//! Trees are moved by rename (the work directory is next to the result
//! root), and copied when the world is also wanted. Copies keep symlinks
//! verbatim and permission bits (setuid included), but not owners.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use fruix_core::error::IoContext;
use fruix_core::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    Move,
    Copy,
}

/// Collects `artifacts` from `work` into `root/artifacts/`.
pub fn collect(work: &Path, root: &Path, artifacts: &[String]) -> Result<()> {
    let world = work.join("world");
    let out = root.join("artifacts");
    let wants = |name: &str| artifacts.iter().any(|a| a == name);
    let from_world = if wants("world") {
        Transfer::Copy
    } else {
        Transfer::Move
    };
    if wants("headers") {
        place(
            &world.join("usr/include"),
            &out.join("headers/usr/include"),
            from_world,
        )?;
    }
    if wants("bootloader") {
        let boot = out.join("bootloader/boot");
        fs::create_dir_all(&boot).with_path("create", &boot)?;
        let dir = world.join("boot");
        let mut names: Vec<_> = fs::read_dir(&dir)
            .with_path("read", &dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_path("read", &dir)?;
        names.sort();
        for name in names
            .iter()
            .filter(|n| !n.as_encoded_bytes().starts_with(b"kernel"))
        {
            place(&dir.join(name), &boot.join(name), from_world)?;
        }
    }
    if wants("kernel") {
        let kernel = work.join("kernel");
        place(
            &kernel.join("boot/kernel"),
            &out.join("kernel/boot/kernel"),
            Transfer::Move,
        )?;
        if kernel.join("METALOG").exists() {
            place(
                &kernel.join("METALOG"),
                &out.join("kernel/METALOG"),
                Transfer::Move,
            )?;
        }
    }
    if wants("world") {
        place(&world, &out.join("world"), Transfer::Move)?;
    }
    Ok(())
}

fn place(from: &Path, to: &Path, how: Transfer) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_path("create", parent)?;
    }
    if how == Transfer::Move && fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_tree(from, to)
}

/// Copies `from` to `to` without following symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).with_path("read", from)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(from).with_path("read symlink", from)?;
        symlink(target, to).with_path("create symlink", to)
    } else if kind.is_dir() {
        fs::create_dir(to).with_path("create", to)?;
        for entry in fs::read_dir(from).with_path("read", from)? {
            let name = entry.with_path("read", from)?.file_name();
            copy_tree(&from.join(&name), &to.join(&name))?;
        }
        fs::set_permissions(to, meta.permissions()).with_path("set mode of", to)
    } else if kind.is_file() {
        fs::copy(from, to).with_path("copy", from)?;
        Ok(())
    } else {
        Err(Error::UnsupportedFileType {
            path: from.to_path_buf(),
            kind: "special file",
        })
    }
}

/// Removes `dir` and everything in it (read-only directories included); a
/// missing one is fine.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    if fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    make_writable(dir);
    fs::remove_dir_all(dir).with_path("remove work directory", dir)
}

fn make_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            make_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &Path, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, path.to_string_lossy().as_bytes()).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn install_trees_are_sliced_into_the_base_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let (work, root) = (dir.path().join("work"), dir.path().join("root"));
        file(&work.join("world/bin/sh"), 0o555);
        file(&work.join("world/usr/bin/su"), 0o4555);
        file(&work.join("world/usr/include/sys/param.h"), 0o444);
        file(&work.join("world/boot/loader"), 0o555);
        file(&work.join("world/boot/kernel.old/kernel"), 0o555);
        symlink("/usr/share/zoneinfo/UTC", work.join("world/boot/localtime")).unwrap();
        file(&work.join("kernel/boot/kernel/kernel"), 0o555);
        file(&work.join("kernel/METALOG"), 0o644);
        let all: Vec<String> = ["world", "kernel", "headers", "bootloader"]
            .map(String::from)
            .into();
        collect(&work, &root, &all).unwrap();
        let a = root.join("artifacts");
        for present in [
            "world/bin/sh",
            "world/usr/include/sys/param.h",
            "kernel/boot/kernel/kernel",
            "kernel/METALOG",
            "headers/usr/include/sys/param.h",
            "bootloader/boot/loader",
        ] {
            assert!(a.join(present).is_file(), "{present}");
        }
        assert!(!a.join("bootloader/boot/kernel.old").exists());
        assert_eq!(
            fs::read_link(a.join("bootloader/boot/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        let su = fs::metadata(a.join("world/usr/bin/su")).unwrap();
        assert_eq!(su.permissions().mode() & 0o7777, 0o4555);
        remove_tree(&work).unwrap();
        assert!(!work.exists());
    }
}
