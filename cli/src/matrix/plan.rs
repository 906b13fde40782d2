//! A matrix file checked against this fruix: its cells, which of them run
//! on the pool, their build requests and executor configurations.
//!
//! Everything that can be refused before a build starts is refused here
//! (exit status 2): an unreadable matrix or machines file, a missing source,
//! an unknown executor, bad executor configuration, a pinned machine that is
//! not in the machines file, remote cells without a machines file.

use std::path::{Path, PathBuf};

use fruix_core::executor::{base_artifacts, BuildRequest, Registry};
use fruix_core::machines::Machines;
use fruix_core::matrix::agreement;
use fruix_core::matrix::expand::{cells, Cell};
use fruix_core::matrix::file::MatrixFile;
use fruix_core::matrix::schedule::{Dispatcher, Need, Placement, Pool};
use fruix_core::promotion::{BuildPolicy, FreebsdBase, SourceStore};

use crate::commands::build::{branch_of, check_source, read_newvers, target_of};
use crate::exit::{self, CliError, CliResult};

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
    ) -> CliResult<MatrixPlan> {
        let before_run = |e: fruix_core::Error| CliError::new(exit::before_run(&e), e);
        let mut file = MatrixFile::read(path).map_err(before_run)?;
        if let Some(max) = max_parallel {
            if max == 0 {
                return Err(CliError::usage("--max-parallel must be at least 1"));
            }
            file.max_parallel = Some(max);
        }
        let cells = cells(&file).map_err(before_run)?;
        let remote = cells
            .iter()
            .map(|c| {
                let entry = registry.get(&c.executor).map_err(before_run)?;
                Ok(MACHINE_KEYS
                    .iter()
                    .all(|k| entry.config_keys.iter().any(|e| e.name == *k)))
            })
            .collect::<CliResult<Vec<bool>>>()?;
        let machines_file = machines
            .map(Path::to_path_buf)
            .or_else(|| file.machines_file.clone());
        let machines = match machines_file {
            Some(p) => {
                let p = std::path::absolute(&p)
                    .map_err(|e| CliError::usage(format!("machines file {}: {e}", p.display())))?;
                Some(Machines::read(&p).map_err(before_run)?)
            }
            None => None,
        };
        let source = check_source(&file.source)?;
        let (name, version) = match &file.freebsd_version {
            Some(v) => ("FreeBSD".to_string(), v.clone()),
            None => read_newvers(&source)?,
        };
        let branch = file
            .freebsd_branch
            .clone()
            .unwrap_or_else(|| branch_of(&version));
        let jobs = file.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        });
        let plan = MatrixPlan {
            cells,
            remote,
            machines,
            source,
            freebsd_base: FreebsdBase {
                name,
                version,
                branch,
                target: String::new(),
                target_arch: String::new(),
            },
            jobs,
            file,
        };
        plan.check(registry)?;
        Ok(plan)
    }

    /// Checks every cell's placement, request and configuration.
    fn check(&self, registry: &Registry) -> CliResult<()> {
        for (executor, config) in &self.file.config {
            if let Some(key) = MACHINE_KEYS.iter().find(|k| config.contains_key(**k)) {
                return Err(CliError::usage(format!(
                    "{}: config.{executor}: `{key}` is set by the matrix scheduler for each cell; remove it",
                    self.file.path.display()
                )));
            }
        }
        let pool = self.pool();
        for (i, cell) in self.cells.iter().enumerate() {
            let placement = if self.remote[i] {
                let Some(machines) = &self.machines else {
                    return Err(CliError::usage(format!(
                        "cell {}: executor {} builds on machines of a machines file; give machines-file in {} or --machines",
                        cell.id,
                        cell.executor,
                        self.file.path.display()
                    )));
                };
                if let Some(m) = &cell.machine {
                    machines
                        .get(m)
                        .map_err(|e| CliError::usage(format!("cell {}: {e}", cell.id)))?;
                }
                match pool.decide(&self.need(i), &[]) {
                    fruix_core::matrix::schedule::Decision::Run(p) => p,
                    fruix_core::matrix::schedule::Decision::Never(reason) => {
                        return Err(CliError::usage(format!("cell {}: {reason}", cell.id)))
                    }
                    fruix_core::matrix::schedule::Decision::Wait => {
                        unreachable!("an empty pool has free slots")
                    }
                }
            } else {
                if let Some(m) = &cell.machine {
                    return Err(CliError::usage(format!(
                        "cell {}: pins machine {m:?}, but executor {} builds on this host",
                        cell.id, cell.executor
                    )));
                }
                Placement::Local
            };
            registry
                .create(&cell.executor, self.executor_config(i, &placement))
                .map_err(|e| CliError::usage(format!("cell {}: {e}", cell.id)))?;
            self.request(i, "20260101T000000Z".into())
                .check()
                .map_err(|e| CliError::usage(format!("cell {}: {e}", cell.id)))?;
        }
        Ok(())
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
        let cell = &self.cells[i];
        let source = match (&self.file.remote_source, self.remote[i]) {
            (Some(remote), true) => remote.clone(),
            _ => self.source.to_string_lossy().into_owned(),
        };
        BuildRequest {
            run_id,
            freebsd_base: FreebsdBase {
                target: target_of(&cell.target_arch).to_string(),
                target_arch: cell.target_arch.clone(),
                ..self.freebsd_base.clone()
            },
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
            artifacts: base_artifacts(),
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
