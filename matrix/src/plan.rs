//! A matrix file checked against this fruix: its cells, which of them run
//! on the pool, their build requests and executor configurations.
//!
//! Everything that can be refused before a build starts is refused here
//! (as [`Error`]s of [`Failure::Input`](fruix_core::Failure::Input), or the
//! core's own class): an unreadable matrix or machines file, a missing
//! source, an unknown executor, bad executor configuration, a pinned machine
//! that is not in the machines file, remote cells without a machines file.

use std::path::{Path, PathBuf};

use fruix_core::executor::{BuildRequest, Registry};
use fruix_core::machines::Machines;
use fruix_core::promotion::{BuildPolicy, FreebsdBase, SourceStore};

use crate::agreement;
use crate::expand::{cells, Cell};
use crate::file::MatrixFile;
use crate::request::{check_source, default_jobs, freebsd_base, with_arch, BuildOptions};
use crate::schedule::{Decision, Dispatcher, Need, Placement, Pool};
use crate::{Error, Result};

/// Configuration keys through which the scheduler gives an executor its
/// machine: an executor declaring both runs its cells on the pool.
pub const MACHINE_KEYS: [&str; 2] = ["machines", "machine"];

/// A checked matrix.
#[derive(Debug, Clone)]
pub struct MatrixPlan {
    pub file: MatrixFile,
    pub cells: Vec<Cell>,
    /// Whether each cell runs on the pool (else on this host).
    pub remote: Vec<bool>,
    pub machines: Option<Machines>,
    /// The source on this host (canonical).
    pub source: PathBuf,
    pub freebsd_base: FreebsdBase,
    pub jobs: u32,
}

impl MatrixPlan {
    /// Reads and checks the matrix at `path`; `machines` and `max_parallel`
    /// override the file's.
    pub fn load(
        path: &Path,
        machines: Option<&Path>,
        max_parallel: Option<u32>,
        registry: &Registry,
    ) -> Result<MatrixPlan> {
        let mut file = MatrixFile::read(path)?;
        if let Some(max) = max_parallel {
            if max == 0 {
                return Err(Error::InvalidOption {
                    option: "--max-parallel",
                    message: "must be at least 1".into(),
                });
            }
            file.max_parallel = Some(max);
        }
        let cells = cells(&file)?;
        let remote = cells
            .iter()
            .map(|c| {
                let entry = registry.get(&c.executor)?;
                Ok(MACHINE_KEYS
                    .iter()
                    .all(|k| entry.config_keys.iter().any(|e| e.name == *k)))
            })
            .collect::<Result<Vec<bool>>>()?;
        let machines_file = machines
            .map(Path::to_path_buf)
            .or_else(|| file.machines_file.clone());
        let machines = match machines_file {
            Some(p) => {
                let p = std::path::absolute(&p)
                    .map_err(|source| Error::MachinesPath { path: p, source })?;
                Some(Machines::read(&p)?)
            }
            None => None,
        };
        let source = check_source(&file.source)?;
        let freebsd_base = freebsd_base(
            &source,
            file.freebsd_version.as_deref(),
            file.freebsd_branch.as_deref(),
        )?;
        let plan = MatrixPlan {
            cells,
            remote,
            machines,
            source,
            freebsd_base,
            jobs: file.jobs.unwrap_or_else(default_jobs),
            file,
        };
        plan.check(registry)?;
        Ok(plan)
    }

    /// Checks every cell's placement, request and configuration.
    fn check(&self, registry: &Registry) -> Result<()> {
        for (executor, config) in &self.file.config {
            if let Some(key) = MACHINE_KEYS.iter().find(|k| config.contains_key(**k)) {
                return Err(Error::SchedulerKey {
                    matrix: self.file.path.clone(),
                    executor: executor.clone(),
                    key,
                });
            }
        }
        for (i, cell) in self.cells.iter().enumerate() {
            let placement = self.first_placement(i)?;
            let setup = |source| Error::CellSetup {
                cell: cell.id.clone(),
                source,
            };
            registry
                .create(&cell.executor, self.executor_config(i, &placement))
                .map_err(setup)?;
            self.request(i, "20260101T000000Z".into())
                .check()
                .map_err(setup)?;
        }
        Ok(())
    }

    /// Where cell `i` would run in an empty pool, or why it never can.
    fn first_placement(&self, i: usize) -> Result<Placement> {
        let cell = &self.cells[i];
        if !self.remote[i] {
            return match &cell.machine {
                Some(m) => Err(Error::cell(
                    &cell.id,
                    format!(
                        "pins machine {m:?}, but executor {} builds on this host",
                        cell.executor
                    ),
                )),
                None => Ok(Placement::Local),
            };
        }
        let Some(machines) = &self.machines else {
            return Err(Error::cell(
                &cell.id,
                format!(
                    "executor {} builds on machines of a machines file; give machines-file in {} or --machines",
                    cell.executor,
                    self.file.path.display()
                ),
            ));
        };
        if let Some(m) = &cell.machine {
            machines
                .get(m)
                .map_err(|e| Error::cell(&cell.id, e.to_string()))?;
        }
        match self.pool().decide(&self.need(i), &[]) {
            Decision::Run(p) => Ok(p),
            Decision::Never(reason) => Err(Error::cell(&cell.id, reason)),
            Decision::Wait => unreachable!("an empty pool has free slots"),
        }
    }

    /// What cell `i` needs from the pool.
    pub fn need(&self, i: usize) -> Need {
        Need {
            remote: self.remote[i],
            target_arch: self.cells[i].target_arch.clone(),
            pinned: self.cells[i].machine.clone(),
        }
    }

    /// An empty pool of this matrix's machines and limits.
    pub fn pool(&self) -> Pool {
        let machines = self
            .machines
            .as_ref()
            .map(|m| m.machines.as_slice())
            .unwrap_or_default();
        Pool::new(machines, self.file.local_slots, self.file.max_parallel)
    }

    /// The dispatcher of a run of this matrix.
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(
            self.pool(),
            (0..self.cells.len()).map(|i| self.need(i)).collect(),
            self.file.retries,
            self.file.fail_fast,
        )
    }

    /// The executor configuration of cell `i` at `placement`.
    pub fn executor_config(&self, i: usize, placement: &Placement) -> serde_json::Value {
        let cell = &self.cells[i];
        let mut config = self
            .file
            .config
            .get(&cell.executor)
            .cloned()
            .unwrap_or_default();
        if let (Placement::Machine(name), Some(machines)) = (placement, &self.machines) {
            config.insert(
                "machines".into(),
                machines.path.to_string_lossy().into_owned().into(),
            );
            config.insert("machine".into(), name.clone().into());
        }
        serde_json::Value::Object(config)
    }

    /// The build request of cell `i` with run id `run_id`.
    pub fn request(&self, i: usize, run_id: String) -> BuildRequest {
        self.build_options(i).request(run_id)
    }

    /// What cell `i` builds, and how.
    pub fn build_options(&self, i: usize) -> BuildOptions {
        let cell = &self.cells[i];
        let source = match (&self.file.remote_source, self.remote[i]) {
            (Some(remote), true) => remote.clone(),
            _ => self.source.to_string_lossy().into_owned(),
        };
        BuildOptions {
            freebsd_base: with_arch(&self.freebsd_base, &cell.target_arch, None),
            source: SourceStore {
                path: source,
                commit: self.file.source_commit.clone(),
            },
            policy: BuildPolicy {
                jobs: self.jobs,
                kernconf: cell.kernconf.clone(),
                make_flags: self
                    .file
                    .make_flags
                    .iter()
                    .chain(&cell.make_flag)
                    .cloned()
                    .collect(),
                source_date_epoch: self.file.source_date_epoch,
            },
        }
    }

    /// The groups of cells that must agree.
    pub fn agreement_groups(&self) -> Vec<Vec<usize>> {
        agreement::groups(&self.cells, &self.file.agree_across)
    }

    /// Where cell `i` may run, for `fruix matrix plan`.
    pub fn placement_text(&self, i: usize) -> String {
        match (&self.cells[i].machine, self.remote[i]) {
            (Some(m), _) => format!("machine {m}"),
            (None, true) => "pool".into(),
            (None, false) => "this host".into(),
        }
    }
}
