//! Setuid, setgid and sticky bits that a result root records instead of
//! carrying them on disk.
//!
//! Guest output is untrusted, so an import never creates a setuid, setgid or
//! sticky file on the host: it strips the bits and lists them in
//! `RESULT_ROOT/.fruix-special-modes`. Tree signatures cover those bits, so
//! everything that signs a result root's artifact (the promotion pipeline,
//! an importer checking a guest's signature) adds the recorded bits back to
//! the entries' modes, through [`WalkOptions::extra_modes`](crate::manifest::WalkOptions).
//! The file can only *add* bits to what is signed and recorded; the store
//! strips them in any case.
//!
//! ```scheme
//! (fruix-special-modes
//!   (format-version 1)
//!   (modes
//!     ("artifacts/world/usr/bin/su" "4000")))
//! ```
//! Paths are relative to the result root and mtree-encoded (`\ooo` escapes).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lexpr::Value;

use crate::error::Result;
use crate::escape;
use crate::fsutil::read_optional_metadata_file;
use crate::manifest::{
    decode, encode_into, walk, ManifestBuilder, TreeSignature, WalkOptions, SPECIAL_BITS,
};
use crate::sexp::{self, field, shown, Writer};

/// The file name, at the top of a result root.
pub const SPECIAL_MODES_FILE: &str = ".fruix-special-modes";

const HEAD: &str = "fruix-special-modes";

/// Recorded special bits by path (bytes, relative to the result root).
pub type SpecialModes = BTreeMap<Vec<u8>, u32>;

/// Writes `modes` (special bits only) into `result_root`; nothing when empty.
pub fn write(result_root: &Path, modes: &SpecialModes) -> Result<()> {
    if modes.is_empty() {
        return Ok(());
    }
    let mut w = Writer::new(HEAD);
    w.field(field("format-version", [Value::from(1)]));
    w.list_field(
        "modes",
        modes.iter().map(|(path, bits)| {
            let mut encoded = String::new();
            encode_into(path, &mut encoded);
            Value::list(vec![
                Value::string(encoded),
                Value::string(format!("{:o}", bits & SPECIAL_BITS)),
            ])
        }),
    );
    crate::fsutil::write_atomic(&result_root.join(SPECIAL_MODES_FILE), w.finish().as_bytes())
}

/// Reads the recorded bits of `result_root` (none when the file is absent).
///
/// The file must be a regular file (never a symlink, FIFO or device) within
/// the metadata size cap; see [`read_optional_metadata_file`].
pub fn read(result_root: &Path) -> Result<SpecialModes> {
    let path = result_root.join(SPECIAL_MODES_FILE);
    let Some(text) = read_optional_metadata_file(&path)? else {
        return Ok(SpecialModes::new());
    };
    sexp::read_record(&path, &text, HEAD, |r| {
        r.format_version(1)?;
        let mut modes = SpecialModes::new();
        let (line, values) = r.raw("modes")?.unwrap_or_default();
        for value in values {
            let items: Vec<&Value> = value.list_iter().into_iter().flatten().collect();
            let pair = match items.as_slice() {
                [p, b] => p.as_str().zip(b.as_str()),
                _ => None,
            };
            let (p, b) = pair.ok_or_else(|| {
                r.error(
                    "modes",
                    Some(line),
                    format!("expected (\"PATH\" \"BITS\"), found {}", shown(&value)),
                )
            })?;
            let bits = u32::from_str_radix(b, 8)
                .ok()
                .filter(|bits| *bits != 0 && bits & !SPECIAL_BITS == 0)
                .ok_or_else(|| {
                    r.error(
                        "modes",
                        Some(line),
                        format!(
                            "{} is not a set of setuid/setgid/sticky bits in octal",
                            escape::quoted(b)
                        ),
                    )
                })?;
            modes.insert(
                decode(p).map_err(|m| r.error("modes", Some(line), m))?,
                bits,
            );
        }
        Ok(modes)
    })
}

/// The bits recorded under artifact tree `artifact_path`, keyed by path
/// relative to the artifact tree (as manifest entries are).
pub fn for_artifact(modes: &SpecialModes, artifact_path: &str) -> HashMap<Vec<u8>, u32> {
    let prefix = format!("{artifact_path}/");
    modes
        .iter()
        .filter_map(|(path, bits)| {
            path.strip_prefix(prefix.as_bytes())
                .map(|rest| (rest.to_vec(), *bits))
        })
        .collect()
}

/// The signature of artifact tree `artifact_path` of `result_root`, with the
/// special bits the result root records.
pub fn artifact_signature(result_root: &Path, artifact_path: &str) -> Result<TreeSignature> {
    let extra = for_artifact(&read(result_root)?, artifact_path);
    let mut builder = ManifestBuilder::new();
    walk(
        &result_root.join(artifact_path),
        &WalkOptions {
            extra_modes: Some(&extra),
            ..WalkOptions::default()
        },
        |w| {
            builder.add(&w.entry);
            Ok(())
        },
    )?;
    Ok(builder.finish().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_awkward_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut modes = SpecialModes::new();
        modes.insert(b"artifacts/world/usr/bin/su".to_vec(), 0o4000);
        modes.insert(b"artifacts/world/tmp dir\n\xff".to_vec(), 0o1000);
        write(dir.path(), &modes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), modes);
        let world = for_artifact(&modes, "artifacts/world");
        assert_eq!(world.get(b"usr/bin/su".as_slice()), Some(&0o4000));
        assert!(for_artifact(&modes, "artifacts/kernel").is_empty());
    }

    #[test]
    fn absent_file_records_nothing_and_bad_bits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join(SPECIAL_MODES_FILE),
            "(fruix-special-modes (format-version 1) (modes (\"artifacts/world/x\" \"4755\")))",
        )
        .unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("setuid/setgid/sticky"), "{err}");
    }
}
