//! Publishing what an import read: into the store a batch at a time under
//! the objects' locks, then registered in one transaction.

use crate::check::check_reusable;
use crate::db::Registration;
use crate::error::Result;
use crate::store::Store;

use super::import::Pending;
use super::ImportReport;

/// Most object locks an import holds at once, one descriptor each: an
/// archive of more objects is published a batch at a time (see [`publish`]).
const LOCK_BATCH: usize = 256;

/// Publishes and registers what an import read.
///
/// Objects are published a batch of [`LOCK_BATCH`] at a time, in archive
/// order (references first), each batch under its objects' locks, taken in
/// name order as promotions take them and released before the next batch's
/// are taken: however many objects an archive holds, the import holds at
/// most that many lock descriptors, and no promotion waits on it in a cycle.
/// All are registered together at the end, in one transaction, under the
/// last batch's locks (an archive of up to [`LOCK_BATCH`] new objects is
/// published and registered under all its locks). An object of an earlier
/// batch is published, not yet valid, until then: nothing removes it, as
/// the promotion holds the collector's lock and keeps a repair waiting, and
/// a promotion or import of the same object finds it, checks it and reuses
/// it (registering is idempotent).
pub(super) fn publish(
    store: &Store,
    pending: Vec<Pending>,
    present: Vec<(String, Vec<String>)>,
    promotion: crate::store::Promotion<'_>,
    bytes: u64,
) -> Result<ImportReport> {
    let mut published = Published {
        report: ImportReport {
            bytes,
            ..ImportReport::default()
        },
        registrations: Vec::new(),
        signatures: Vec::new(),
    };
    let mut pending = pending.into_iter();
    let (mut locks, mut last) = (Vec::new(), Vec::new());
    loop {
        let batch: Vec<Pending> = pending.by_ref().take(LOCK_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        // Released before the next batch's are taken.
        drop(std::mem::take(&mut locks));
        (locks, last) = publish_batch(store, batch, &mut published)?;
    }
    let Published {
        mut report,
        registrations,
        mut signatures,
    } = published;
    for (name, sigs) in present {
        report.present.push(store.path().join(&name));
        signatures.extend(sigs.into_iter().map(|s| (name.clone(), s)));
    }
    if let Err(e) = store.db().register_signed(&registrations, &signatures) {
        // What is still under this import's locks goes again (all of it
        // but for imports of more than one batch, whose earlier batches
        // `store gc` removes).
        store.unpublish(&last);
        return Err(e);
    }
    drop(locks);
    promotion.succeed(!report.present.is_empty());
    Ok(report)
}

/// What [`publish`] has published so far, and what it will register.
struct Published {
    report: ImportReport,
    registrations: Vec<Registration>,
    /// Object name, signature.
    signatures: Vec<(String, String)>,
}

/// Publishes `batch` under its objects' locks (see [`publish`]), noting it
/// in `published`; returns the locks and the objects it published.
fn publish_batch(
    store: &Store,
    batch: Vec<Pending>,
    published: &mut Published,
) -> Result<(Vec<crate::store::Lock>, Vec<std::path::PathBuf>)> {
    let mut names: Vec<&str> = batch.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    let locks = names
        .iter()
        .map(|n| store.lock_object(n))
        .collect::<Result<Vec<_>>>()?;
    let Published {
        report,
        registrations,
        signatures,
    } = published;
    let mut temps = Vec::new();
    for p in batch {
        let path = store.path().join(&p.name);
        if path.symlink_metadata().is_ok() {
            // Published meanwhile (or left by a killed promotion): reuse it
            // only if it is intact.
            check_reusable(&path)?;
            report.present.push(path);
        } else {
            temps.push((p.temp, p.name.clone()));
            report.imported.push(path);
        }
        registrations.push(p.registration);
        signatures.extend(p.signatures.into_iter().map(|s| (p.name.clone(), s)));
    }
    let new = store.publish(temps)?;
    Ok((locks, new))
}
