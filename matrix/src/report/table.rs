//! The table `fruix matrix run` prints at the end: one row per cell, then
//! the failed cells' errors, each agreement held or broken, and the machines
//! set aside.

use super::Report;

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
                c.id.clone(),
                c.machine.clone().unwrap_or_else(|| "-".into()),
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
    for c in report.cells.iter().filter(|c| c.error.is_some()) {
        out.push_str(&format!(
            "{}: {}\n",
            c.id,
            c.error.as_deref().unwrap_or_default()
        ));
        if let Some(log) = &c.log {
            out.push_str(&format!("  log: {}\n", log.display()));
        }
    }
    for a in &report.agreement {
        if a.agree {
            out.push_str(&format!(
                "agreement: {}: {} agree\n",
                a.artifact,
                a.cells.join(", ")
            ));
            continue;
        }
        out.push_str(&format!("DIVERGENCE: {}:", a.artifact));
        for (cell, sig) in &a.signatures {
            out.push_str(&format!(
                " {cell}={}",
                sig.as_deref().unwrap_or("(missing)")
            ));
        }
        out.push('\n');
        for d in &a.differences {
            out.push_str(&format!(
                "  {} vs {}: {} {}\n",
                d.cells[0], d.cells[1], d.difference.change, d.difference.path
            ));
        }
        for d in &a.diffoscope {
            out.push_str(&format!(
                "  diffoscope {}: {}{}\n",
                d.path,
                d.status,
                d.output
                    .as_ref()
                    .map(|o| format!(" ({})", o.display()))
                    .unwrap_or_default()
            ));
        }
    }
    for s in &report.machines_set_aside {
        out.push_str(&format!("machine {} set aside: {}\n", s.machine, s.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn the_table_has_a_row_per_cell_then_errors_agreement_and_machines() {
        let dir = tempfile::tempdir().unwrap();
        let text = table(&fixtures::report(dir.path()));
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
                "DIVERGENCE: world: local-GENERIC=sha256:w1 remote-GENERIC=sha256:w2\n  local-GENERIC vs remote-GENERIC: modified ./stamp\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("machine m1 set aside: unreachable after attempt 2 of cell 2\n"));
    }
}
