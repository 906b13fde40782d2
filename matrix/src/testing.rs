//! Fixtures the matrix's unit tests share.

use std::path::Path;

use crate::file::MatrixFile;

/// Writes the least source tree a plan loads at `dir/src`: a `Makefile`
/// and `sys/conf/newvers.sh` naming 15.0-STABLE.
pub fn mini_source(dir: &Path) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sys/conf")).unwrap();
    std::fs::write(src.join("Makefile"), "buildworld:\n").unwrap();
    std::fs::write(
        src.join("sys/conf/newvers.sh"),
        "REVISION=\"15.0\"\nBRANCH=\"STABLE\"\n",
    )
    .unwrap();
}

/// `/ci/matrix.scm` of two cells: `remote` on any machine, and `pinned`
/// pinned to machine m2.
pub fn pinned_matrix() -> MatrixFile {
    MatrixFile::parse(
        Path::new("/ci/matrix.scm"),
        r#"(fruix-matrix (format-version 1) (source "s")
  (axes (executor "remote")) (include ((executor "pinned") (machine "m2"))))"#,
    )
    .unwrap()
}
