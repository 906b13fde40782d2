//! `junit.xml`: the matrix as JUnit XML (built with `quick-junit`), in the
//! dialect of the Jenkins JUnit schema, which GitLab, Jenkins and GitHub
//! test reporters read.
//!
//! One test suite holds one test case per cell (`classname`
//! `fruix.matrix.EXECUTOR`): a build failure is a `<failure>`, a system
//! failure an `<error>`, a cancelled cell `<skipped>`; failures carry the
//! error and the cell log's last lines, and `<system-out>` names the
//! machine, the result bundle and the log. A second suite holds one test
//! case per agreement check, failing on divergence with the differing files.
//! Each suite of a report that names a pipeline run (`collect
//! --pipeline-run ID`) has the property `pipeline_run`, its id.
//!
//! The Jenkins schema allows no attribute on `<skipped>` (the reason is its
//! text: the cell's error, or what stopped it) and no `skipped` on
//! `<testsuites>`; quick-junit 0.6 writes neither. It counts a skipped case
//! as `disabled`, which a cancelled cell is not: each suite says
//! `disabled="0"` and gets its `skipped` count as an extra attribute.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use fruix_core::escape;
use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};

use super::{AgreementReport, CellReport, Report};
use crate::runner::CellStatus;

/// How many of a cell log's last lines a failure carries.
pub const TAIL_LINES: usize = 30;

/// `text` without the characters XML 1.0 never allows and quick-junit
/// keeps (U+FFFE, U+FFFF), which become U+FFFD; quick-junit itself drops
/// control characters and ANSI escapes. What a report says is escaped
/// before ([`escape::line`], as the table shows it), so that none is
/// dropped unseen.
fn xml_text(text: &str) -> String {
    text.replace(['\u{fffe}', '\u{ffff}'], "\u{fffd}")
}

/// The most of a log's end that [`tail`] reads: far more than
/// [`TAIL_LINES`] lines of a build log, and the same whatever the log's size.
pub const TAIL_BYTES: u64 = 64 << 10;

/// The last `n` lines of the log at `path`, found in its last
/// [`TAIL_BYTES`] (whose first line, cut there, is left out unless it is
/// the only one); empty when it is no regular file or cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    let bytes = read_end(path, TAIL_BYTES).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `max` bytes of the regular file at `path` (from the start of
/// a line when a whole one is there). The file is opened without
/// following a symlink or waiting on a FIFO, and its type is checked on
/// the descriptor.
fn read_end(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Ok(Vec::new());
    }
    let start = metadata.len().saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    let first_end = bytes.iter().position(|b| *b == b'\n');
    if let Some(end) = first_end.filter(|end| start > 0 && end + 1 < bytes.len()) {
        bytes.drain(..=end);
    }
    Ok(bytes)
}

/// A failed cell's failure or error: its error (escaped as the table
/// shows it: one line, control characters as `\ooo`), then its log's last
/// lines, each escaped alike.
fn non_success(c: &CellReport, kind: NonSuccessKind, ty: &str) -> TestCaseStatus {
    let error = escape::line(c.error.as_deref().unwrap_or_default());
    let body = match &c.log {
        Some(log) => format!(
            "{error}\n--- last lines of {} ---\n{}",
            escape::path(log),
            tail(log, TAIL_LINES)
                .lines()
                .map(escape::line)
                .collect::<Vec<_>>()
                .join("\n")
        ),
        None => error.clone(),
    };
    let mut status = TestCaseStatus::non_success(kind);
    status
        .set_type(ty)
        .set_message(xml_text(&error))
        .set_description(xml_text(&body));
    status
}

/// Why cancelled cell `c` did not pass: its error (fail-fast, the time
/// limit, a cancelled retry, never started), else what stops a running
/// cell without one, Ctrl-C or SIGTERM.
fn why_cancelled(c: &CellReport) -> String {
    match (&c.error, c.attempts.last()) {
        (Some(error), _) => escape::line(error),
        (None, Some(a)) => format!(
            "cancelled while attempt {} ran on {} (Ctrl-C or SIGTERM)",
            a.attempt,
            escape::text(&a.machine)
        ),
        (None, None) => "never started".into(),
    }
}

fn cell_case(c: &CellReport) -> TestCase {
    let status = match c.status {
        CellStatus::Passed => TestCaseStatus::success(),
        CellStatus::Cancelled => {
            let mut status = TestCaseStatus::skipped();
            status.set_description(xml_text(&why_cancelled(c)));
            status
        }
        CellStatus::SystemFailure => non_success(c, NonSuccessKind::Error, "system-failure"),
        CellStatus::BuildFailure => non_success(c, NonSuccessKind::Failure, "build-failure"),
        // Never passed: an error, not a skip.
        CellStatus::Missing => non_success(c, NonSuccessKind::Error, "missing"),
    };
    // One field a line, each escaped: a report's newline cannot add one.
    let mut system_out = format!(
        "machine: {}\nattempts: {}\n",
        escape::text(c.machine.as_deref().unwrap_or("-")),
        c.attempts.len(),
    );
    if let Some(log) = &c.log {
        let _ = writeln!(system_out, "log: {}", escape::path(log));
    }
    if let Some(result) = &c.result_store {
        let _ = writeln!(system_out, "result_store: {}", escape::path(result));
    }
    for (name, a) in &c.artifacts {
        let _ = writeln!(
            system_out,
            "{}: {} {}",
            escape::text(name),
            escape::path(&a.store_path),
            escape::text(&a.tree_signature)
        );
    }
    let mut case = TestCase::new(&c.id, status);
    case.set_classname(format!("fruix.matrix.{}", c.executor))
        .set_time(seconds(c.duration_s))
        .set_system_out(xml_text(&system_out));
    case
}

/// `s` seconds as a duration; zero for what is no duration (negative, too
/// large, or not a number).
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

fn agreement_case(a: &AgreementReport) -> TestCase {
    let status = if a.agree {
        TestCaseStatus::success()
    } else {
        let mut body = String::new();
        for (cell, sig) in &a.signatures {
            let sig = sig
                .as_deref()
                .map_or("(missing)".into(), |s| escape::text(s).to_string());
            let _ = writeln!(body, "{cell}: {sig}");
        }
        for d in &a.differences {
            let _ = writeln!(
                body,
                "{} vs {}: {} {}",
                d.cells[0], d.cells[1], d.difference.change, d.difference.path
            );
        }
        for n in &a.not_compared {
            let _ = writeln!(
                body,
                "{} vs {}: files not compared: {}",
                n.cells[0], n.cells[1], n.message
            );
        }
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status
            .set_type("divergence")
            .set_message(format!(
                "{} differs between cells that must agree",
                a.artifact
            ))
            .set_description(xml_text(&body));
        status
    };
    let mut case = TestCase::new(
        format!("{} agrees across {}", a.artifact, a.cells.join(", ")),
        status,
    );
    case.set_classname("fruix.matrix.agreement");
    case
}

/// A suite of `report`'s run on `hostname`, with `cases`; the skipped
/// ones are counted as `skipped`, as the Jenkins schema knows it, not as
/// `disabled`. It names the report's pipeline run, if any, as its property
/// `pipeline_run`.
fn suite(
    name: &str,
    cases: impl IntoIterator<Item = TestCase>,
    report: &Report,
    hostname: &str,
) -> TestSuite {
    let mut suite = TestSuite::new(name);
    suite.add_test_cases(cases);
    // A time no run gives (cell reports are checked, but a report is
    // written whatever it holds) is the epoch, not a panic.
    let timestamp = chrono::DateTime::from_timestamp_millis((report.started_at * 1000.0) as i64)
        .unwrap_or_default()
        .fixed_offset();
    suite.set_timestamp(timestamp);
    if let Some(run) = &report.pipeline_run {
        suite.add_property(Property::new("pipeline_run", run.as_str()));
    }
    let skipped = suite
        .test_cases
        .iter()
        .filter(|c| matches!(c.status, TestCaseStatus::Skipped { .. }))
        .count();
    // quick-junit counts the skipped cases as disabled too; no cell is.
    suite.disabled = 0;
    suite
        .extra
        .insert("skipped".into(), skipped.to_string().into());
    suite
        .extra
        .insert("hostname".into(), xml_text(hostname).into());
    suite
}

/// The JUnit report of `report`; `hostname` names this host.
pub fn junit(report: &Report, hostname: &str) -> quick_junit::Report {
    let duration = seconds(report.duration_s);
    let mut cells = suite(
        "fruix matrix cells",
        report.cells.iter().map(cell_case),
        report,
        hostname,
    );
    cells.set_time(duration);
    let agreement = suite(
        "fruix matrix agreement",
        report.agreement.iter().map(agreement_case),
        report,
        hostname,
    );
    let mut junit = quick_junit::Report::new(xml_text(&format!(
        "fruix matrix {}",
        report.matrix.display()
    )));
    junit.set_time(duration).add_test_suites([cells, agreement]);
    junit
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::report::fixtures;
    use crate::report::AttemptReport;
    use crate::split::PipelineRun;

    /// The tail as it was, read from the whole log.
    fn whole_log_tail(path: &Path, n: usize) -> String {
        let text = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&log, 2), "3\n4");
        assert_eq!(tail(&dir.path().join("none"), 2), "");
        let long: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        assert!(long.len() as u64 > TAIL_BYTES);
        let one_long_line = "x".repeat(TAIL_BYTES as usize * 2);
        for text in [
            "",
            "no newline",
            "a\r\nb\n\n\nc",
            "\u{e9}t\u{e9}\n\u{fffd}\n",
            long.as_str(),
            one_long_line.as_str(),
        ] {
            std::fs::write(&log, text).unwrap();
            let tail = tail(&log, TAIL_LINES);
            if text.len() as u64 <= TAIL_BYTES || text == long {
                assert_eq!(tail, whole_log_tail(&log, TAIL_LINES), "{text:.40?}");
            } else {
                assert_eq!(tail, "x".repeat(TAIL_BYTES as usize), "a line cut short");
            }
        }
    }

    /// Regression: `tail` read the whole log (a 300 MB log took 13 s and
    /// 538 MB to collect) for its last lines.
    #[test]
    fn tail_reads_only_the_end_of_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // Lines that are not UTF-8, then 128 MiB without a newline (a hole
        // of the file), then two lines: read whole, it has four lines.
        let mut file = std::fs::File::create(&log).unwrap();
        file.write_all(b"\xff\xfe head\n").unwrap();
        file.set_len(128 << 20).unwrap();
        file.seek(SeekFrom::End(0)).unwrap();
        file.write_all(b"\nline 1\nline 2\n").unwrap();
        drop(file);
        assert_eq!(tail(&log, TAIL_LINES), "line 1\nline 2");

        // Never through a symlink, nor waiting on a FIFO.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert_eq!(tail(&link, TAIL_LINES), "");
        let fifo = dir.path().join("fifo");
        fruix_core::testing::mkfifo(&fifo).unwrap();
        assert_eq!(tail(&fifo, TAIL_LINES), "");
    }

    /// The sample report ([`fixtures::report`]) changed by `change`: its
    /// XML, and the report read back from it.
    fn round_trip(change: impl FnOnce(&mut Report)) -> (String, quick_junit::Report) {
        let dir = tempfile::tempdir().unwrap();
        let mut report = fixtures::report(dir.path());
        change(&mut report);
        let xml = junit(&report, "builder<1>").to_string().unwrap();
        let back = quick_junit::Report::deserialize_from_str(&xml)
            .unwrap_or_else(|e| panic!("{e}:\n{xml}"));
        (xml, back)
    }

    /// Regression: a time no run gives (from a hostile cell report)
    /// panicked here.
    #[test]
    fn times_no_run_gives_are_written_as_zero() {
        let (xml, back) = round_trip(|report| {
            report.started_at = 1e300;
            report.duration_s = -1.0;
            report.cells[0].duration_s = f64::NAN;
        });
        let cells = &back.test_suites[0];
        assert_eq!(back.time, Some(Duration::ZERO), "{xml}");
        assert_eq!(cells.test_cases[0].time, Some(Duration::ZERO), "{xml}");
        assert_eq!(cells.timestamp.map(|t| t.timestamp()), Some(0), "{xml}");
        let (xml, back) = round_trip(|report| report.started_at = 1775420084.25);
        assert_eq!(
            back.test_suites[0].timestamp.map(|t| t.timestamp_millis()),
            Some(1775420084250),
            "{xml}"
        );
    }

    #[test]
    fn each_cell_status_maps_to_its_junit_element() {
        let (xml, back) = round_trip(|_| {});
        assert_eq!((back.tests, back.failures, back.errors), (6, 2, 1), "{xml}");
        let [cells, agreement] = back.test_suites.as_slice() else {
            panic!("two suites: {xml}");
        };
        assert_eq!(cells.name.as_str(), "fruix matrix cells");
        assert_eq!(cells.extra["skipped"].as_str(), "1");
        assert_eq!(cells.extra["hostname"].as_str(), "builder<1>");
        let case = |name: &str| {
            cells
                .test_cases
                .iter()
                .find(|c| c.name.as_str() == name)
                .unwrap_or_else(|| panic!("no case {name}: {xml}"))
        };
        let passed = case("local-GENERIC");
        assert!(matches!(passed.status, TestCaseStatus::Success { .. }));
        assert_eq!(
            passed.classname.as_ref().map(|c| c.as_str()),
            Some("fruix.matrix.local")
        );
        assert_eq!(passed.time, Some(Duration::from_millis(2500)));
        let out = passed.system_out.as_ref().unwrap().as_str();
        assert!(
            out.contains("machine: local\nattempts: 1\n")
                && out.contains("world: /store/aaa-world sha256:w1"),
            "{out}"
        );
        let TestCaseStatus::NonSuccess {
            kind,
            message,
            ty,
            description,
            ..
        } = &case("local-MINIMAL").status
        else {
            panic!("the build failure is a failure: {xml}");
        };
        assert_eq!(*kind, NonSuccessKind::Failure);
        assert_eq!(ty.as_ref().unwrap().as_str(), "build-failure");
        assert_eq!(
            message.as_ref().unwrap().as_str(),
            "build step `buildworld` failed"
        );
        let description = description.as_ref().unwrap().as_str();
        assert!(
            description.contains("--- last lines of ")
                && description.ends_with("line 31\nline 32\nerror: deliberate failure"),
            "the failure carries the log's last {TAIL_LINES} lines: {description}"
        );
        assert!(!description.contains("line 3\n"), "{description}");
        assert!(matches!(
            &case("remote-GENERIC").status,
            TestCaseStatus::NonSuccess { kind: NonSuccessKind::Error, ty: Some(t), .. } if t.as_str() == "system-failure"
        ));
        assert!(matches!(
            &case("remote-MINIMAL").status,
            TestCaseStatus::Skipped { description: Some(d), .. } if d.as_str() == "never started"
        ));
        assert!(xml.contains("<skipped>never started</skipped>"), "{xml}");
        assert_eq!(agreement.test_cases.len(), 2);
        let diverged = &agreement.test_cases[1];
        assert_eq!(
            diverged.name.as_str(),
            "world agrees across local-GENERIC, remote-GENERIC"
        );
        let TestCaseStatus::NonSuccess {
            ty, description, ..
        } = &diverged.status
        else {
            panic!("a divergence is a failure: {xml}");
        };
        assert_eq!(ty.as_ref().unwrap().as_str(), "divergence");
        let description = description.as_ref().unwrap().as_str();
        assert!(
            description.contains("remote-GENERIC: sha256:w2")
                && description.contains("local-GENERIC vs remote-GENERIC: modified ./stamp"),
            "{description}"
        );
    }

    /// Regression: a cancelled cell was counted twice, as `disabled`
    /// (quick-junit counts a skipped case so) and as `skipped`.
    #[test]
    fn a_cancelled_cell_is_counted_once_as_skipped() {
        let (xml, back) = round_trip(|_| {});
        let cells = &back.test_suites[0];
        assert_eq!(
            (cells.tests, cells.failures, cells.errors, cells.disabled),
            (4, 1, 1, 0),
            "{xml}"
        );
        assert_eq!(cells.extra["skipped"].as_str(), "1", "{xml}");
        let line = xml.lines().find(|l| l.contains("<testsuite ")).unwrap();
        assert!(
            line.contains(" disabled=\"0\"") && line.contains(" skipped=\"1\""),
            "{line}"
        );
    }

    /// Regression: a cell Ctrl-C (or SIGTERM) stopped while it ran, which
    /// has no error, was an empty `<skipped>`.
    #[test]
    fn a_skipped_cell_says_why_it_was_cancelled() {
        let (xml, back) = round_trip(|report| {
            let stopped = &mut report.cells[3];
            stopped.machine = Some("m2".into());
            stopped.error = None;
            stopped.attempts = vec![AttemptReport {
                attempt: 2,
                machine: "m2".into(),
                started_at: 1775420084.0,
                finished_at: 1775420086.5,
                status: CellStatus::Cancelled,
                error: Some("cancelled".into()),
            }];
        });
        let why = "cancelled while attempt 2 ran on m2 (Ctrl-C or SIGTERM)";
        assert!(
            matches!(
                &back.test_suites[0].test_cases[3].status,
                TestCaseStatus::Skipped { description: Some(d), .. } if d.as_str() == why
            ),
            "{xml}"
        );
        assert!(xml.contains(&format!("<skipped>{why}</skipped>")), "{xml}");
        let (xml, _) = round_trip(|report| {
            report.cells[3].error = Some("fail-fast: cell local-MINIMAL did not pass".into());
        });
        assert!(
            xml.contains("<skipped>fail-fast: cell local-MINIMAL did not pass</skipped>"),
            "{xml}"
        );
    }

    /// Regression: `junit.xml` did not say which pipeline run `collect
    /// --pipeline-run` took, which `report.json` records.
    #[test]
    fn each_suite_names_the_pipeline_run_the_report_names() {
        let properties = |back: &quick_junit::Report| -> Vec<Vec<(String, String)>> {
            let pairs = |s: &TestSuite| {
                let p = s.properties.iter();
                p.map(|p| (p.name.to_string(), p.value.to_string()))
                    .collect()
            };
            back.test_suites.iter().map(pairs).collect()
        };
        let (xml, back) = round_trip(|report| {
            report.pipeline_run = Some(PipelineRun::new("4242-1").unwrap());
        });
        let named = vec![("pipeline_run".to_string(), "4242-1".to_string())];
        assert_eq!(properties(&back), [named.clone(), named], "{xml}");
        let (xml, back) = round_trip(|report| report.pipeline_run = None);
        assert_eq!(properties(&back), [vec![], vec![]], "{xml}");
        assert!(!xml.contains("<properties"), "{xml}");
    }

    #[test]
    fn the_xml_keeps_to_the_jenkins_schema_attributes() {
        let (xml, _) = round_trip(|_| {});
        let testsuites = xml.lines().find(|l| l.contains("<testsuites")).unwrap();
        assert!(!testsuites.contains("skipped="), "{testsuites}");
        assert!(!testsuites.contains("timestamp="), "{testsuites}");
        assert!(testsuites.contains("time=\"61.250\""), "{testsuites}");
        assert!(!xml.contains("<skipped message"), "{xml}");
    }

    /// Regression: a cell's error lost its control characters in
    /// junit.xml (`boom RED`), where the table shows them escaped (`boom
    /// \001\002\033[31mRED`).
    #[test]
    fn control_characters_are_escaped_as_the_table_shows_them() {
        let error = "boom \u{1}\u{2}\u{1b}[31mRED\nnext \u{fffe} <&>\"";
        let (xml, back) = round_trip(|report| {
            report.cells[1].error = Some(error.into());
            report.cells[3].error = Some(error.into());
        });
        assert!(!xml.contains(['\u{1}', '\u{1b}', '\u{fffe}']), "{xml:?}");
        // As the table shows it, U+FFFE (which XML never allows) aside.
        let table = super::super::table::cell_error(&back_cell(error));
        let in_table = r#"boom \001\002\033[31mRED\nnext "#.to_string() + "\u{fffe} <&>\"";
        assert!(table.contains(&in_table), "{table}");
        let shown = in_table.replace('\u{fffe}', "\u{fffd}");
        let cases = &back.test_suites[0].test_cases;
        let TestCaseStatus::NonSuccess {
            message,
            description,
            ..
        } = &cases[1].status
        else {
            panic!("{xml}");
        };
        assert_eq!(message.as_ref().unwrap().as_str(), shown);
        let description = description.as_ref().unwrap().as_str();
        assert!(
            description.starts_with(&format!("{shown}\n--- last lines of ")),
            "{description}"
        );
        let TestCaseStatus::Skipped { description, .. } = &cases[3].status else {
            panic!("{xml}");
        };
        assert_eq!(description.as_ref().unwrap().as_str(), shown);
    }

    /// Regression: the log tail in junit.xml silently lost its control
    /// characters and ANSI escapes (quick-junit drops them), and showed
    /// format characters raw, where the error beside it shows them as
    /// `\ooo`.
    #[test]
    fn a_log_tail_is_escaped_as_the_error_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("local-MINIMAL.log");
        std::fs::write(&log, "cc \u{1b}[31mred\u{202e}txt.c\nfailed\n").unwrap();
        let (xml, back) = round_trip(|report| report.cells[1].log = Some(log.clone()));
        let TestCaseStatus::NonSuccess { description, .. } =
            &back.test_suites[0].test_cases[1].status
        else {
            panic!("{xml}");
        };
        let description = description.as_ref().unwrap().as_str();
        assert!(
            description.ends_with("cc \\033[31mred\\342\\200\\256txt.c\nfailed"),
            "{description:?}"
        );
    }

    /// A failed cell whose error is `error`.
    fn back_cell(error: &str) -> CellReport {
        let mut c = fixtures::cell("local-MINIMAL", CellStatus::BuildFailure, Path::new("/l"));
        c.error = Some(error.into());
        c
    }

    #[test]
    fn a_report_s_newline_adds_no_line_to_a_cell_s_output() {
        let (xml, back) = round_trip(|report| {
            report.cells[0].machine = Some("m\nresult_store: /forged".into());
        });
        let out = back.test_suites[0].test_cases[0]
            .system_out
            .as_ref()
            .unwrap();
        let lines: Vec<&str> = out.as_str().lines().collect();
        assert_eq!(lines[0], "machine: m\\nresult_store: /forged", "{xml}");
        assert!(
            !lines.iter().any(|l| l.starts_with("result_store: /forged")),
            "{xml}"
        );
    }
}
