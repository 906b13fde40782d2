//! Probes: the one file of each artifact that `promotion.scm` names as
//! standing for it, chosen here and nowhere else.

use std::path::Path;

use fruix_core::promotion::base_probes;

/// The probe of artifact `name`: the first of the core's allowed probes
/// ([`fruix_core::promotion::BASE_ARTIFACTS`]) for which `is_regular_file`
/// holds, else the first allowed one (result-root validation then reports it
/// missing). Empty for a name that is not a base artifact.
///
/// `is_regular_file` gets the probe's path relative to the artifact tree; it
/// is how the caller looks at a tree that may be on another machine.
///
/// ```
/// use fruix_freebsd::probe::choose_probe;
/// assert_eq!(choose_probe("bootloader", |p| p == "boot/loader.efi"), "boot/loader.efi");
/// assert_eq!(choose_probe("bootloader", |_| false), "boot/loader");
/// assert_eq!(choose_probe("lib32", |_| true), "");
/// ```
pub fn choose_probe(name: &str, is_regular_file: impl Fn(&str) -> bool) -> String {
    let probes = base_probes(name).unwrap_or_default();
    probes
        .iter()
        .find(|p| is_regular_file(p))
        .or(probes.first())
        .map(|p| p.to_string())
        .unwrap_or_default()
}

/// [`choose_probe`] for the artifact tree `dir` on this machine: a probe is
/// a regular file there, not a symlink to one.
pub fn probe_in(name: &str, dir: &Path) -> String {
    choose_probe(name, |p| {
        dir.join(p)
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootloader_probe_prefers_loader_then_loader_efi() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        assert_eq!(probe_in("bootloader", dir.path()), "boot/loader");
        std::fs::write(dir.path().join("boot/loader.efi"), "").unwrap();
        assert_eq!(probe_in("bootloader", dir.path()), "boot/loader.efi");
        std::fs::write(dir.path().join("boot/loader"), "").unwrap();
        assert_eq!(probe_in("bootloader", dir.path()), "boot/loader");
    }

    #[test]
    fn a_symlink_is_not_a_probe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        std::fs::write(dir.path().join("boot/loader.real"), "").unwrap();
        std::os::unix::fs::symlink("loader.real", dir.path().join("boot/loader")).unwrap();
        std::fs::write(dir.path().join("boot/loader.efi"), "").unwrap();
        assert_eq!(probe_in("bootloader", dir.path()), "boot/loader.efi");
    }

    #[test]
    fn each_base_artifact_has_its_probe() {
        let everything = |_: &str| true;
        assert_eq!(choose_probe("world", everything), "bin/sh");
        assert_eq!(choose_probe("kernel", everything), "boot/kernel/kernel");
        assert_eq!(
            choose_probe("headers", everything),
            "usr/include/sys/param.h"
        );
        assert_eq!(choose_probe("bootloader", everything), "boot/loader");
        assert_eq!(choose_probe("debug", everything), "");
    }
}
