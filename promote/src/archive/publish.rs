//! Publishing what an import read: into the store a batch at a time under
//! the objects' locks, then registered in one transaction, or, when that
//! fails, taken back whole.

use std::path::PathBuf;

use crate::check::check_existing;
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
///
/// When a batch cannot be published or the registration fails, everything
/// the import published is taken back: the failed batch's objects (or the
/// last batch's) still under their locks, then those of the earlier
/// batches under theirs, taken again a batch at a time ([`take_back`]). The
/// store is left as it was before the import, but for an earlier object
/// that another promotion or import registered meanwhile, which stays.
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
    // What the batches before the last published, their locks released.
    let mut earlier: Vec<PathBuf> = Vec::new();
    loop {
        let batch: Vec<Pending> = pending.by_ref().take(LOCK_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        // Released before the next batch's are taken.
        drop(std::mem::take(&mut locks));
        earlier.append(&mut last);
        match publish_batch(store, batch, &mut published) {
            Ok(batch) => (locks, last) = batch,
            Err(e) => {
                take_back(store, &earlier);
                return Err(e);
            }
        }
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
    // The registry's guard is released before taking back, which asks it.
    let registered = store.db().register_signed(&registrations, &signatures);
    if let Err(e) = registered {
        // What is still under this import's locks goes again, then what
        // the earlier batches published.
        store.unpublish(&last);
        drop(locks);
        take_back(store, &earlier);
        return Err(e);
    }
    drop(locks);
    promotion.succeed(!report.present.is_empty());
    Ok(report)
}

/// Takes back `published`, objects an import published in batches whose
/// locks it released, none of them registered by the import: a batch of
/// [`LOCK_BATCH`] at a time, under their locks taken again in name order,
/// each that is still not valid is removed ([`Store::unpublish`]). One that
/// another promotion or import registered meanwhile (reusing it, under its
/// lock) is valid and stays. Nothing here fails: an object whose lock
/// cannot be taken (the wait interrupted) stays, unregistered, for the
/// next promotion of it or `store gc`, as what a killed import leaves.
fn take_back(store: &Store, published: &[PathBuf]) {
    for batch in published.chunks(LOCK_BATCH) {
        let mut batch: Vec<(String, &PathBuf)> = batch
            .iter()
            .filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), p)))
            .collect();
        batch.sort_unstable();
        let Ok(_locks) = batch
            .iter()
            .map(|(name, _)| store.lock_object(name))
            .collect::<Result<Vec<_>>>()
        else {
            continue;
        };
        let invalid: Vec<PathBuf> = batch
            .into_iter()
            .filter(|(name, _)| store.is_valid(name).is_ok_and(|valid| !valid))
            .map(|(_, path)| path.clone())
            .collect();
        store.unpublish(&invalid);
    }
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
        // Published meanwhile (or left by a killed promotion, import or
        // repair): reused only if intact, an unregistered one read in full
        // and replaced when it fails (see `check_existing`).
        if check_existing(store, &path)? {
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
