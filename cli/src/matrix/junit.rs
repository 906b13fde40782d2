//! `junit.xml`: the matrix as JUnit XML, in the dialect of the Jenkins JUnit
//! schema, which GitLab, Jenkins and GitHub test reporters read.
//!
//! One test suite holds one test case per cell (`classname`
//! `fruix.matrix.EXECUTOR`): a build failure is a `<failure>`, a system
//! failure an `<error>`, a cancelled cell `<skipped>`; failures carry the
//! error and the cell log's last lines, and `<system-out>` names the
//! machine, the result bundle and the log. A second suite holds one test
//! case per agreement check, failing on divergence with the differing files.

use std::fmt::Write as _;

use super::report::{AgreementReport, CellReport, Report};
use super::runner::CellStatus;

/// How many of a cell log's last lines a failure carries.
pub const TAIL_LINES: usize = 30;

/// Escapes `text` for XML content and attributes. Characters XML 1.0 does
/// not allow (most control characters, as in colored logs) become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The last `n` lines of the file at `path` (empty when unreadable).
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn cell_case(out: &mut String, c: &CellReport) {
    let _ = writeln!(
        out,
        "    <testcase name=\"{}\" classname=\"fruix.matrix.{}\" time=\"{:.3}\">",
        escape(&c.id),
        escape(&c.executor),
        c.duration_s
    );
    let error = escape(c.error.as_deref().unwrap_or_default());
    let body = || {
        escape(&format!(
            "{}\n--- last lines of {} ---\n{}",
            c.error.as_deref().unwrap_or_default(),
            c.log.display(),
            tail(&c.log, TAIL_LINES)
        ))
    };
    match c.status {
        CellStatus::Passed => {}
        CellStatus::Cancelled => {
            let _ = writeln!(out, "      <skipped>{error}</skipped>");
        }
        CellStatus::SystemFailure => {
            let _ = writeln!(
                out,
                "      <error type=\"system-failure\" message=\"{error}\">{}</error>",
                body()
            );
        }
        CellStatus::BuildFailure => {
            let _ = writeln!(
                out,
                "      <failure type=\"build-failure\" message=\"{error}\">{}</failure>",
                body()
            );
        }
    }
    let mut system_out = format!(
        "machine: {}\nattempts: {}\nlog: {}\n",
        c.machine.as_deref().unwrap_or("-"),
        c.attempts.len(),
        c.log.display()
    );
    if let Some(result) = &c.result_store {
        let _ = writeln!(system_out, "result_store: {}", result.display());
    }
    for (name, a) in &c.artifacts {
        let _ = writeln!(
            system_out,
            "{name}: {} {}",
            a.store_path.display(),
            a.tree_signature
        );
    }
    let _ = writeln!(
        out,
        "      <system-out>{}</system-out>",
        escape(&system_out)
    );
    out.push_str("    </testcase>\n");
}

fn agreement_case(out: &mut String, a: &AgreementReport) {
    let _ = writeln!(
        out,
        "    <testcase name=\"{} agrees across {}\" classname=\"fruix.matrix.agreement\">",
        escape(&a.artifact),
        escape(&a.cells.join(", "))
    );
    if !a.agree {
        let mut body = String::new();
        for (cell, sig) in &a.signatures {
            let _ = writeln!(body, "{cell}: {}", sig.as_deref().unwrap_or("(missing)"));
        }
        for d in &a.differences {
            let _ = writeln!(
                body,
                "{} vs {}: {} {}",
                d.cells[0], d.cells[1], d.difference.change, d.difference.path
            );
        }
        let _ = writeln!(
            out,
            "      <failure type=\"divergence\" message=\"{} differs between cells that must agree\">{}</failure>",
            escape(&a.artifact),
            escape(&body)
        );
    }
    out.push_str("    </testcase>\n");
}

/// The JUnit XML of `report`; `hostname` names this host.
pub fn junit(report: &Report, hostname: &str) -> String {
    let count = |s: CellStatus| report.cells.iter().filter(|c| c.status == s).count();
    let (failures, errors, skipped) = (
        count(CellStatus::BuildFailure),
        count(CellStatus::SystemFailure),
        count(CellStatus::Cancelled),
    );
    let divergences = report.agreement.iter().filter(|a| !a.agree).count();
    let timestamp = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(report.started_at),
    )
    .to_string();
    let name = escape(&report.matrix.display().to_string());
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"fruix matrix {name}\" tests=\"{}\" failures=\"{}\" errors=\"{errors}\" time=\"{:.3}\">",
        report.cells.len() + report.agreement.len(),
        failures + divergences,
        report.duration_s
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"fruix matrix cells\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{timestamp}\" hostname=\"{}\">",
        report.cells.len(),
        report.duration_s,
        escape(hostname)
    );
    for c in &report.cells {
        cell_case(&mut out, c);
    }
    out.push_str("  </testsuite>\n");
    let _ = writeln!(
        out,
        "  <testsuite name=\"fruix matrix agreement\" tests=\"{}\" failures=\"{divergences}\" errors=\"0\" skipped=\"0\" timestamp=\"{timestamp}\" hostname=\"{}\">",
        report.agreement.len(),
        escape(hostname)
    );
    for a in &report.agreement {
        agreement_case(&mut out, a);
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_control_characters() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\u{1b}[31m\tok\n"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;\u{fffd}[31m\tok\n"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&log, 2), "3\n4");
        assert_eq!(tail(&dir.path().join("none"), 2), "");
    }
}
