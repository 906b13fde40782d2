//! What a cell report says of the store `collect --store` compares in:
//! each artifact it names directly in that store must be that store's
//! artifact object of its name, whose metadata (which the object's name
//! commits to) gives the tree signature the report gives. Otherwise an
//! edited report could make cells that diverge agree.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fruix_core::escape;
use fruix_promote::check::Identity;
use fruix_promote::verify::is_object_name;

use super::CellReportProblem;
use crate::report::CellReport;

/// Checks each artifact of cell report `c` that names an entry of `store`
/// (its path's parent): the entry must have a store object's name, and an
/// object of the store there must be the artifact object the report says
/// it is, built for its kernel configuration and target architecture, of
/// its tree signature. An artifact elsewhere is not read (the
/// agreement says so, `not-in-store`), nor one this store lacks (each
/// runner may have a store of its own): neither can be checked here.
pub(super) fn check_against_store(c: &CellReport, store: &Path) -> Result<(), CellReportProblem> {
    for (artifact, a) in &c.artifacts {
        let path = &a.store_path;
        if path.parent() != Some(store) {
            continue;
        }
        let refused = |what: String| CellReportProblem::ContradictsStore {
            cell: c.id.clone(),
            message: format!(
                "its artifact {} is {}, {what}",
                escape::quoted(artifact).cut_at(80),
                escape::path(path).cut_at(300)
            ),
        };
        let Some(name) = path
            .file_name()
            .filter(|n| is_object_name(n.as_bytes()))
            .and_then(|n| n.to_str())
        else {
            return Err(refused(format!(
                "which is in the store {} but no store object's name",
                escape::path(store)
            )));
        };
        if path
            .symlink_metadata()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            continue;
        }
        let identity = match Identity::read(path) {
            Ok(Identity::Artifact(identity)) if identity.store_name() == name => identity,
            Ok(Identity::Artifact(_)) => {
                return Err(refused(
                    "whose metadata does not give its name: the object is inconsistent (`fruix store verify` checks it)".into(),
                ))
            }
            Ok(Identity::Source(_)) => return Err(refused("a source object, no artifact".into())),
            Err(e) => {
                return Err(refused(format!(
                    "whose artifact metadata cannot be read: {e}"
                )))
            }
        };
        if identity.artifact != *artifact {
            return Err(refused(format!(
                "which is the artifact {}",
                escape::quoted(&identity.artifact).cut_at(80)
            )));
        }
        // Another cell's object of the same artifact, with its own true
        // signature, would make the two cells agree: what the object was
        // built for must be this cell's kernel configuration and target.
        let built = (
            &identity.build_policy.kernconf,
            &identity.freebsd_base.target_arch,
        );
        if built != (&c.kernconf, &c.target_arch) {
            return Err(refused(format!(
                "which was built with kernconf {} for {}, not this cell's {} for {}",
                escape::quoted(built.0).cut_at(80),
                escape::quoted(built.1).cut_at(80),
                escape::quoted(&c.kernconf).cut_at(80),
                escape::quoted(&c.target_arch).cut_at(80)
            )));
        }
        if identity.tree_signature.as_str() != a.tree_signature {
            return Err(refused(format!(
                "whose tree signature is {}, but the report gives {}",
                identity.tree_signature.as_str(),
                escape::text(&a.tree_signature).cut_at(80)
            )));
        }
    }
    Ok(())
}
