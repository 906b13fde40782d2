//! The README's main command works as written.

use std::path::Path;

use crate::util::{fruix, key_values, require_tool, run_ok};

/// The README's text.
fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// The shell line in the fenced block after `marker` in README.md.
fn readme_command(marker: &str) -> String {
    let readme = readme();
    let after = readme
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    after
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .nth(1)
        .expect("a command line follows the marker")
        .to_string()
}

/// A directory shaped like a fresh clone: `tests/fixtures` is there.
fn fresh_clone() -> tempfile::TempDir {
    let clone = tempfile::tempdir().unwrap();
    std::fs::create_dir(clone.path().join("tests")).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .canonicalize()
        .unwrap();
    std::os::unix::fs::symlink(fixtures, clone.path().join("tests/fixtures")).unwrap();
    clone
}

#[test]
fn readme_main_command_builds_the_fixture_into_frx_store() {
    require_tool("bmake", "bmake");
    let line = readme_command("<!-- main-command -->");
    let (_, fruix_args) = line
        .split_once("cargo run --release -- ")
        .expect("the main command runs fruix through cargo run");
    let args: Vec<&str> = fruix_args.split_whitespace().collect();
    assert_eq!(&args[..3], ["build", "--executor", "local"], "{line}");
    // Run it from a directory shaped like a fresh clone, so that ./frx-store lands there.
    let clone = fresh_clone();
    let out = run_ok(fruix().args(&args).current_dir(clone.path()));
    let kv = key_values(&out);
    // The output the README shows has the keys the command prints, in order
    // (it once ended before `out_link`).
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| Some(l.split_once('=')?.0.to_string()))
            .collect()
    };
    let readme = readme();
    let shown = readme
        .split("<!-- main-command -->")
        .nth(1)
        .and_then(|after| after.split("```text\n").nth(1))
        .and_then(|block| block.split("\n```").next())
        .expect("README.md shows the main command's output");
    assert_eq!(keys(shown), keys(&out), "README.md shows:\n{shown}");
    let store = clone.path().join("frx-store").canonicalize().unwrap();
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        assert!(
            Path::new(&kv[&format!("{artifact}_store")]).starts_with(&store),
            "{kv:?}"
        );
    }
    assert!(readme_command("<!-- test-command -->").contains("scripts/test.sh"));
}

/// The README's exit-status table and `fruix --help` both say exactly what
/// the one list in the code says.
#[test]
fn exit_statuses_in_readme_and_help_match_the_code() {
    use fruix_core::ExitStatus;
    let readme = readme();
    let section = readme
        .split("\n## Exit statuses\n")
        .nth(1)
        .expect("README.md has an Exit statuses section");
    let rows: Vec<(u8, String)> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Some((cells.first()?.parse().ok()?, cells.get(1)?.to_string()))
        })
        .collect();
    let expected: Vec<(u8, String)> = ExitStatus::ALL
        .iter()
        .map(|s| (s.code(), s.meaning().to_string()))
        .collect();
    assert_eq!(rows, expected);
    let help = run_ok(fruix().arg("--help"));
    assert!(
        help.contains(&ExitStatus::help_table()),
        "--help does not end with the exit-status table:\n{help}"
    );
}

/// A fenced block of README.md: its info string, its text, and the line
/// of its opening fence.
struct Block {
    info: String,
    text: String,
    line: usize,
}

/// Every fenced block of README.md, indented ones included.
fn readme_blocks() -> Vec<Block> {
    let readme = readme();
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(trimmed);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md has an unclosed fence");
    blocks
}

/// Lines of README.md that open a block run by its own test.
const RUN_ELSEWHERE: [&str; 2] = ["<!-- main-command -->", "<!-- test-command -->"];

#[test]
fn every_runnable_readme_example_exits_as_the_readme_says() {
    require_tool("bmake", "bmake");
    let readme = readme();
    let lines: Vec<&str> = readme.lines().collect();
    // A directory shaped like a fresh clone, with the fruix under test first
    // on PATH and a home of its own (so no default store is shared).
    let clone = fresh_clone();
    std::fs::create_dir(clone.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fruix"), clone.path().join("bin/fruix"))
        .unwrap();
    let path = format!(
        "{}:{}",
        clone.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for block in readme_blocks() {
        let mut words = block.info.split_whitespace();
        if words.next() != Some("sh") {
            continue;
        }
        let labels: Vec<&str> = words.collect();
        if labels == ["illustrative"] {
            continue;
        }
        let before = lines[..block.line - 1]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .copied()
            .unwrap_or_default();
        if RUN_ELSEWHERE.contains(&before) {
            continue;
        }
        let expected: i32 = match labels.as_slice() {
            [] => 0,
            [exit] => exit
                .strip_prefix("exit=")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("README.md:{}: unknown label {exit:?}", block.line)),
            _ => panic!("README.md:{}: unknown labels {labels:?}", block.line),
        };
        let out = crate::util::run(
            std::process::Command::new("sh")
                .args(["-e", "-c", &block.text])
                .current_dir(clone.path())
                .env("PATH", &path)
                .env("HOME", clone.path())
                .env_remove("XDG_DATA_HOME")
                // An example that named no store would not touch the
                // machine's: the defaults are in the clone too.
                .env("FRUIX_STORE", clone.path().join("default-store"))
                .env("FRUIX_STATE_DIR", clone.path().join("default-state")),
        );
        assert_eq!(
            out.status.code(),
            Some(expected),
            "README.md:{}:\n{}\nstdout:\n{}\nstderr:\n{}",
            block.line,
            block.text,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(
        ran >= 4,
        "the README's runnable examples were found ({ran})"
    );
}

/// `fruix --version` prints what the README shows after its example: the
/// commit this checkout is at (`-dirty` when its sources differ), and every
/// format's version as listed.
#[test]
fn the_readme_shows_what_fruix_version_prints() {
    require_tool("git", "git");
    let blocks = readme_blocks();
    let example = blocks
        .iter()
        .position(|b| b.info == "sh" && b.text == "fruix --version\n")
        .expect("README.md runs `fruix --version`");
    let shown = &blocks[example + 1];
    assert_eq!(shown.info, "text", "README.md:{}", shown.line);
    let printed = run_ok(fruix().arg("--version"));
    let head = run_ok(
        std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    // `-dirty` when the sources the binary is built from (as `cli/build.rs`
    // lists them) differ from the commit.
    let changes = run_ok(
        std::process::Command::new("git")
            .args(["status", "--porcelain", "--"])
            .args(["Cargo.toml", "Cargo.lock", "core", "freebsd", "promote"])
            .args(["executors", "matrix", "cli", "plugins"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    );
    let dirty = if changes.trim().is_empty() {
        ""
    } else {
        "-dirty"
    };
    let first = format!(
        "fruix {} (commit {}{dirty})",
        env!("CARGO_PKG_VERSION"),
        head.trim()
    );
    let mut lines = printed.lines();
    assert_eq!(lines.next(), Some(first.as_str()), "{printed}");
    // (The blocks are read with their lines' indentation cut.)
    let rest: Vec<&str> = lines.map(str::trim_start).collect();
    let shown_rest: Vec<&str> = shown.text.lines().skip(1).collect();
    assert_eq!(rest, shown_rest, "README.md:{}", shown.line);
    assert!(
        rest.iter().any(|l| l.contains("store protocol")),
        "{printed}"
    );
}

#[test]
fn every_readme_block_says_what_it_holds() {
    for block in readme_blocks() {
        assert!(
            !block.info.is_empty(),
            "README.md:{}: label the block (sh, sh illustrative, text, json, scheme, rust, toml)",
            block.line
        );
    }
}

/// Regression: comments and docs pointed to `executors.md` in a `docs`
/// directory that does not exist. Every Markdown file under `docs` that
/// the sources, fixtures and README name must exist.
#[test]
fn documents_the_sources_point_to_exist() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut todo = vec![repo.join("README.md")];
    for dir in [
        "core",
        "promote",
        "executors",
        "matrix",
        "cli",
        "plugins",
        "freebsd",
        "bench",
        "tests",
    ] {
        todo.push(repo.join(dir));
    }
    let mut checked = 0;
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            for e in std::fs::read_dir(&path).unwrap().flatten() {
                todo.push(e.path());
            }
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        checked += 1;
        for (i, _) in text.match_indices("docs/") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                .collect();
            if name.ends_with(".md") {
                assert!(
                    repo.join(&name).is_file(),
                    "{} names {name}, which does not exist",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 100, "the sources were read ({checked} files)");
}

/// The text of the block opening at line `line` of README.md, untrimmed.
fn raw_block(line: usize) -> String {
    let readme = readme();
    readme
        .lines()
        .skip(line)
        .take_while(|l| !l.trim_start().starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The pipelines the README shows are what its example writes.
#[test]
fn the_readme_shows_the_pipelines_its_export_example_writes() {
    let blocks = readme_blocks();
    let example = blocks
        .iter()
        .position(|b| b.info == "sh" && b.text.starts_with("cat > ci-matrix.scm"))
        .expect("README.md has the export example");
    let clone = fresh_clone();
    let bin = Path::new(env!("CARGO_BIN_EXE_fruix")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_ok(
        std::process::Command::new("sh")
            .args(["-e", "-c", &raw_block(blocks[example].line)])
            .current_dir(clone.path())
            .env("PATH", path),
    );
    let shown: Vec<&Block> = blocks[example + 1..]
        .iter()
        .filter(|b| b.info == "yaml")
        .take(2)
        .collect();
    for (block, file) in shown
        .iter()
        .zip([".github/workflows/fruix.yml", ".gitlab-ci.yml"])
    {
        let written = std::fs::read_to_string(clone.path().join(file)).unwrap();
        assert_eq!(
            raw_block(block.line),
            written,
            "README.md:{} shows {file}",
            block.line
        );
    }
    assert_eq!(shown.len(), 2);
}

/// The options `fruix WORDS --help` offers, each as its long form and its
/// short form if it has one, less `--help` and `--version`. (`--executors-file`
/// is in the help of the commands that take it, and so in their synopses.)
fn help_options(words: &[&str]) -> Vec<(String, Option<String>)> {
    let help = run_ok(fruix().args(words).arg("--help"));
    let mut options: Vec<(String, Option<String>)> = help
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (short, rest) = match l.strip_prefix('-').filter(|r| !r.starts_with('-')) {
                Some(r) => (Some(format!("-{}", &r[..1])), r[1..].strip_prefix(", ")?),
                None => (None, l),
            };
            let long = rest.strip_prefix("--")?;
            let end = long.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'));
            Some((format!("--{}", &long[..end.unwrap_or(long.len())]), short))
        })
        .filter(|(long, _)| !["--help", "--version"].contains(&long.as_str()))
        .collect();
    options.dedup();
    options
}

/// Every synopsis in the README (a `fruix ...` line with `[`, and the lines
/// after it that start with `[`, in a block marked `<!-- synopsis -->`)
/// names every option its command's `--help` offers (long or short form),
/// and only those.
#[test]
fn every_readme_synopsis_names_the_options_of_its_help() {
    let readme = readme();
    let readme: Vec<&str> = readme.lines().collect();
    let synopses: Vec<Block> = readme_blocks()
        .into_iter()
        .filter(|b| readme[b.line - 2] == "<!-- synopsis -->")
        .collect();
    assert!(synopses.len() >= 4, "{} synopsis blocks", synopses.len());
    let mut checked = 0;
    for block in &synopses {
        let mut lines = block.text.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(rest) = line.strip_prefix("fruix ").filter(|_| line.contains('[')) else {
                continue;
            };
            let mut synopsis = line.to_string();
            while let Some(more) = lines.next_if(|l| l.starts_with('[')) {
                synopsis.push(' ');
                synopsis.push_str(more);
            }
            let words: Vec<&str> = rest
                .split(' ')
                .take_while(|w| {
                    !w.is_empty()
                        && !w.starts_with('-')
                        && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                })
                .collect();
            let named: Vec<&str> = synopsis
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|w| w.starts_with('-'))
                .collect();
            let options = help_options(&words);
            let missing: Vec<&String> = options
                .iter()
                .filter(|(long, short)| {
                    !named.contains(&long.as_str())
                        && !short.as_deref().is_some_and(|s| named.contains(&s))
                })
                .map(|(long, _)| long)
                .collect();
            let unknown: Vec<&&str> = named
                .iter()
                .filter(|n| {
                    !options
                        .iter()
                        .any(|(long, short)| long == *n || short.as_deref() == Some(**n))
                })
                .collect();
            assert!(
                missing.is_empty() && unknown.is_empty(),
                "README.md:{}: the synopsis of `fruix {}` lacks {missing:?}; --help has no {unknown:?}",
                block.line,
                words.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} synopses were found");
}
