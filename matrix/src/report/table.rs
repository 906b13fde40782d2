//! The table `fruix matrix run` prints at the end: one row per cell, then
//! the failed cells' errors, each agreement held or broken, and the machines
//! set aside.
//!
//! Everything a table shows that a report says (machine names, errors,
//! artifact names, signatures, paths, reasons) comes from cell reports that
//! may be untrusted: it is escaped ([`fruix_core::escape`]), so no newline
//! forges a line and no escape sequence reaches the terminal.

use fruix_core::escape;

use super::{CellReport, Report};

/// `s`, escaped to print.
fn e(s: &str) -> String {
    escape::text(s).to_string()
}

/// The table printed at the end of a run.
pub fn table(report: &Report) -> String {
    let rows: Vec<[String; 4]> = report
        .cells
        .iter()
        .map(|c| {
            let retries = if c.attempts.len() > 1 {
                format!(" ({} attempts)", c.attempts.len())
            } else {
                String::new()
            };
            [
                e(&c.id),
                c.machine.as_deref().map_or_else(|| "-".into(), e),
                format!("{}{retries}", c.status.as_str()),
                format!("{:.1}s", c.duration_s),
            ]
        })
        .collect();
    let header = ["CELL", "MACHINE", "STATUS", "TIME"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|k| {
            rows.iter()
                .chain([&header])
                .map(|r| r[k].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in [&header].into_iter().chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for c in &report.cells {
        out.push_str(&cell_error(c));
    }
    for a in &report.agreement {
        if a.agree {
            let cells: Vec<String> = a.cells.iter().map(|c| e(c)).collect();
            out.push_str(&format!(
                "agreement: {}: {} agree\n",
                e(&a.artifact),
                cells.join(", ")
            ));
            continue;
        }
        out.push_str(&format!("DIVERGENCE: {}:", e(&a.artifact)));
        for (cell, sig) in &a.signatures {
            out.push_str(&format!(
                " {}={}",
                e(cell),
                sig.as_deref().map_or_else(|| "(missing)".into(), e)
            ));
        }
        out.push('\n');
        for d in &a.differences {
            out.push_str(&format!(
                "  {} vs {}: {} {}\n",
                e(&d.cells[0]),
                e(&d.cells[1]),
                d.difference.change,
                e(&d.difference.path)
            ));
        }
        for n in &a.not_compared {
            out.push_str(&format!(
                "  {} vs {}: files not compared: {}\n",
                e(&n.cells[0]),
                e(&n.cells[1]),
                e(&n.message)
            ));
        }
        for d in &a.diffoscope {
            out.push_str(&format!(
                "  diffoscope {}: {}{}\n",
                e(&d.path),
                e(&d.status),
                d.output
                    .as_ref()
                    .map(|o| format!(" ({})", escape::path(o)))
                    .unwrap_or_default()
            ));
        }
    }
    for s in &report.machines_set_aside {
        out.push_str(&format!(
            "machine {} set aside: {}\n",
            e(&s.machine),
            e(&s.reason)
        ));
    }
    if let Some(limit) = report.time_limit_s.filter(|_| report.time_limit_reached) {
        let limit = std::time::Duration::from_secs_f64(limit);
        out.push_str(&format!(
            "stopped: the run's time limit of {} was reached\n",
            humantime::format_duration(limit)
        ));
    }
    out
}

/// A failed cell's error and its log, as the table ends with them: `ID:
/// ERROR`, then `  log: PATH` when it has a log, each line escaped (the
/// error, a message whose values are escaped already, made one safe line)
/// and ended by a newline; nothing for a cell without an error.
pub fn cell_error(c: &CellReport) -> String {
    let Some(error) = &c.error else {
        return String::new();
    };
    // An error is a message already: the values fruix put in it are
    // escaped (a backslash escaped again would show twice); what is left
    // is made one safe line, whatever a report forged.
    let mut out = format!("{}: {}\n", e(&c.id), escape::line(error));
    if let Some(log) = &c.log {
        out.push_str(&format!("  log: {}\n", escape::path(log)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{fixtures, NotCompared, NotComparedReport};

    #[test]
    fn the_table_has_a_row_per_cell_then_errors_agreement_and_machines() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = fixtures::report(dir.path());
        let world = &mut report.agreement[1];
        world.not_compared.push(NotComparedReport {
            cells: world.differences[0].cells.clone(),
            reason: NotCompared::NoStore,
            message: "no store holds the objects to compare their files (give --store)".into(),
        });
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..5],
            [
                "CELL            MACHINE  STATUS                       TIME",
                "local-GENERIC   local    passed                       2.5s",
                "local-MINIMAL   local    build-failure                2.5s",
                "remote-GENERIC  m1       system-failure (2 attempts)  2.5s",
                "remote-MINIMAL  -        cancelled                    0.0s",
            ]
        );
        assert_eq!(lines[5], "local-MINIMAL: build step `buildworld` failed");
        assert!(lines[6].starts_with("  log: /") && lines[6].ends_with("local-MINIMAL.log"));
        let never = lines
            .iter()
            .position(|l| *l == "remote-MINIMAL: never started")
            .expect("the never-started cell's line");
        assert!(
            !lines[never + 1].contains("log:"),
            "a cell that never started points to no log: {text}"
        );
        assert!(text.contains("agreement: kernel: local-GENERIC, remote-GENERIC agree\n"));
        assert!(
            text.contains(
                "DIVERGENCE: world: local-GENERIC=sha256:w1 remote-GENERIC=sha256:w2\n  local-GENERIC vs remote-GENERIC: modified ./stamp\n  local-GENERIC vs remote-GENERIC: files not compared: no store holds the objects to compare their files (give --store)\n"
            ),
            "{text}"
        );
        assert!(text.ends_with(
            "machine m1 set aside: unreachable after attempt 2 of cell remote-GENERIC\n"
        ));
    }

    /// Regression: a cell's error, whose values fruix escaped already
    /// (a path holding ESC shows as `\033`), was escaped again: `\\033`.
    #[test]
    fn an_error_s_escaped_values_show_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = fixtures::report(dir.path());
        let path = std::path::Path::new("/r/x\u{1b}[31m");
        let error = format!("set aside: {}", escape::path(path));
        report.cells[1].error = Some(error);
        let text = cell_error(&report.cells[1]);
        assert!(text.contains(": set aside: /r/x\\033[31m\n"), "{text}");
    }

    #[test]
    fn what_reports_say_is_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = fixtures::report(dir.path());
        let forged = "\u{1b}]0;x\u{7}\nfake: passed";
        let cell = &mut report.cells[1];
        cell.error = Some(forged.into());
        cell.machine = Some("m\u{1b}[31m".into());
        cell.log = Some(dir.path().join("l\nfake: log"));
        let world = &mut report.agreement[1];
        world.artifact = format!("w{forged}");
        world
            .signatures
            .insert("local-GENERIC".into(), Some(forged.into()));
        world.differences[0].difference.path = format!("./s{forged}");
        world.not_compared.push(NotComparedReport {
            cells: world.differences[0].cells.clone(),
            reason: NotCompared::NotInStore,
            message: forged.into(),
        });
        world.diffoscope.push(super::super::DiffoscopeReport {
            cells: world.differences[0].cells.clone(),
            path: format!("./s{forged}"),
            output: Some(dir.path().join("o\nfake: out")),
            status: forged.into(),
        });
        report.agreement[0].artifact = format!("k{forged}");
        report.machines_set_aside[0] = super::super::SetAside {
            machine: format!("m{forged}"),
            reason: forged.into(),
        };
        let text = table(&report);
        assert!(!text.contains(['\u{1b}', '\u{7}']), "{text:?}");
        assert!(
            !text.lines().any(|l| l.starts_with("fake:")),
            "no forged line: {text}"
        );
        assert!(
            text.contains("local-MINIMAL: \\033]0;x\\007\\nfake: passed\n"),
            "{text}"
        );
        assert!(
            text.contains("local-MINIMAL   m\\033[31m  build-failure"),
            "{text}"
        );
    }
}
