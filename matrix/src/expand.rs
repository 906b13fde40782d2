//! From axes, `exclude` and `include` to cells, with GitHub Actions' semantics.
//!
//! 1. The axes' cartesian product, the first axis varying slowest.
//! 2. `exclude`: a combination is dropped when it matches every pair of any
//!    entry (an entry may name only some axes).
//! 3. `include`, entry by entry: the entry's pairs are added to every
//!    original combination in which they overwrite none of the original
//!    axis values (values added by an earlier include may be overwritten).
//!    An entry that fits no original combination becomes a cell of its own.
//!
//! A cell's id joins its executor and the values of every axis along which
//! the cells differ (`host-initiated-MINIMAL`), with characters other than
//! `A-Z a-z 0-9 . _ -` replaced by `_`; a repeated id gets `-2`, `-3`...

use std::collections::BTreeMap;

use fruix_core::Error;

use crate::axis::Axis;
use crate::file::MatrixFile;
use crate::Result;

/// One cell of a matrix: one build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cell {
    /// Unique within the matrix; usable in file names.
    pub id: String,
    /// The executor that builds the cell: a name of the executor registry.
    pub executor: String,
    /// The kernel configuration (`KERNCONF`); [`DEFAULT_KERNCONF`] when the
    /// cell names none.
    pub kernconf: String,
    /// The `TARGET_ARCH`; [`DEFAULT_TARGET_ARCH`] when the cell names none.
    pub target_arch: String,
    /// The cell's own make flag (after the matrix's `make-flags`).
    pub make_flag: Option<String>,
    /// The machine the cell is pinned to.
    pub machine: Option<String>,
}

impl Cell {
    /// The cell's value along `axis` (`None` when it has none).
    pub fn value(&self, axis: Axis) -> Option<&str> {
        match axis {
            Axis::Executor => Some(&self.executor),
            Axis::Kernconf => Some(&self.kernconf),
            Axis::TargetArch => Some(&self.target_arch),
            Axis::MakeFlag => self.make_flag.as_deref(),
            Axis::Machine => self.machine.as_deref(),
        }
    }
}

/// The kernel configuration of a cell that names none.
pub const DEFAULT_KERNCONF: &str = "GENERIC";

/// The TARGET_ARCH of a cell that names none.
pub const DEFAULT_TARGET_ARCH: &str = "amd64";

/// Expands axes with `exclude` and `include` (see the module docs). Generic
/// over the key so that the semantics can be checked against GitHub's own
/// examples.
pub fn expand<K: Ord + Clone>(
    axes: &[(K, Vec<String>)],
    exclude: &[Vec<(K, String)>],
    include: &[Vec<(K, String)>],
) -> Vec<BTreeMap<K, String>> {
    let mut product: Vec<BTreeMap<K, String>> = if axes.is_empty() {
        Vec::new()
    } else {
        vec![BTreeMap::new()]
    };
    for (key, values) in axes {
        product = product
            .iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    let matches = |c: &BTreeMap<K, String>, entry: &[(K, String)]| {
        entry.iter().all(|(k, v)| c.get(k) == Some(v))
    };
    product.retain(|c| !exclude.iter().any(|e| matches(c, e)));
    // Original values are those of the product; includes extend copies.
    let originals = product.clone();
    let mut extra = Vec::new();
    for entry in include {
        let mut fitted = false;
        for (original, combination) in originals.iter().zip(product.iter_mut()) {
            let overwrites = entry
                .iter()
                .any(|(k, v)| original.get(k).is_some_and(|o| o != v));
            if !overwrites {
                combination.extend(entry.iter().cloned());
                fitted = true;
            }
        }
        if !fitted {
            extra.push(entry.iter().cloned().collect());
        }
    }
    product.extend(extra);
    product
}

/// The most cells a matrix may have, its axes' product and its include
/// entries counted before anything is expanded (GitHub Actions runs at
/// most 256 jobs of one matrix; a FreeBSD base build takes an hour).
pub const MAX_CELLS: u64 = 4096;

/// The cells of `file`, in expansion order, with their ids.
pub fn cells(file: &MatrixFile) -> Result<Vec<Cell>> {
    let most = file
        .axes
        .iter()
        .fold(1u64, |n, (_, values)| n.saturating_mul(values.len() as u64))
        .saturating_add(file.include.len() as u64);
    if most > MAX_CELLS {
        return Err(crate::Error::Core(Error::InvalidMetadata {
            path: file.path.clone(),
            field: "axes".into(),
            line: None,
            message: format!(
                "the axes and include entries make up to {most} cells, more than {MAX_CELLS}; split the matrix, or give fewer values"
            ),
        }));
    }
    let combinations = expand(&file.axes, &file.exclude, &file.include);
    if combinations.is_empty() {
        return Err(crate::Error::Core(Error::InvalidMetadata {
            path: file.path.clone(),
            field: "axes".into(),
            line: None,
            message: "the matrix has no cells: give axes, or include entries, and check that exclude leaves some".into(),
        }));
    }
    let mut cells = combinations
        .iter()
        .map(|c| {
            let get = |axis: Axis| c.get(&axis).cloned();
            let executor = get(Axis::Executor).ok_or_else(|| Error::InvalidMetadata {
                path: file.path.clone(),
                field: "axes.executor".into(),
                line: None,
                message: format!(
                    "cell {} names no executor; add an executor axis, or an executor to that include entry",
                    describe(c)
                ),
            })?;
            Ok(Cell {
                id: String::new(),
                executor,
                kernconf: get(Axis::Kernconf).unwrap_or_else(|| DEFAULT_KERNCONF.into()),
                target_arch: get(Axis::TargetArch).unwrap_or_else(|| DEFAULT_TARGET_ARCH.into()),
                make_flag: get(Axis::MakeFlag),
                machine: get(Axis::Machine),
            })
        })
        .collect::<std::result::Result<Vec<_>, Error>>()?;
    assign_ids(&mut cells);
    Ok(cells)
}

fn describe(c: &BTreeMap<Axis, String>) -> String {
    let pairs: Vec<String> = c
        .iter()
        .map(|(k, v)| format!("({} {v:?})", k.name()))
        .collect();
    format!("({})", pairs.join(" "))
}

/// Gives each cell its id (see the module docs).
fn assign_ids(cells: &mut [Cell]) {
    let varying: Vec<Axis> = Axis::ALL
        .into_iter()
        .filter(|a| *a == Axis::Executor || cells.iter().any(|c| c.value(*a) != cells[0].value(*a)))
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // Every id given so far: a numbered one may be another cell's own
    // (`-DA=b` and `-DA/b` both read `-DA_b`; the second, `-DA_b-2`, is
    // the third's own id too), and is numbered on then.
    let mut taken = std::collections::HashSet::new();
    for cell in cells.iter_mut() {
        let parts: Vec<String> = varying
            .iter()
            .filter_map(|a| cell.value(*a))
            .map(sanitize)
            .collect();
        let base = parts.join("-");
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        let mut id = if *n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        while taken.contains(&id) {
            *n += 1;
            id = format!("{base}-{n}");
        }
        taken.insert(id.clone());
        cell.id = id;
    }
}

fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn entry<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    fn axis<'a>(key: &'a str, values: &[&str]) -> (&'a str, Vec<String>) {
        (key, values.iter().map(|v| v.to_string()).collect())
    }

    fn show(combinations: &[BTreeMap<&str, String>]) -> Vec<String> {
        combinations
            .iter()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    /// The example of GitHub's documentation, "Expanding or adding matrix
    /// configurations".
    #[test]
    fn include_follows_the_github_documentation_example() {
        let axes = [
            axis("fruit", &["apple", "pear"]),
            axis("animal", &["cat", "dog"]),
        ];
        let include = [
            entry(&[("color", "green")]),
            entry(&[("color", "pink"), ("animal", "cat")]),
            entry(&[("fruit", "apple"), ("shape", "circle")]),
            entry(&[("fruit", "banana")]),
            entry(&[("fruit", "banana"), ("animal", "cat")]),
        ];
        assert_eq!(
            show(&expand(&axes, &[], &include)),
            [
                "animal=cat,color=pink,fruit=apple,shape=circle",
                "animal=dog,color=green,fruit=apple,shape=circle",
                "animal=cat,color=pink,fruit=pear",
                "animal=dog,color=green,fruit=pear",
                "fruit=banana",
                "animal=cat,fruit=banana",
            ]
        );
    }

    /// GitHub's "Excluding matrix configurations" example: 12 combinations, 3 excluded.
    #[test]
    fn exclude_drops_partial_matches_before_include() {
        let axes = [
            axis("os", &["macos-latest", "windows-latest"]),
            axis("version", &["12", "14", "16"]),
            axis("environment", &["staging", "production"]),
        ];
        let exclude = [
            entry(&[
                ("os", "macos-latest"),
                ("version", "12"),
                ("environment", "production"),
            ]),
            entry(&[("os", "windows-latest"), ("version", "16")]),
        ];
        let out = expand(&axes, &exclude, &[]);
        assert_eq!(out.len(), 9);
        assert!(!show(&out)
            .iter()
            .any(|c| c.ends_with("version=16") && c.contains("windows")));
        // An include re-adds an excluded combination as a cell of its own.
        let include = [entry(&[("os", "windows-latest"), ("version", "16")])];
        let out = expand(&axes, &exclude, &include);
        assert_eq!(show(&out).last().unwrap(), "os=windows-latest,version=16");
    }

    #[test]
    fn first_axis_varies_slowest_and_no_axes_means_includes_only() {
        let out = expand(&[axis("a", &["1", "2"]), axis("b", &["x", "y"])], &[], &[]);
        assert_eq!(show(&out), ["a=1,b=x", "a=1,b=y", "a=2,b=x", "a=2,b=y"]);
        let out = expand::<&str>(&[], &[], &[entry(&[("a", "1")]), entry(&[("a", "2")])]);
        assert_eq!(show(&out), ["a=1", "a=2"]);
        assert!(expand::<&str>(&[], &[], &[]).is_empty());
    }

    fn matrix(text: &str) -> Result<Vec<Cell>> {
        let file = MatrixFile::parse(Path::new("/ci/matrix.scm"), text)?;
        cells(&file)
    }

    #[test]
    fn the_issue_example_pins_one_cell_and_names_cells_by_what_varies() {
        let cells = matrix(crate::file::EXAMPLE).unwrap();
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "local-GENERIC",
                "host-initiated-GENERIC",
                "host-initiated-MINIMAL",
                "guest-self-hosted-GENERIC-builder-2",
                "guest-self-hosted-MINIMAL",
            ]
        );
        assert_eq!(cells[3].machine.as_deref(), Some("builder-2"));
        assert_eq!(cells[0].target_arch, "amd64");
    }

    #[test]
    fn ids_are_sanitized_and_unique() {
        let cells = matrix(
            r#"(fruix-matrix (format-version 1) (source "s")
  (axes (executor "local") (make-flag "NONDETERMINISTIC=yes"))
  (include ((executor "local") (make-flag "A B")) ((executor "local") (make-flag "A B"))))"#,
        )
        .unwrap();
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["local-NONDETERMINISTIC_yes", "local-A_B", "local-A_B-2"]
        );
        // Regression: a numbered id that is another cell's own was given
        // twice (`-DA=b` and `-DA/b` both read `-DA_b`).
        let cells = matrix(
            r#"(fruix-matrix (format-version 1) (source "s")
  (axes (executor "local") (make-flag "-DA=b" "-DA/b" "-DA_b-2")))"#,
        )
        .unwrap();
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["local--DA_b", "local--DA_b-2", "local--DA_b-2-2"]);
    }

    /// Regression: a matrix of five axes of 100 values was expanded
    /// whole (10^10 cells) before anything was checked: minutes, then an
    /// allocation failure. Its size is refused before it is expanded.
    #[test]
    fn a_matrix_of_too_many_cells_is_refused_before_it_is_expanded() {
        let values: Vec<String> = (0..100).map(|i| format!("\"v{i}\"")).collect();
        let values = values.join(" ");
        let text = format!(
            r#"(fruix-matrix (format-version 1) (source "s")
  (axes (executor {values}) (kernconf {values}) (target-arch {values}) (make-flag {values})))"#
        );
        let e = matrix(&text).unwrap_err();
        assert!(
            e.to_string()
                .contains("up to 100000000 cells, more than 4096"),
            "{e}"
        );
        // A small one expands.
        let text = r#"(fruix-matrix (format-version 1) (source "s")
  (axes (executor "local") (kernconf "A" "B") (make-flag "X")))"#;
        assert_eq!(matrix(text).unwrap().len(), 2);
    }

    #[test]
    fn a_cell_without_executor_is_refused() {
        let e =
            matrix(r#"(fruix-matrix (format-version 1) (source "s") (axes (kernconf "GENERIC")))"#)
                .unwrap_err();
        assert!(e.to_string().contains("names no executor"), "{e}");
        let e = matrix(
            r#"(fruix-matrix (format-version 1) (source "s") (axes (executor "local"))
  (exclude ((executor "local"))))"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no cells"), "{e}");
    }
}
