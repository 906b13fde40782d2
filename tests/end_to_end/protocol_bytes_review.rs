//! Regressions from a review of how the host reads the guest helper's
//! protocol: its stdout lines are parsed from the bytes that came, never
//! from text made of them, and what is shown of a refused line is escaped
//! once.

use crate::ssh_import::{answering_helper, build_exiting};
use crate::sshd::Sshd;

/// Regression: the helper's stdout lines were turned into text (a byte
/// that is not UTF-8 as `\377`) before they were parsed, so a protocol
/// line holding a raw 0xff byte was refused for an "invalid escape" it
/// never had, and shown escaped twice (`\\377`). It is refused as not
/// UTF-8, naming the byte, and shown escaped once.
#[test]
fn a_protocol_line_that_is_not_utf8_is_refused_as_such_and_escaped_once() {
    let sshd = Sshd::trusted();
    let line = "{\"v\":1,\"event\":{\"event\":\"warning\",\"message\":\"ok ";
    let at = line.len();
    let helper = answering_helper(
        &sshd,
        "not-utf8",
        &format!("printf '%s\\377\"}}}}\\n' '{line}'\nexit 0"),
    );
    let stderr = build_exiting(&sshd, &helper, 3, "a protocol line that is not UTF-8");
    assert!(
        stderr.contains("the guest helper broke its protocol"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("(not UTF-8 at byte {at})")),
        "{stderr}"
    );
    assert!(stderr.contains(r#""message":"ok \377"}}"#), "{stderr}");
    assert!(!stderr.contains(r"\\377"), "escaped twice: {stderr}");
}
