//! `fruix completions` and `fruix man` as users install them: bash loads
//! the completion script and completes a real command line, and groff
//! renders every man page without a warning.

use std::path::Path;
use std::process::Command;

use crate::util::{fruix, require_tool, run, run_ok};

/// What bash's completion offers for the command line `words`, the cursor
/// at the end of its last word, one candidate per line. The completion
/// function is called as bash calls it: with the command, the word being
/// completed and the word before it.
fn bash_complete(script: &Path, words: &str) -> String {
    let split: Vec<&str> = words.split(' ').collect();
    let (cur, prev) = (split[split.len() - 1], split[split.len() - 2]);
    let program = format!(
        "source {} && COMP_WORDS=({words}) && COMP_CWORD={} && COMP_LINE='{words}' && COMP_POINT=${{#COMP_LINE}} && _fruix fruix {cur} {prev} && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        split.len() - 1
    );
    let out = run(Command::new("bash").arg("-c").arg(program));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completes_fruix_commands_and_flags() {
    let script = run_ok(fruix().args(["completions", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fruix.bash");
    std::fs::write(&file, script).unwrap();
    assert_eq!(bash_complete(&file, "fruix st").trim(), "store");
    assert_eq!(
        bash_complete(&file, "fruix store verify --re").trim(),
        "--repair"
    );
}

#[test]
fn completions_are_written_for_every_shell_clap_knows() {
    for (shell, marker) in [
        ("zsh", "#compdef fruix"),
        ("fish", "complete -c fruix"),
        ("elvish", "edit:completion:arg-completer[fruix]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = run_ok(fruix().args(["completions", shell]));
        assert!(script.contains(marker), "{shell}: {script}");
    }
    let out = run(fruix().args(["completions", "tcsh"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// `page` rendered by groff, which must not warn.
fn render(page: &Path) -> String {
    let out = run(Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(page));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "{}: groff warns",
        page.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_man_page_renders_without_warnings() {
    require_tool("groff", "groff-base");
    let dir = tempfile::tempdir().unwrap();
    run_ok(fruix().args(["man", "--dir"]).arg(dir.path()));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "fruix.1",
        "fruix-build.1",
        "fruix-store-verify.1",
        "fruix-matrix-run.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
    }
    for page in &pages {
        render(&dir.path().join(page));
    }
    let verify = render(&dir.path().join("fruix-store-verify.1"));
    assert!(verify.contains("--repair"), "{verify}");
    // `fruix man` alone prints fruix(1), with the exit statuses.
    let top = run_ok(fruix().arg("man"));
    assert_eq!(
        top,
        std::fs::read_to_string(dir.path().join("fruix.1")).unwrap()
    );
    let text = render(&dir.path().join("fruix.1"));
    assert!(text.contains("Exit statuses:"), "{text}");
}
