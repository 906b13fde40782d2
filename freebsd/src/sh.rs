//! The plan rendered as POSIX sh, for a machine that has only sh, make, cc,
//! tar and cp (the guest of the `host-initiated` executor): one script per
//! make step, one that prepares the work directory, and one that slices the
//! install trees into artifacts exactly as [`Slicing::apply`] does.
//!
//! Copies go through `tar -cf`/`tar -xpf` (FreeBSD's bsdtar or GNU tar), the
//! tool at hand that keeps modes, symlinks, hard links within a copy and, as
//! root, owners; moves are `mv`.

use std::path::Path;

use fruix_core::promotion::base_probes;

use crate::artifact::Artifact;
use crate::plan::MakeStep;
use crate::slice::{Pick, Slicing, Transfer};
use crate::tree::NOT_INSTALLED_HINT;
use crate::work::WORK_SUBDIRS;

/// `s` as one word of a POSIX sh command line: as is when it is made only of
/// characters sh never interprets, else in single quotes.
///
/// ```
/// use fruix_freebsd::sh::quote;
/// assert_eq!(quote("/var/lib/fruix"), "/var/lib/fruix");
/// assert_eq!(quote("it's"), r"'it'\''s'");
/// ```
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// The script of one make step: into the source tree, the step's
/// environment, then `exec` make (so that stopping the script stops make).
pub fn step_script(step: &MakeStep) -> String {
    let mut script = format!("cd {} || exit 1\n", quote_path(&step.working_dir));
    for var in &step.env_removed {
        script.push_str(&format!("unset {var}\n"));
    }
    for (var, value) in step.env_text() {
        script.push_str(&format!("{var}={}; export {var}\n", quote(&value)));
    }
    script.push_str(&format!("exec {}", quote(&step.program)));
    for arg in step.args_text() {
        script.push(' ');
        script.push_str(&quote(&arg));
    }
    script.push('\n');
    script
}

/// Lines that make `work` a fresh work directory in a guest, removing
/// whatever is there first. Unlike [`crate::work::prepare_work_dir`], no
/// marker is checked: `work` is `ROOT.work` beside a guest result root that
/// fruix has just made in its own state directory there (a run id unique
/// to this run), never a path the user chose.
pub fn prepare_work_dir_script(work: &str) -> String {
    let subdirs: Vec<String> = WORK_SUBDIRS
        .iter()
        .map(|sub| quote(&format!("{work}/{sub}")))
        .collect();
    format!("rm -rf {}\nmkdir -p {}\n", quote(work), subdirs.join(" "))
}

/// The functions the slicing script calls: `fruix_place DIR NAME INTO HOW
/// PRESENCE` and `fruix_place_entries DIR PREFIX INTO HOW`.
const SLICING_FUNCTIONS: &str = r#"fruix_missing() {
  printf '%s: not found; %s\n' "$1" "$fruix_hint" >&2
  exit 1
}
fruix_place() {
  if [ ! -e "$1/$2" ] && [ ! -L "$1/$2" ]; then
    if [ "$5" = optional ]; then return 0; fi
    fruix_missing "$1/$2"
  fi
  mkdir -p "$3"
  if [ "$4" = move ]; then
    mv "$1/$2" "$3/$2"
  else
    tar -cf "$fruix_archive" -C "$1" "./$2"
    tar -xpf "$fruix_archive" -C "$3"
    rm -f "$fruix_archive"
  fi
}
fruix_place_entries() {
  if [ ! -d "$1" ] || [ -L "$1" ]; then fruix_missing "$1"; fi
  mkdir -p "$3"
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    if [ ! -e "$e" ] && [ ! -L "$e" ]; then continue; fi
    n=${e##*/}
    case $n in "$2"*) continue ;; esac
    fruix_place "$1" "$n" "$3" "$4" required
  done
}
"#;

/// The script that slices the install trees of `work` into `result_root`
/// as `slicing` says, stopping at the first failure. A copy is staged in
/// `WORK/slice.tar`.
pub fn slicing_script(slicing: &Slicing, work: &str, result_root: &str) -> String {
    let mut script = format!(
        "set -e\nfruix_archive={}\nfruix_hint={}\n{SLICING_FUNCTIONS}",
        quote(&format!("{work}/slice.tar")),
        quote(NOT_INSTALLED_HINT),
    );
    let under = |base: &str, relative: &str| match relative {
        "" => quote(base),
        relative => quote(&format!("{base}/{relative}")),
    };
    for slice in &slicing.slices {
        let from = under(work, &slice.from);
        let into = under(result_root, &slice.into);
        let how = match slice.transfer {
            Transfer::Move => "move",
            Transfer::Copy => "copy",
        };
        let line = match slice.pick {
            Pick::Entry { name, required } => {
                let presence = if required { "required" } else { "optional" };
                format!(
                    "fruix_place {from} {} {into} {how} {presence}\n",
                    quote(name)
                )
            }
            Pick::EntriesExcept { prefix } => {
                format!(
                    "fruix_place_entries {from} {} {into} {how}\n",
                    quote(prefix)
                )
            }
        };
        script.push_str(&line);
    }
    script
}

/// A script that prints, one per line as `ARTIFACT/PROBE`, each allowed probe
/// of `artifacts` that is a regular file (not a symlink) in
/// `RESULT_ROOT/artifacts/ARTIFACT`: what [`crate::probe::choose_probe`]
/// needs to choose from a tree on another machine.
pub fn probe_listing_script(artifacts: &[Artifact], result_root: &str) -> String {
    let mut script = String::new();
    for artifact in artifacts {
        for probe in base_probes(artifact.name()).unwrap_or_default() {
            let listed = format!("{}/{probe}", artifact.name());
            let path = quote(&format!("{result_root}/artifacts/{listed}"));
            script.push_str(&format!(
                "if [ -f {path} ] && [ ! -L {path} ]; then echo {}; fi\n",
                quote(&listed)
            ));
        }
    }
    script
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::plan::MakeStep;
    use crate::probe::{choose_probe, probe_in};
    use crate::slice::tests::{describe, installed_work_dir};
    use crate::slice::ARTIFACTS_DIR;

    fn sh(script: &str) -> std::process::Output {
        Command::new("/bin/sh")
            .args(["-c", script])
            .output()
            .expect("/bin/sh runs")
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        let out = sh(&format!("printf %s {}", quote("x'$(y) \"z\"\n")));
        assert_eq!(out.stdout, b"x'$(y) \"z\"\n");
    }

    #[test]
    fn step_script_sets_the_plan_environment() {
        let step = MakeStep {
            target: "installworld",
            program: "bmake".into(),
            args: vec![
                "installworld".into(),
                "DESTDIR=/w/world".into(),
                "X=a b".into(),
            ],
            working_dir: "/usr/src".into(),
            env_set: vec![("SRCCONF", "/dev/null".into())],
            env_removed: vec!["MAKEFLAGS"],
        };
        assert_eq!(
            step_script(&step),
            "cd /usr/src || exit 1\nunset MAKEFLAGS\nSRCCONF=/dev/null; export SRCCONF\nexec bmake installworld DESTDIR=/w/world 'X=a b'\n"
        );
    }

    #[test]
    fn prepared_work_dir_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("r 1.work");
        std::fs::create_dir_all(work.join("world/stale")).unwrap();
        let out = sh(&prepare_work_dir_script(work.to_str().unwrap()));
        assert!(out.status.success(), "{out:?}");
        assert!(!work.join("world/stale").exists());
        for sub in WORK_SUBDIRS {
            assert!(work.join(sub).is_dir(), "{sub}");
        }
    }

    /// Slices a fresh installed work directory in `dir/name` with `slice`,
    /// returning the result root.
    fn sliced(dir: &Path, name: &str, slice: impl FnOnce(&Path, &Path)) -> std::path::PathBuf {
        let (work, root) = (dir.join(name).join("work"), dir.join(name).join("root"));
        installed_work_dir(&work);
        std::fs::create_dir(&root).unwrap();
        slice(&work, &root);
        root
    }

    #[test]
    fn the_script_slices_exactly_as_the_in_process_slicing() {
        let dir = tempfile::tempdir().unwrap();
        for artifacts in [
            &Artifact::ALL[..],
            &[Artifact::Headers, Artifact::Bootloader],
            &[Artifact::Kernel],
        ] {
            let slicing = Slicing::for_artifacts(artifacts);
            let names: Vec<_> = artifacts.iter().map(|a| a.name()).collect();
            let case = names.join("-");
            let in_process = sliced(dir.path(), &format!("{case} in process"), |work, root| {
                slicing.apply(work, root).unwrap();
            });
            let by_script = sliced(dir.path(), &format!("{case} by script"), |work, root| {
                let script =
                    slicing_script(&slicing, work.to_str().unwrap(), root.to_str().unwrap());
                let out = sh(&script);
                assert!(out.status.success(), "{case}: {out:?}\n{script}");
            });
            let (expected, actual) = (describe(&in_process), describe(&by_script));
            assert!(!expected.is_empty(), "{case}: the slicing placed nothing");
            assert_eq!(actual, expected, "{case}");
            for name in &names {
                let tree = by_script.join(ARTIFACTS_DIR).join(name);
                let signature = |root: &Path| {
                    fruix_core::manifest::tree_signature(&root.join(ARTIFACTS_DIR).join(name))
                        .unwrap()
                };
                assert!(tree.is_dir(), "{case}: {name}");
                assert_eq!(signature(&by_script), signature(&in_process), "{name}");
            }
        }
    }

    #[test]
    fn the_script_names_a_missing_entry_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (work, root) = (dir.path().join("work"), dir.path().join("root"));
        installed_work_dir(&work);
        std::fs::remove_dir_all(work.join("kernel/boot/kernel")).unwrap();
        let slicing = Slicing::for_artifacts(&[Artifact::Kernel]);
        let out = sh(&slicing_script(
            &slicing,
            work.to_str().unwrap(),
            root.to_str().unwrap(),
        ));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("kernel/boot/kernel: not found; ")
                && stderr.contains(NOT_INSTALLED_HINT),
            "{stderr}"
        );
        assert!(!root.join("artifacts/kernel/METALOG").exists());
    }

    #[test]
    fn listed_probes_choose_what_the_tree_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = sliced(dir.path(), "r", |work, root| {
            Slicing::for_artifacts(&Artifact::ALL)
                .apply(work, root)
                .unwrap();
        });
        let loader = root.join("artifacts/bootloader/boot/loader");
        std::fs::remove_file(&loader).unwrap();
        std::os::unix::fs::symlink("loader.efi", &loader).unwrap();
        let out = sh(&probe_listing_script(
            &Artifact::ALL,
            root.to_str().unwrap(),
        ));
        assert!(out.status.success(), "{out:?}");
        let listed = String::from_utf8(out.stdout).unwrap();
        for artifact in Artifact::ALL {
            let name = artifact.name();
            let chosen = choose_probe(name, |p| listed.lines().any(|l| l == format!("{name}/{p}")));
            let dir = root.join(ARTIFACTS_DIR).join(name);
            assert_eq!(chosen, probe_in(name, &dir), "{name}: {listed}");
        }
        assert_eq!(
            choose_probe("bootloader", |p| listed
                .lines()
                .any(|l| l == format!("bootloader/{p}"))),
            "boot/loader.efi"
        );
    }
}
