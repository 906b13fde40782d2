//! `fruix --version`: this fruix's version, and the version of each format
//! it writes and reads, so that two machines' fruix can be compared before
//! a copy, an import or a guest build between them.

use std::sync::OnceLock;

/// Each versioned format this fruix speaks, named for people, with its
/// version.
pub fn formats() -> [(&'static str, u64); 8] {
    [
        (
            "store registry schema (newest read)",
            fruix_promote::db::SCHEMA_VERSION as u64,
        ),
        (
            "store protocol (store serve, store copy)",
            u64::from(fruix_promote::serve::VERSION),
        ),
        (
            "store archive (store export, store import)",
            u64::from(fruix_promote::archive::FORMAT_VERSION),
        ),
        (
            "promotion.scm",
            fruix_core::promotion::FORMAT_VERSION as u64,
        ),
        (
            // As the host reads it from a guest helper's `--version`.
            fruix_executors::guest::GUEST_PROTOCOL_LINE.trim_end_matches(':'),
            u64::from(fruix_executors::guest::protocol::VERSION),
        ),
        (
            "executors file",
            fruix_executors::external::file::FORMAT_VERSION as u64,
        ),
        ("matrix file", fruix_matrix::file::FORMAT_VERSION as u64),
        (
            "matrix cell report",
            u64::from(fruix_matrix::split::CELL_REPORT_VERSION),
        ),
    ]
}

/// What `fruix --version` prints after `fruix `: the version and, when
/// built from a git checkout, its commit (see `build.rs`); then one line
/// per format ([`formats`]).
pub fn long() -> &'static str {
    static LONG: OnceLock<String> = OnceLock::new();
    LONG.get_or_init(|| {
        let commit = option_env!("FRUIX_COMMIT")
            .map(|c| format!(" (commit {c})"))
            .unwrap_or_default();
        let mut text = format!("{}{commit}\nformats:", env!("CARGO_PKG_VERSION"));
        for (name, version) in formats() {
            text.push_str(&format!("\n  {name}: {version}"));
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::args::Cli;

    /// `fruix --version` names each format's version, below the version.
    #[test]
    fn the_version_lists_each_format() {
        let long = Cli::command().render_long_version();
        let mut lines = long.lines();
        let commit = option_env!("FRUIX_COMMIT")
            .map(|c| format!(" (commit {c})"))
            .unwrap_or_default();
        let first = format!("fruix {}{commit}", env!("CARGO_PKG_VERSION"));
        assert_eq!(lines.next(), Some(first.as_str()));
        assert_eq!(lines.next(), Some("formats:"));
        let listed: Vec<&str> = lines.collect();
        let expected: Vec<String> = formats()
            .iter()
            .map(|(name, version)| format!("  {name}: {version}"))
            .collect();
        assert_eq!(listed, expected);
        let protocol = format!(
            "  store protocol (store serve, store copy): {}",
            fruix_promote::serve::VERSION
        );
        assert!(listed.contains(&protocol.as_str()), "{long}");
        let short = Cli::command().render_version();
        assert_eq!(
            short.trim_end(),
            format!("fruix {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
