//! `fruix build`: run an executor, validate its result root, promote it.

mod config;
mod slot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fruix_core::at_exit::AtExit;
use fruix_core::escape;
use fruix_core::executor::{
    run_executor_within, BuildRequest, EventSink, Executor, Registry, RunLimits,
};
use fruix_core::machines::{Machine, Machines};
use fruix_core::manifest::{Cancelled, Progress};
use fruix_core::promotion::{BuildPolicy, SourceStore};
use fruix_core::run_id::{allocate_run_dir, format_run_id};
use fruix_matrix::request::{
    check_source_in_store, default_jobs, freebsd_base, with_arch, BuildOptions,
};
use fruix_promote::sign::PublicKey;
use fruix_promote::source::check_source_untouched;
use fruix_promote::store::MadeStore;
use fruix_promote::temp_roots::TempRoots;
use fruix_promote::Store;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use fruix_freebsd::source::{arch_of, check_target_pair};
use fruix_matrix::expand::DEFAULT_TARGET_ARCH;
use fruix_matrix::sources::{check_outside_tree, OwnOutput, DEFAULT_SOURCE_NAME};
use fruix_promote::source_identity::SOURCE_INFIX;

use crate::args::BuildArgs;
use crate::commands::promote::{
    check_out_link, out_link, promote_later, promote_with_progress, sign_and_print,
};
use crate::commands::source::source_object;
use crate::commands::store::keys::signing_key;
use crate::defaults;
use crate::display::{json_path, show_events, Mode};
pub(crate) use crate::exit::run_error;
use crate::exit::{self, from_matrix, from_promote, source_refused, CliError, CliResult, Status};
use config::{config_object, with_guest_flags};

/// Validated `fruix build` arguments, ready to construct the request.
struct BuildPlan {
    request: BuildRequest,
    result_root: PathBuf,
}

pub async fn run(args: BuildArgs, registry: &Registry) -> CliResult {
    // Ctrl-C, SIGTERM or SIGHUP cancels the whole command: its source add
    // and its promotion (`work` stops their walks; each fails as cancelled,
    // removing what it made) as well as its build (`cancel`).
    let cancel = CancellationToken::new();
    let work = Progress::default();
    let display = Arc::new(AtomicBool::new(false));
    {
        let (cancel, stop, display) = (cancel.clone(), work.canceller(), display.clone());
        crate::signals::on_cancel(move || {
            let cancelled = stop();
            cancel.cancel();
            // While the build runs, its display says so; once the
            // promotion has committed, it is too late.
            if cancelled == Cancelled::TooLate || !display.load(Ordering::SeqCst) {
                eprintln!("{}", crate::signals::cancelling(cancelled));
            }
        })?;
    }
    defaults::announce(
        Mode::from_output(&args.output),
        (!args.no_promote).then_some(args.store.store.as_path()),
        (args.result_root.is_none() || !args.no_promote && !args.out_link.no_out_link)
            .then_some(args.state.state_dir.as_path()),
    );
    refuse_ignored_flags(&args)?;
    // What the executor takes is known without a configuration: a guest
    // flag it does not take is refused before anything is read for it (the
    // machines file of --machines).
    let entry = registry
        .get(&args.executor)
        .map_err(|e| CliError::new(exit::before_run(&e), e))?;
    let config = with_guest_flags(config_object(&args.config)?, &args.guest, entry)?;
    let machine = build_machine(&config)?;
    let signer = match &machine {
        Some((file, machine)) => machine_signer(file, machine)?,
        None => None,
    };
    let executor = registry
        .create(&args.executor, config)
        .map_err(|e| CliError::new(exit::before_run(&e), e))?;
    // A remote executor builds on the machine: the build holds one of its
    // slots, as a matrix's attempt on it does.
    let slot_of = machine
        .map(|(_, machine)| machine)
        .filter(|_| executor.capabilities().remote);
    // Everything is checked before anything is created: the request, what
    // the executor can build, and the store it will be promoted into.
    let mut options = checked_options(&args, executor.as_ref())?;
    let key = if args.no_promote {
        None
    } else {
        check_out_link(&args.out_link, (&args.store.store, &args.state.state_dir))?;
        signing_key(&args.out_link)?
    };
    // A source this host has becomes a source object first (a guest
    // executor then sends it to the guest), so a store is needed even
    // without promotion. A guest executor's source this host does not have
    // is a path in the guest. A store made here is removed again if the
    // command is refused before the build starts.
    let local = args.guest_source.is_none();
    // A source tree that is the store or the state directory is refused
    // before the store is made in it (a missing tree is said below).
    if let (true, Ok(tree)) = (local, std::fs::canonicalize(&options.source.path)) {
        let own = [OwnOutput::StateDir(&args.state.state_dir)];
        check_outside_tree(&tree, &args.store.store, &own).map_err(from_matrix)?;
    }
    // A run directory the state directory cannot take is refused before
    // the store and the source object are made (`allocate` makes it).
    if args.result_root.is_none() {
        let runs = args.state.state_dir.join("native-builds");
        fruix_core::run_id::check_run_dir_parent(&runs)
            .map_err(|e| CliError::new(exit::before_run(&e), e))?;
    }
    let store = if args.no_promote && !local {
        None
    } else {
        Some(Store::open_tentatively(&args.store.store).map_err(|e| {
            // Cancelled while it waited (for a repair of the store), or a
            // store refused for what it is (its path): no need to say more.
            let status = e.exit_status();
            let why = match status {
                Status::Cancelled | Status::Usage => "",
                _ => ": the store must be writable before a build starts",
            };
            CliError::new(status, anyhow::anyhow!("{e}; nothing was built{why}"))
        })?)
    };
    // Keeps the source object from collections until the build is promoted.
    let mut _temp_roots = None;
    // The source object built from, in this store: checked untouched after
    // the build.
    let mut built_from = None;
    if let (true, Some(store)) = (local, &store) {
        let roots = TempRoots::create(store.path()).map_err(from_promote)?;
        // What this build writes is no part of its source, when the tree
        // holds it (a build run from inside it).
        let mut own = vec![OwnOutput::StateDir(&args.state.state_dir)];
        if !args.no_promote && !args.out_link.no_out_link {
            own.push(OwnOutput::OutLink(&args.out_link.out_link));
        }
        options.source = source_object(
            Mode::from_output(&args.output),
            store,
            Path::new(&options.source.path),
            args.freebsd_version.as_deref(),
            &own,
            &roots,
            &work,
        )
        .map_err(|e| exit::when_cancelled(e, "nothing was built"))?;
        if let Some(commit) = &args.source_commit {
            options.source.commit = Some(commit.clone());
        }
        built_from = Some(PathBuf::from(&options.source.path));
        _temp_roots = Some(roots);
    }
    // Its source added, the build waits for its machine's slot, if it has
    // to, before it starts (its run id is that of its start).
    let slot = match &slot_of {
        Some(machine) => Some(slot::take(&args.state.state_dir, machine, &cancel).await?),
        None => None,
    };
    let plan = allocate(&args, options)?;
    // The build starts: its source object stays, whatever the build does
    // (a store this command made is removed only when it was refused
    // before, while the store holds nothing else).
    let store = store.map(MadeStore::keep).filter(|_| !args.no_promote);
    let (events, rx) = EventSink::channel();
    display.store(true, Ordering::SeqCst);
    let printer = tokio::spawn(show_events(rx, args.output, cancel.clone()));
    let limits = RunLimits {
        timeout: args.timeout,
        max_silent: args.max_silent_time,
    };
    // A fast exit (a second Ctrl-C during the build's cleanup) names it.
    let at_exit = AtExit::left("the build's result root, unfinished", &plan.result_root);
    let root = plan.result_root.clone();
    let details = crate::signals::DetailsAtFastExit::new(move || kept_details(&root));
    let outcome = run_executor_within(
        executor,
        plan.request.clone(),
        &plan.result_root,
        events,
        cancel.clone(),
        limits,
    )
    .await;
    drop((at_exit, details));
    // The machine's slot is free again once the build ended: promotion
    // runs on this host.
    drop(slot);
    let warnings = printer.await.unwrap_or_default();
    display.store(false, Ordering::SeqCst);
    let untouched = match built_from {
        Some(object) => tokio::task::spawn_blocking(move || check_source_untouched(&object))
            .await
            .map_err(|e| CliError::new(Status::SystemFailure, e))?,
        None => Ok(()),
    };
    let root = match (outcome, untouched) {
        (Ok(_), Err(e)) => return Err(from_promote(e)),
        (Ok(root), Ok(())) => root,
        (Err(e), untouched) => {
            // The build's own failure is what the run ended with; a source
            // it wrote into is said too, or the next build would fail on it.
            if let Err(written) = untouched {
                eprintln!("fruix: warning: {written}");
            }
            let stopped = matches!(e, fruix_core::Error::Timeout { .. });
            let failed = with_what_was_kept(run_error(e), &plan.result_root, stopped);
            return Err(match warnings.is_empty() {
                true => failed,
                false => failed.with_detail("warnings", warnings.into()),
            });
        }
    };
    let Some(store) = store else {
        if args.output.json {
            println!(
                "{}",
                serde_json::json!({ "run_id": plan.request.run_id, "result_root": json_path(root.path()) })
            );
        } else {
            println!(
                "run_id={}\nresult_root={}",
                plan.request.run_id,
                escape::path(root.path())
            );
        }
        return Ok(Status::Success);
    };
    let output = args.output;
    let kept = root.path().to_path_buf();
    let (link, state_dir) = (args.out_link.clone(), args.state.state_dir.clone());
    // A machine that signs at the build site must have signed every object
    // this promotion will make, with its key: checked before anything is
    // promoted.
    let guest_signed = match &signer {
        Some((machine, key)) => Some(
            fruix_promote::attest::check_result(&root, store.path(), key, machine).map_err(
                |e| {
                    let hint = format!(
                        "nothing was promoted; the result root {} was kept",
                        escape::path(root.path())
                    );
                    CliError::new(e.exit_status(), anyhow::anyhow!("{e}; {hint}"))
                },
            )?,
        ),
        None => None,
    };
    let store = Arc::new(store);
    let promoting = store.clone();
    let progress = work.fresh_counters();
    let report = tokio::task::spawn_blocking(move || {
        let link = out_link(&link, &state_dir);
        promote_with_progress(&root, &promoting, &output, link, &progress)
    })
    .await
    .map_err(|e| CliError::new(Status::SystemFailure, e))?
    .map_err(|e| {
        let hint = format!(
            "the result root {} was kept; promote it later with: {}",
            escape::path(&kept),
            promote_later(
                &args.store.store,
                &args.state.state_dir,
                &args.out_link,
                &kept
            )
        );
        // Whole and promotable: named as a cancelled build's is.
        e.saying(hint).with_detail("result_root", json_path(&kept))
    })?;
    if let Some(signed) = &guest_signed {
        let unsigned = fruix_promote::attest::record(&store, signed).map_err(from_promote)?;
        for (name, why) in unsigned {
            eprintln!(
                "fruix: warning: {name}: {}; its signature was not recorded",
                why.why()
            );
        }
    }
    sign_and_print(&store, &report, key.as_ref(), &args.output)?;
    Ok(Status::Success)
}

/// Refuses `--sign-with` given on the command line with `--no-promote`,
/// which would ignore it (clap refuses `--out-link` with it). A key from
/// `FRUIX_SIGNING_KEY` is a default, not a request, and is not refused.
fn refuse_ignored_flags(args: &BuildArgs) -> CliResult<()> {
    if args.no_promote && args.out_link.sign_with_given {
        return Err(CliError::usage(
            "--sign-with signs what is promoted, and --no-promote promotes nothing; give one of them",
        ));
    }
    Ok(())
}

/// The machine built on (`--machines FILE --machine NAME`, or the same
/// keys given with `--config`), with the path of the machines file it was
/// read from.
fn build_machine(config: &Value) -> CliResult<Option<(PathBuf, Machine)>> {
    let (Some(file), Some(name)) = (
        config.get("machines").and_then(Value::as_str),
        config.get("machine").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let machines =
        Machines::read(Path::new(file)).map_err(|e| CliError::new(exit::before_run(&e), e))?;
    let machine = machines
        .get(name)
        .map_err(|e| CliError::new(exit::before_run(&e), e))?;
    Ok(Some((machines.path.clone(), machine.clone())))
}

/// The machine (its name and public key) whose signatures a build on it
/// must carry: the `signing-key` of `machine`, of machines file `file`.
fn machine_signer(file: &Path, machine: &Machine) -> CliResult<Option<(String, PublicKey)>> {
    let Some(key) = &machine.signing_key else {
        return Ok(None);
    };
    let key = PublicKey::parse(key).map_err(|m| {
        CliError::usage(format!(
            "{}: machine {}: signing-key: {m}",
            escape::path(file),
            escape::quoted(&machine.name)
        ))
    })?;
    Ok(Some((machine.name.clone(), key)))
}

/// `e`, when it is the build's cancellation, saying what the build kept:
/// its result root, still marked unfinished, and the root's `logs/` when
/// there is one; under `--json` also as the error object's `result_root`
/// and `logs` ([`kept_details`]).
/// A failed run's error with what it kept: its JSON error names the result
/// root and its logs ([`kept_details`]) however the build failed (a CI job
/// collects them); a cancelled or `timed_out` build's message says too that
/// the root was kept, unfinished.
fn with_what_was_kept(e: CliError, root: &Path, timed_out: bool) -> CliError {
    let kept = kept_details(root);
    if kept.is_empty() {
        return e;
    }
    if e.status != Status::Cancelled && !timed_out {
        let mut e = e;
        e.details.extend(kept);
        return e;
    }
    let mut hint = format!(
        "the result root {} was kept, marked unfinished (it cannot be promoted)",
        escape::path(root)
    );
    if kept.contains_key("logs") {
        let logs = root.join("logs");
        hint.push_str(&format!("; its logs are in {}", escape::path(&logs)));
    }
    let mut e = match timed_out {
        true => e.saying(hint),
        false => exit::when_cancelled(e, hint),
    };
    e.details.extend(kept);
    e
}

/// What a cancelled build kept, as its JSON error object names it (a
/// second signal's fast exit too): `result_root` when the result root is
/// there, and `logs` when it has a `logs/` directory.
fn kept_details(root: &Path) -> serde_json::Map<String, Value> {
    let mut kept = serde_json::Map::new();
    if root.symlink_metadata().is_err() {
        return kept;
    }
    kept.insert("result_root".into(), json_path(root));
    let logs = root.join("logs");
    if logs.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        kept.insert("logs".into(), json_path(&logs));
    }
    kept
}

/// The `TARGET_ARCH` of `args`: `--target-arch`, else what `--target`
/// builds when given alone (`arm64`: `aarch64`), else
/// [`DEFAULT_TARGET_ARCH`]. A `--target` that does not build it is refused
/// (FreeBSD's make would refuse it only once the build ran).
fn target_arch(args: &BuildArgs) -> CliResult<String> {
    let arch = match (&args.target_arch, &args.target) {
        (Some(arch), _) => arch.as_str(),
        (None, Some(target)) => arch_of(target),
        (None, None) => DEFAULT_TARGET_ARCH,
    };
    if let Some(target) = &args.target {
        check_target_pair(target, arch).map_err(CliError::usage)?;
    }
    Ok(arch.to_string())
}

/// The build options of `args`, checked (with a provisional run id) against
/// the request rules and what `executor` can build. `--source` is a tree on
/// this host (a guest executor is sent its source object); `--guest-source`
/// is a checkout in the guest, for a guest executor only.
fn checked_options(args: &BuildArgs, executor: &dyn Executor) -> CliResult<BuildOptions> {
    let remote = executor.capabilities().remote;
    let target_arch = target_arch(args)?;
    let source = match (&args.source, &args.guest_source) {
        (_, Some(guest)) if !remote => {
            return Err(CliError::usage(format!(
                "--guest-source {guest}: executor {} builds on this host; give --source",
                args.executor
            )))
        }
        (_, Some(guest)) if !guest.starts_with('/') => {
            return Err(CliError::usage(format!(
                "--guest-source {guest}: give the absolute path of the source tree in the guest"
            )))
        }
        // The host cannot read the guest's newvers.sh: a path that is also
        // a tree here would give this host's version instead.
        (_, Some(guest)) if args.freebsd_version.is_none() => {
            return Err(CliError::usage(format!(
                "--guest-source {guest}: give --freebsd-version (and --freebsd-branch unless the version names it): this host cannot read the guest's sys/conf/newvers.sh"
            )))
        }
        (_, Some(guest)) => PathBuf::from(guest),
        (Some(source), None) => check_source_in_store(source, &args.store.store).map_err(|e| {
            let e = source_refused(e);
            if remote && e.status == Status::Usage {
                CliError::new(
                    e.status,
                    anyhow::anyhow!(
                        "{}; for a checkout in the guest, give --guest-source PATH",
                        e.error
                    ),
                )
            } else {
                e
            }
        })?,
        (None, None) => return Err(CliError::usage("give --source (or --guest-source)")),
    };
    let base = freebsd_base(
        &source,
        args.freebsd_version.as_deref(),
        args.freebsd_branch.as_deref(),
        "pass --freebsd-version",
    )
    .map_err(from_matrix)?;
    let jobs = args.jobs.unwrap_or_else(default_jobs);
    let options = BuildOptions {
        freebsd_base: with_arch(&base, &target_arch, args.target.as_deref()),
        source: SourceStore {
            tree_signature: None,
            path: source.to_string_lossy().into_owned(),
            commit: args.source_commit.clone(),
        },
        policy: BuildPolicy {
            jobs,
            kernconf: args.kernconf.clone(),
            make_flags: args.make_flags.clone(),
            source_date_epoch: args.source_date_epoch,
        },
        jobs_per_machine: args.jobs.is_none(),
    };
    if let Some(root) = args
        .result_root
        .as_ref()
        .filter(|r| r.symlink_metadata().is_ok())
    {
        return Err(CliError::usage(format!(
            "result root {} already exists; a result root is never overwritten: choose another --result-root or remove it",
            escape::path(root)
        )));
    }
    // Checked with a provisional run id, before the run's directory exists.
    // A source on this host is built as its source object, whose path
    // (the store's, and an object's name) is what the request will name:
    // the directory's own name, which no metadata records, is not checked.
    let run_id = format_run_id(std::time::SystemTime::now())
        .map_err(|e| CliError::new(exit::before_run(&e), e))?;
    let mut provisional = options.request(run_id);
    if args.guest_source.is_none() {
        provisional.source.path = std::path::absolute(&args.store.store)
            .unwrap_or_else(|_| args.store.store.clone())
            .join(format!(
                "{}{SOURCE_INFIX}{DEFAULT_SOURCE_NAME}",
                "0".repeat(40)
            ))
            .to_string_lossy()
            .into_owned();
    }
    provisional
        .check()
        .and_then(|()| executor.check_request(&provisional))
        .map_err(|e| CliError::new(Status::Usage, e))?;
    Ok(options)
}

/// The run's id and result root (a new run directory, or `--result-root`).
/// A new run directory's parent is swept of dead runs' work directories.
fn allocate(args: &BuildArgs, options: BuildOptions) -> CliResult<BuildPlan> {
    let (run_id, result_root) = match &args.result_root {
        Some(root) => (
            format_run_id(std::time::SystemTime::now())
                .map_err(|e| CliError::new(exit::before_run(&e), e))?,
            root.clone(),
        ),
        None => allocate_run_dir(&args.state.state_dir.join("native-builds"))
            .map_err(|e| CliError::new(exit::before_run(&e), e))?,
    };
    // Absolute, as every path fruix prints or records is.
    let result_root = std::path::absolute(&result_root).map_err(|e| {
        CliError::usage(format!(
            "result root {}: {e}",
            escape::quoted(&result_root.to_string_lossy())
        ))
    })?;
    Ok(BuildPlan {
        request: options.request(run_id),
        result_root,
    })
}
