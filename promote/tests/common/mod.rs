//! Helpers shared by the promote crate's integration tests.

use std::path::Path;

use fruix_core::testing::write_files;
use fruix_promote::source::{add_source, SourceFacts, SourceReport};
use fruix_promote::Store;

/// Writes `files` (path, content, mode) into the tree `tree` and adds it to
/// `store` as the source `default`, FreeBSD 15.0-STABLE of `stable/15`,
/// with no commit; the addition must succeed.
pub fn add_sample_source(store: &Store, tree: &Path, files: &[(&str, &[u8], u32)]) -> SourceReport {
    write_files(tree, files).unwrap();
    let facts = SourceFacts::without_checkout("default", "15.0-STABLE", "stable/15");
    add_source(store, tree, &facts, &|_| false, None, None).unwrap()
}
