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
/// environment, then make; once make has exited, whatever it left running
/// in the script's session is stopped ([`leftover_kill`]), and the script
/// exits with make's status. (A cancel stops the whole session, the
/// script's shell with make.)
pub fn step_script(step: &MakeStep) -> String {
    let mut script = format!("cd {} || exit 1\n", quote_path(&step.working_dir));
    for var in &step.env_removed {
        script.push_str(&format!("unset {var}\n"));
    }
    for (var, value) in step.env_text() {
        script.push_str(&format!("{var}={}; export {var}\n", quote(&value)));
    }
    script.push_str(&quote(&step.program));
    for arg in step.args_text() {
        script.push(' ');
        script.push_str(&quote(&arg));
    }
    // A make killed by a signal kills the script by it too, so that the
    // step's end reads as make's did ("killed by signal TERM").
    script.push_str(&format!(
        "\nfruix_status=$?\n{}{}exit \"$fruix_status\"\n",
        leftover_kill(),
        "if [ \"$fruix_status\" -gt 128 ] && [ \"$fruix_status\" -lt 160 ]; then kill -$((fruix_status - 128)) $$; fi\n"
    ));
    script
}

/// Seconds a process a step's make left running has to exit after
/// `SIGTERM` before it gets `SIGKILL`.
pub const LEFTOVER_TERM_SECONDS: u32 = 2;

/// Seconds after which [`leftover_kill`] gives up.
pub const LEFTOVER_KILL_SECONDS: u32 = 10;

/// The lines that stop whatever the step's make left running (the build
/// contract: when a step's make exits, whatever it left running is
/// killed), run by the step's shell once make has exited. Only a shell
/// that leads its session does it (sshd starts each command in a session
/// of its own): every other live member of that session but the shell and
/// what it started itself (this loop's `ps`, `awk`, `sleep`; make, once
/// exited, is no parent of what it left) gets `SIGTERM`
/// once, and those left after [`LEFTOVER_TERM_SECONDS`] get `SIGKILL`,
/// until none is left; it looks ten times a second (once a second where
/// `sleep` takes whole seconds only).
pub fn leftover_kill() -> String {
    let (term, give_up) = (LEFTOVER_TERM_SECONDS * 10, LEFTOVER_KILL_SECONDS * 10);
    format!(
        r#"fruix_left() {{
  ps -A -o pid= -o ppid= -o sid= -o stat= 2>/dev/null | awk -v me="$$" '
    {{ up[$1] = $2; sid[$1] = $3; st[$1] = $4 }}
    END {{
      for (p in sid) {{
        if (sid[p] != me || st[p] ~ /^Z/) continue
        q = p; n = 0
        while (q != me && (q in up) && n < 1000) {{ q = up[q]; n++ }}
        if (q != me) print p
      }}
    }}'
}}
if [ "$(ps -o sid= -p "$$" 2>/dev/null | tr -d ' ')" = "$$" ]; then
  fruix_tenths=0
  while fruix_pids=$(fruix_left); [ -n "$fruix_pids" ]; do
    if [ "$fruix_tenths" -eq 0 ]; then
      kill -s TERM $fruix_pids 2>/dev/null
    elif [ "$fruix_tenths" -ge {term} ]; then
      kill -s KILL $fruix_pids 2>/dev/null
    fi
    [ "$fruix_tenths" -lt {give_up} ] || break
    if sleep 0.1 2>/dev/null; then fruix_tenths=$((fruix_tenths + 1))
    else sleep 1; fruix_tenths=$((fruix_tenths + 10)); fi
  done
fi
"#
    )
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
        let script = step_script(&step);
        assert!(
            script.starts_with(
                "cd /usr/src || exit 1\nunset MAKEFLAGS\nSRCCONF=/dev/null; export SRCCONF\nbmake installworld DESTDIR=/w/world 'X=a b'\nfruix_status=$?\n"
            ),
            "{script}"
        );
        assert!(script.ends_with("exit \"$fruix_status\"\n"), "{script}");
    }

    /// Regression: a step's make that left a process running (one that
    /// ignores SIGTERM, holding the step's output) kept the step from
    /// ending. Its script, leading a session of its own as under sshd,
    /// exits with make's status and leaves nothing running.
    /// A make killed by a signal: the script, no longer `exec`ing make,
    /// ends by the same signal, not with the shell's status 128 + N.
    #[test]
    fn a_step_script_ends_by_the_signal_that_killed_make() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let make = dir.path().join("make");
        std::fs::write(&make, "#!/bin/sh\nkill -s TERM $$\n").unwrap();
        std::fs::set_permissions(&make, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let step = MakeStep {
            target: "buildworld",
            program: make.to_str().unwrap().into(),
            args: vec![],
            working_dir: dir.path().into(),
            env_set: vec![],
            env_removed: vec![],
        };
        let out = Command::new("/bin/sh")
            .args(["-c", &step_script(&step)])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("sh runs");
        assert_eq!(out.status.signal(), Some(15), "{out:?}");
    }

    #[test]
    fn a_step_script_stops_what_make_left_running() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir
            .path()
            .join(format!("fruix-leftover-{}", std::process::id()));
        std::fs::copy("/bin/sleep", &marker).unwrap();
        let marker = marker.to_str().unwrap();
        let make = dir.path().join("make");
        std::fs::write(
            &make,
            format!("#!/bin/sh\n(trap '' TERM HUP; exec {marker} 60) &\nexit 3\n"),
        )
        .unwrap();
        std::fs::set_permissions(&make, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let step = MakeStep {
            target: "buildworld",
            program: make.to_str().unwrap().into(),
            args: vec!["buildworld".into()],
            working_dir: dir.path().into(),
            env_set: vec![],
            env_removed: vec![],
        };
        let started = std::time::Instant::now();
        let out = Command::new("setsid")
            .args(["-w", "/bin/sh", "-c", &step_script(&step)])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("setsid runs");
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let waited = started.elapsed();
        assert!(waited.as_secs() < 30, "waited {waited:?} on the leftover");
        let left = Command::new("pgrep").args(["-f", marker]).output().unwrap();
        assert!(left.stdout.is_empty(), "left running: {left:?}");
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
