//! `fruix matrix plan` and `fruix matrix run`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fruix_core::executor::Registry;
use fruix_core::run_id::allocate_run_dir;
use fruix_promote::Store;
use tokio_util::sync::CancellationToken;

use crate::args::{DiffTool, MatrixPlanArgs, MatrixRunArgs};
use crate::commands::build::watch_signals;
use crate::display::Mode;
use crate::exit::{self, from_promote, CliError, CliResult, Status};
use crate::matrix::cell::ExecutorRunner;
use crate::matrix::junit::junit;
use crate::matrix::live::Live;
use crate::matrix::plan::MatrixPlan;
use crate::matrix::report::{
    agreement, cell_reports, on_path, table, unix, Report, SetAside, DIFFOSCOPE_MISSING,
};
use crate::matrix::runner::{run_cells, CellStatus};

pub fn plan(args: MatrixPlanArgs, registry: &Registry) -> CliResult {
    let plan = MatrixPlan::load(&args.file, args.machines.as_deref(), None, registry)?;
    let groups = plan.agreement_groups();
    if args.json {
        let cells: Vec<serde_json::Value> = plan
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = serde_json::to_value(c).expect("cells serialize");
                v["runs_on"] = plan.placement_text(i).into();
                v
            })
            .collect();
        let groups: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|i| plan.cells[*i].id.as_str()).collect())
            .collect();
        println!(
            "{}",
            serde_json::json!({ "cells": cells, "must_agree": groups, "max_parallel": plan.file.max_parallel, "fail_fast": plan.file.fail_fast, "retries": plan.file.retries })
        );
        return Ok(Status::Success);
    }
    let width = plan.cells.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for (i, c) in plan.cells.iter().enumerate() {
        let flags = plan.request(i, "0".into()).policy.make_flags.join(" ");
        println!(
            "{:width$}  {} {} {} [{flags}] on {}",
            c.id,
            c.executor,
            c.kernconf,
            c.target_arch,
            plan.placement_text(i)
        );
    }
    for g in &groups {
        let ids: Vec<&str> = g.iter().map(|i| plan.cells[*i].id.as_str()).collect();
        println!("must agree: {}", ids.join(", "));
    }
    println!(
        "{} cells; max-parallel {}; fail-fast {}; retries {}",
        plan.cells.len(),
        plan.file
            .max_parallel
            .map_or("unlimited".to_string(), |m| m.to_string()),
        plan.file.fail_fast,
        plan.file.retries
    );
    Ok(Status::Success)
}

pub async fn run(args: MatrixRunArgs, registry: Registry) -> CliResult {
    let plan = Arc::new(MatrixPlan::load(
        &args.file,
        args.machines.as_deref(),
        args.max_parallel,
        &registry,
    )?);
    let store = Arc::new(Store::open(&args.store.store).map_err(from_promote)?);
    let report_dir = match &args.report_dir {
        Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
        None => {
            allocate_run_dir(&args.state.state_dir.join("matrix"))
                .map_err(|e| CliError::new(exit::before_run(&e), e))?
                .1
        }
    };
    let logs_dir = report_dir.join("logs");
    std::fs::create_dir_all(&logs_dir).map_err(|e| {
        CliError::new(
            Status::SystemFailure,
            anyhow::anyhow!("cannot create report directory {}: {e}", logs_dir.display()),
        )
    })?;
    let diffoscope = args.diff == Some(DiffTool::Diffoscope);
    if diffoscope && !on_path("diffoscope") {
        eprintln!("fruix: warning: {DIFFOSCOPE_MISSING}");
    }
    let mode = if args.quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Terminal
    } else {
        Mode::Plain
    };
    let runner = Arc::new(ExecutorRunner {
        plan: plan.clone(),
        registry,
        store,
        state_dir: args.state.state_dir.clone(),
        logs_dir,
        live: Arc::new(Live::new(mode)),
    });
    for i in 0..plan.cells.len() {
        let _ = std::fs::remove_file(runner.log_path(i));
    }
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let started = SystemTime::now();
    let (records, set_aside) = run_cells(
        runner.clone(),
        plan.dispatcher(),
        plan.cells.len(),
        cancel.clone(),
    )
    .await;
    let cells = cell_reports(&plan, &records, |i| runner.log_path(i));
    let agreement = agreement(&plan, &cells, diffoscope, &report_dir);
    let report = Report {
        matrix: std::path::absolute(&args.file).unwrap_or(args.file.clone()),
        started_at: unix(started),
        duration_s: started.elapsed().unwrap_or_default().as_secs_f64(),
        max_parallel: plan.file.max_parallel,
        cancelled: cancel.is_cancelled(),
        cells,
        agreement,
        machines_set_aside: set_aside
            .into_iter()
            .map(|(machine, reason)| SetAside { machine, reason })
            .collect(),
    };
    let (json, xml) = write_reports(&report, &report_dir)?;
    print!("{}", table(&report));
    println!("report={}\njunit={}", json.display(), xml.display());
    Ok(status(&report))
}

fn write_reports(report: &Report, dir: &Path) -> CliResult<(PathBuf, PathBuf)> {
    let hostname = fruix_core::collect::host_name().unwrap_or_else(|_| "localhost".into());
    let json = dir.join("report.json");
    let xml = dir.join("junit.xml");
    let text = serde_json::to_string_pretty(report).expect("reports serialize") + "\n";
    for (path, content) in [(&json, text), (&xml, junit(report, &hostname))] {
        std::fs::write(path, content).map_err(|e| {
            CliError::new(
                Status::SystemFailure,
                anyhow::anyhow!("cannot write {}: {e}", path.display()),
            )
        })?;
    }
    Ok((json, xml))
}

/// The exit status: cancelled, then failed cells, then divergence.
fn status(report: &Report) -> Status {
    if report.cancelled {
        Status::Cancelled
    } else if report.cells.iter().any(|c| c.status != CellStatus::Passed) {
        Status::MatrixFailure
    } else if report.agreement.iter().any(|a| !a.agree) {
        Status::Divergence
    } else {
        Status::Success
    }
}
