//! A matrix file checked against this fruix: its cells, which of them run
//! on the pool, their build requests and executor configurations.
//!
//! Everything that can be refused before a build starts is refused here
//! (as [`Error`]s of [`Failure::Input`](fruix_core::Failure::Input), or the
//! core's own class): an unreadable matrix or machines file, a missing
//! source, an unknown executor, bad executor configuration, a pinned machine
//! that is not in the machines file, remote cells without a machines file,
//! a machine a cell may run on whose private key is not there.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use fruix_core::executor::{BuildRequest, Registry, RunLimits};
use fruix_core::machines::Machines;
use fruix_core::promotion::{BuildPolicy, FreebsdBase, SourceStore};

use crate::agreement;
use crate::expand::{cells, Cell};
use crate::file::MatrixFile;
use crate::request::{check_source, default_jobs, freebsd_base, with_arch, BuildOptions};
use crate::schedule::{Decision, Dispatcher, Need, Placement, Pool};
use crate::{Error, Result};

/// Configuration keys through which the scheduler gives an attempt placed on
/// a machine the machines file and that machine's name
/// ([`MatrixPlan::executor_config`]); a matrix's `config` may not set them
/// ([`Error::SchedulerKey`]). They do not decide where a cell runs: a cell
/// runs on the pool when its executor's capabilities say it builds remotely
/// ([`Capabilities::remote`](fruix_core::executor::Capabilities::remote)).
pub const MACHINE_KEYS: [&str; 2] = ["machines", "machine"];

/// The configuration key through which the SSH executors (`host-initiated`,
/// `guest-self-hosted`, `vm`) take a private key over the `private-key` of
/// the machine they build on: a cell whose executor's `config` sets it
/// uses no machine's key ([`MatrixPlan::check_private_keys`]).
pub const IDENTITY_KEY: &str = "identity";

/// Refuses a `config` of `file` that sets a key the scheduler sets
/// ([`MACHINE_KEYS`]).
pub fn check_scheduler_keys(file: &MatrixFile) -> Result<()> {
    for (executor, config) in &file.config {
        if let Some(key) = MACHINE_KEYS.iter().find(|k| config.contains_key(**k)) {
            return Err(Error::SchedulerKey {
                matrix: file.path.clone(),
                executor: executor.clone(),
                key,
            });
        }
    }
    Ok(())
}

/// A checked matrix.
#[derive(Debug, Clone)]
pub struct MatrixPlan {
    /// The matrix file, with `--max-parallel` (when given) in its strategy.
    pub file: MatrixFile,
    /// The cells, in expansion order: the index `i` the methods here take is a
    /// position in this list.
    pub cells: Vec<Cell>,
    /// Whether each cell runs on the pool (else on this host): whether its
    /// executor's capabilities say it builds remotely.
    pub remote: Vec<bool>,
    /// Whether each cell's executor boots a throw-away guest from a
    /// virtual machine template of the pool
    /// ([`Capabilities::boots_vms`](fruix_core::executor::Capabilities::boots_vms)).
    pub boots_vms: Vec<bool>,
    /// The machines file (`--machines`, else the file's `machines-file`), read
    /// and checked; `None` when neither names one, which only a matrix of local
    /// cells allows.
    pub machines: Option<Machines>,
    /// The machines file's text, as read and checked into `machines`.
    pub machines_text: Option<String>,
    /// Where each attempt's executor reads the machines file: the run's copy
    /// once [`MatrixPlan::copy_machines`] has written it, else the file
    /// itself.
    pub machines_copy: Option<PathBuf>,
    /// The source on this host (canonical).
    pub source: PathBuf,
    /// The FreeBSD base every cell builds: its name, version
    /// (`freebsd-version`, else `newvers.sh`) and branch. `target` and
    /// `target_arch` are empty here; [`MatrixPlan::build_options`] sets them
    /// per cell.
    pub freebsd_base: FreebsdBase,
    /// Parallel make jobs of every build: the file's `jobs`, else the number of
    /// CPUs of this host, which a cell on another machine replaces with that
    /// machine's ([`BuildOptions::jobs_per_machine`]).
    pub jobs: u32,
    /// The source object the cells build (see
    /// [`crate::sources::source_object`]), but remote cells of a file with
    /// a `remote-source`; until set, they build `source`.
    pub source_object: Option<SourceStore>,
}

impl MatrixPlan {
    /// Reads and checks the matrix at `path`; `machines` and `max_parallel`
    /// override the file's. The private key of every machine a cell may
    /// run on must be there ([`MatrixPlan::check_private_keys`]).
    pub fn load(
        path: &Path,
        machines: Option<&Path>,
        max_parallel: Option<u32>,
        registry: &Registry,
    ) -> Result<MatrixPlan> {
        let plan = Self::load_without_keys(path, machines, max_parallel, registry)?;
        plan.check_private_keys()?;
        Ok(plan)
    }

    /// [`MatrixPlan::load`] for `matrix run-cell`: the plan of cell `id`
    /// alone, checked as a whole, but for the private keys of the machines
    /// only that cell may run on (a CI runner need not hold the keys of
    /// machines other jobs build on).
    pub fn load_cell(
        path: &Path,
        machines: Option<&Path>,
        registry: &Registry,
        id: &str,
    ) -> Result<MatrixPlan> {
        let plan = Self::load_without_keys(path, machines, None, registry)?.only(id)?;
        plan.check_private_keys()?;
        Ok(plan)
    }

    /// [`MatrixPlan::load`] without the check of the machines' private keys.
    fn load_without_keys(
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
            file.strategy.max_parallel = Some(max);
        }
        let cells = cells(&file)?;
        // An executor that builds elsewhere says so in its capabilities;
        // its cells run on the pool.
        let capabilities = cells
            .iter()
            .map(|c| Ok(registry.get(&c.executor)?.capabilities.clone()))
            .collect::<Result<Vec<_>>>()?;
        let remote = capabilities.iter().map(|c| c.remote).collect();
        let boots_vms = capabilities.iter().map(|c| c.boots_vms).collect();
        let machines_file = machines
            .map(Path::to_path_buf)
            .or_else(|| file.machines_file.clone());
        let (machines, machines_text) = match machines_file {
            Some(p) => {
                let p = std::path::absolute(&p)
                    .map_err(|source| Error::MachinesPath { path: p, source })?;
                let (machines, text) = Machines::read_with_text(&p)?;
                (Some(machines), Some(text))
            }
            None => (None, None),
        };
        let source = check_source(&file.source)?;
        let freebsd_base = freebsd_base(
            &source,
            file.build.freebsd_version.as_deref(),
            file.build.freebsd_branch.as_deref(),
            "add (freebsd-version \"REVISION-BRANCH\") to the matrix file",
        )?;
        let plan = MatrixPlan {
            cells,
            remote,
            boots_vms,
            machines,
            machines_text,
            machines_copy: None,
            source,
            freebsd_base,
            jobs: file.build.jobs.unwrap_or_else(default_jobs),
            source_object: None,
            file,
        };
        plan.check(registry)?;
        Ok(plan)
    }

    /// Checks every cell's placement, request and configuration.
    fn check(&self, registry: &Registry) -> Result<()> {
        check_scheduler_keys(&self.file)?;
        if self.file.share_results && self.remote.iter().any(|r| *r) {
            self.check_signing_machines()?;
        }
        for (i, cell) in self.cells.iter().enumerate() {
            let placement = self.first_placement(i)?;
            let setup = |source: fruix_core::Error| Error::CellSetup {
                cell: cell.id.clone(),
                source: Box::new(source),
            };
            let executor = registry
                .create(&cell.executor, self.executor_config(i, &placement))
                .map_err(setup)?;
            let request = self.request(i, "20260101T000000Z".into());
            request
                .check()
                .and_then(|()| executor.check_request(&request))
                .map_err(setup)?;
        }
        Ok(())
    }

    /// With `share-results`, every remote cell's executor signs in the guest
    /// and every machine has a key to sign with.
    fn check_signing_machines(&self) -> Result<()> {
        for (i, cell) in self.cells.iter().enumerate() {
            if self.remote[i] && cell.executor != "guest-self-hosted" {
                return Err(Error::cell(
                    &cell.id,
                    format!(
                        "share-results needs every remote cell signed where it is built, and executor {} cannot sign there (guest-self-hosted can)",
                        cell.executor
                    ),
                ));
            }
        }
        let unsigned: Vec<&str> = self
            .machines
            .iter()
            .flat_map(|m| &m.machines)
            .filter(|m| m.signing_key.is_none())
            .map(|m| m.name.as_str())
            .collect();
        if !unsigned.is_empty() {
            return Err(Error::InvalidOption {
                option: "share-results",
                message: format!(
                    "needs every machine to sign its results, and {} of the machines file have no (signing-key ...) and (guest-signing-key ...)",
                    unsigned.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Refuses a machine a cell may run on ([`Pool::machines_for`]) whose
    /// `private-key` cannot be opened as a regular file by this user
    /// ([`Machines::check_private_keys`]): found at a cell's first attempt
    /// on it, hours into a run, it would fail only there. A cell whose
    /// executor configuration gives its own key ([`IDENTITY_KEY`]) uses
    /// none of its machines' keys.
    pub fn check_private_keys(&self) -> Result<()> {
        let Some(machines) = &self.machines else {
            return Ok(());
        };
        let pool = self.pool();
        let needs: Vec<Need> = (0..self.cells.len())
            .filter(|i| {
                !self
                    .config_of(*i)
                    .is_some_and(|c| c.contains_key(IDENTITY_KEY))
            })
            .map(|i| self.need(i))
            .collect();
        let used: HashSet<&str> = needs.iter().flat_map(|n| pool.machines_for(n)).collect();
        Ok(machines.check_private_keys(|m| used.contains(m.name.as_str()))?)
    }

    /// The public signing key of machine `name`, if it signs its results.
    pub fn signing_key(&self, name: &str) -> Option<&str> {
        self.machines
            .as_ref()
            .and_then(|m| m.get(name).ok())
            .and_then(|m| m.signing_key.as_deref())
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
                    fruix_core::escape::path(&self.file.path)
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
            boots_vms: self.boots_vms[i],
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
        Pool::new(
            machines,
            self.file.strategy.local_slots,
            self.file.strategy.max_parallel,
        )
    }

    /// The dispatcher of a run of this matrix.
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(
            self.pool(),
            (0..self.cells.len())
                .map(|i| (self.cells[i].id.clone(), self.need(i)))
                .collect(),
            self.file.strategy.retries,
            self.file.strategy.fail_fast,
        )
    }

    /// Writes the machines file's text, as the plan read and checked it, to
    /// `path` (read-only), and points every later attempt at that copy: a
    /// machines file edited while a run goes on does not change the run,
    /// and the report directory records the pool it used. Without a
    /// machines file, writes nothing.
    pub fn copy_machines(&mut self, path: &Path) -> Result<()> {
        let Some(text) = &self.machines_text else {
            return Ok(());
        };
        fruix_core::fsutil::write_atomic_with(path, |file| {
            use std::os::unix::fs::PermissionsExt;
            file.write_all(text.as_bytes())?;
            file.set_permissions(std::fs::Permissions::from_mode(0o444))
        })?;
        self.machines_copy = Some(path.to_path_buf());
        Ok(())
    }

    /// The executor configuration of cell `i` at `placement`.
    pub fn executor_config(&self, i: usize, placement: &Placement) -> serde_json::Value {
        let mut config = self.config_of(i).cloned().unwrap_or_default();
        if let (Placement::Machine(name), Some(machines)) = (placement, &self.machines) {
            let file = self.machines_copy.as_ref().unwrap_or(&machines.path);
            config.insert(
                "machines".into(),
                file.to_string_lossy().into_owned().into(),
            );
            config.insert("machine".into(), name.clone().into());
        }
        serde_json::Value::Object(config)
    }

    /// The matrix file's `config` of cell `i`'s executor, if it has one.
    fn config_of(&self, i: usize) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.file.config.get(&self.cells[i].executor)
    }

    /// The build request of cell `i` with run id `run_id`.
    pub fn request(&self, i: usize, run_id: String) -> BuildRequest {
        self.build_options(i).request(run_id)
    }

    /// The time limits of every attempt's build (`timeout`,
    /// `max-silent-time`).
    pub fn limits(&self) -> RunLimits {
        let seconds = |s: Option<u32>| s.map(|s| std::time::Duration::from_secs(s.into()));
        RunLimits {
            timeout: seconds(self.file.build.timeout),
            max_silent: seconds(self.file.build.max_silent_time),
        }
    }

    /// What cell `i` builds, and how.
    pub fn build_options(&self, i: usize) -> BuildOptions {
        let cell = &self.cells[i];
        let source = match (
            &self.file.remote_source,
            self.remote[i],
            &self.source_object,
        ) {
            (Some(remote), true, _) => SourceStore {
                tree_signature: None,
                path: remote.clone(),
                commit: None,
            },
            (_, _, Some(object)) => object.clone(),
            _ => SourceStore {
                tree_signature: None,
                path: self.source.to_string_lossy().into_owned(),
                commit: None,
            },
        };
        BuildOptions {
            freebsd_base: with_arch(&self.freebsd_base, &cell.target_arch, None),
            source: SourceStore {
                tree_signature: None,
                commit: self.file.source_commit.clone().or(source.commit),
                path: source.path,
            },
            policy: BuildPolicy {
                jobs: self.jobs,
                kernconf: cell.kernconf.clone(),
                make_flags: self
                    .file
                    .build
                    .make_flags
                    .iter()
                    .chain(&cell.make_flag)
                    .cloned()
                    .collect(),
                source_date_epoch: self.file.build.source_date_epoch,
            },
            jobs_per_machine: self.file.build.jobs.is_none(),
        }
    }

    /// This plan with only its cell `id` (for `matrix run-cell`).
    fn only(mut self, id: &str) -> Result<MatrixPlan> {
        let Some(i) = self.cells.iter().position(|c| c.id == id) else {
            let ids: Vec<&str> = self.cells.iter().map(|c| c.id.as_str()).collect();
            return Err(Error::InvalidOption {
                option: "--cell",
                message: format!(
                    "{id:?} is not a cell of {}; its cells: {}",
                    fruix_core::escape::path(&self.file.path),
                    ids.join(", ")
                ),
            });
        };
        self.cells = vec![self.cells.swap_remove(i)];
        self.remote = vec![self.remote[i]];
        self.boots_vms = vec![self.boots_vms[i]];
        Ok(self)
    }

    /// The groups of cells that must agree, as indexes into `cells` (see
    /// [`crate::agreement::groups`]).
    pub fn agreement_groups(&self) -> Vec<Vec<usize>> {
        agreement::groups(&self.cells, &self.file.agree_across)
    }

    /// Where cell `i` may run, for `fruix matrix plan`.
    pub fn placement_text(&self, i: usize) -> String {
        let arch = &self.cells[i].target_arch;
        match (&self.cells[i].machine, self.remote[i]) {
            (Some(m), _) => format!("machine {m}"),
            (None, true) => {
                let names: Vec<&str> = self
                    .machines
                    .iter()
                    .flat_map(|m| &m.machines)
                    .filter(|m| m.systems.is_empty() || m.systems.contains(arch))
                    .map(|m| m.name.as_str())
                    .collect();
                match names.as_slice() {
                    [] => format!("no machine (none in the machines file builds {arch})"),
                    [one] => format!("machine {one}"),
                    many => format!("machines {}", many.join(", ")),
                }
            }
            (None, false) => "local (this host)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use fruix_core::executor::{Capabilities, ConfigKey, ExecutorKind, RegistryEntry};
    use fruix_core::Failure;

    use super::*;
    use crate::schedule::Step;

    /// `local` (key `make`) and `remote` (keys `machines` and `machine`, and
    /// the remote capability, which is what puts its cells on the pool);
    /// both refuse a configuration key `bad`.
    fn registry() -> Registry {
        let mut registry = Registry::default();
        for (name, keys) in [
            ("local", &["make"][..]),
            ("remote", &["machines", "machine", "identity"]),
        ] {
            registry
                .add(RegistryEntry {
                    name: name.into(),
                    description: String::new(),
                    version: "0".into(),
                    origin: "tests".into(),
                    kind: ExecutorKind::BuiltIn,
                    capabilities: Capabilities {
                        remote: name == "remote",
                        ..Capabilities::default()
                    },
                    config_keys: keys
                        .iter()
                        .map(|k| ConfigKey {
                            name: k.to_string(),
                            description: String::new(),
                        })
                        .collect(),
                    factory: Arc::new(move |config: serde_json::Value| match config.get("bad") {
                        Some(_) => Err(fruix_core::Error::InvalidConfig {
                            executor: name.into(),
                            message: "unknown key `bad`".into(),
                        }),
                        None => Ok(fruix_core::testing::fn_executor(name, |_| {
                            unreachable!("plans run nothing")
                        })),
                    }),
                })
                .unwrap();
        }
        registry
    }

    /// A directory with a FreeBSD-looking `src/`, `machines.scm` (m1:
    /// amd64 only, 2 slots, faster; m2) and `matrix.scm` holding `body`.
    fn setup(body: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::mini_source(dir.path());
        std::fs::write(
            dir.path().join("machines.scm"),
            r#"(fruix-machines
  (machine (name "m1") (host "h1") (user "u") (systems "amd64") (parallel-builds 2) (speed 2.0))
  (machine (name "m2") (host "h2") (user "u")))"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("matrix.scm"),
            format!("(fruix-matrix (format-version 1) (source \"src\")\n{body})"),
        )
        .unwrap();
        dir
    }

    fn load(body: &str, max_parallel: Option<u32>) -> Result<MatrixPlan> {
        let dir = setup(body);
        MatrixPlan::load(
            &dir.path().join("matrix.scm"),
            None,
            max_parallel,
            &registry(),
        )
    }

    const MIXED: &str = r#"(machines-file "machines.scm")
  (axes (executor "local" "remote") (kernconf "GENERIC" "MINIMAL"))
  (include ((executor "remote") (kernconf "GENERIC") (machine "m2")))
  (make-flags "-DNO_ROOT") (jobs 3) (remote-source "/usr/src")
  (config (remote (timeout 5)))"#;

    /// Regression: the error said `pass --freebsd-version`, an option no
    /// matrix command has.
    #[test]
    fn a_source_without_newvers_asks_for_the_matrix_file_s_version() {
        let dir = setup(r#"(axes (executor "local"))"#);
        std::fs::remove_file(dir.path().join("src/sys/conf/newvers.sh")).unwrap();
        let load = || MatrixPlan::load(&dir.path().join("matrix.scm"), None, None, &registry());
        let e = load().unwrap_err();
        assert!(matches!(e, Error::UnknownVersion { .. }), "{e:?}");
        assert!(
            e.to_string()
                .ends_with("; add (freebsd-version \"REVISION-BRANCH\") to the matrix file"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("matrix.scm"),
            "(fruix-matrix (format-version 1) (source \"src\") (freebsd-version \"15.0-STABLE\")\n (axes (executor \"local\")))",
        )
        .unwrap();
        assert_eq!(load().unwrap().freebsd_base.version, "15.0-STABLE");
    }

    #[test]
    fn the_plan_names_the_machines_that_build_each_cells_arch() {
        let plan = load(
            r#"(machines-file "machines.scm") (remote-source "/usr/src")
  (axes (executor "remote") (target-arch "amd64" "aarch64"))"#,
            None,
        )
        .unwrap();
        let runs_on: Vec<String> = (0..2).map(|i| plan.placement_text(i)).collect();
        assert_eq!(
            runs_on,
            ["machines m1, m2", "machine m2"],
            "m1 builds amd64 only"
        );
    }

    #[test]
    fn executors_with_the_remote_capability_run_on_the_pool() {
        let dir = setup(MIXED);
        let plan =
            MatrixPlan::load(&dir.path().join("matrix.scm"), None, None, &registry()).unwrap();
        let ids: Vec<&str> = plan.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "local-GENERIC",
                "local-MINIMAL",
                "remote-GENERIC-m2",
                "remote-MINIMAL"
            ]
        );
        assert_eq!(plan.remote, [false, false, true, true]);
        let runs_on: Vec<String> = (0..4).map(|i| plan.placement_text(i)).collect();
        assert_eq!(
            runs_on,
            [
                "local (this host)",
                "local (this host)",
                "machine m2",
                "machines m1, m2"
            ]
        );
        assert_eq!(plan.need(2).pinned.as_deref(), Some("m2"));
        assert_eq!(plan.agreement_groups(), [vec![0, 2], vec![1, 3]]);
        // One local slot; the unpinned remote cell goes to the faster m1.
        let started: Vec<(usize, String)> = plan
            .dispatcher()
            .dispatch()
            .into_iter()
            .map(|step| match step {
                Step::Start(s) => (s.cell, s.placement.name().to_string()),
                Step::Fail { cell, reason } => panic!("cell {cell} failed: {reason}"),
            })
            .collect();
        assert_eq!(
            started,
            [(0, "local".into()), (2, "m2".into()), (3, "m1".into())]
        );
        let machines = dir.path().join("machines.scm");
        assert_eq!(
            plan.executor_config(3, &Placement::Machine("m1".into())),
            serde_json::json!({ "timeout": 5, "machines": machines, "machine": "m1" })
        );
        assert_eq!(
            plan.executor_config(0, &Placement::Local),
            serde_json::json!({})
        );
    }

    /// Attempts read the run's copy of the machines file, which holds the
    /// text the plan checked, however the file has changed since.
    #[test]
    fn attempts_read_the_run_s_copy_of_the_machines_file_as_checked() {
        let dir = setup(MIXED);
        let mut plan =
            MatrixPlan::load(&dir.path().join("matrix.scm"), None, None, &registry()).unwrap();
        let machines = dir.path().join("machines.scm");
        let checked = std::fs::read_to_string(&machines).unwrap();
        std::fs::write(&machines, "(fruix-machines)").unwrap();
        let copy = dir.path().join("report-machines.scm");
        plan.copy_machines(&copy).unwrap();
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), checked);
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "the copy is read-only");
        assert_eq!(
            plan.executor_config(3, &Placement::Machine("m1".into()))["machines"],
            serde_json::json!(copy)
        );
        // A matrix of local cells has no machines file, and no copy.
        let mut local = load(r#"(axes (executor "local"))"#, None).unwrap();
        let none = dir.path().join("none.scm");
        local.copy_machines(&none).unwrap();
        assert!(!none.exists() && local.machines_copy.is_none());
    }

    /// Regression: the reason named the cell by its index (`cell 3`).
    #[test]
    fn a_machine_set_aside_names_the_cell_that_showed_it_by_its_id() {
        use crate::schedule::{AttemptOutcome, Unusable};
        let plan = load(MIXED, None).unwrap();
        let mut dispatcher = plan.dispatcher();
        let starts: Vec<_> = dispatcher
            .dispatch()
            .into_iter()
            .filter_map(|step| match step {
                Step::Start(s) => Some(s),
                Step::Fail { .. } => None,
            })
            .collect();
        let on = |name: &str| {
            starts
                .iter()
                .find(|s| s.placement.name() == name)
                .unwrap()
                .clone()
        };
        for (start, why) in [
            (on("m2"), Unusable::Unreachable),
            (on("m1"), Unusable::DidNotComeUp),
        ] {
            dispatcher.finished(
                &start,
                AttemptOutcome::Failed {
                    failure: Failure::System,
                    unusable: Some(why),
                },
            );
        }
        assert_eq!(
            dispatcher.pool().set_aside_machines(),
            [
                (
                    "m1".to_string(),
                    "its guest did not come up for attempt 1 of cell remote-MINIMAL".to_string()
                ),
                (
                    "m2".to_string(),
                    "unreachable after attempt 1 of cell remote-GENERIC-m2".to_string()
                ),
            ]
        );
    }

    #[test]
    fn requests_follow_the_cell_and_where_it_builds() {
        let plan = load(MIXED, None).unwrap();
        let remote = plan.request(3, "r1".into());
        assert_eq!(remote.run_id, "r1");
        assert_eq!(remote.source.path, "/usr/src", "remote-source on the pool");
        assert_eq!(remote.policy.kernconf, "MINIMAL");
        assert_eq!(remote.policy.jobs, 3);
        assert!(!remote.jobs_per_machine, "the file gives jobs");
        assert_eq!(remote.policy.make_flags, ["-DNO_ROOT"]);
        let base = &remote.freebsd_base;
        assert_eq!(
            (
                base.version.as_str(),
                base.branch.as_str(),
                base.target.as_str()
            ),
            ("15.0-STABLE", "stable/15", "amd64")
        );
        let local = plan.request(0, "r2".into());
        assert_eq!(local.source.path, plan.source.to_string_lossy());
        assert!(plan.source.is_absolute() && plan.source.ends_with("src"));
        let flagged = load(
            r#"(axes (executor "local") (make-flag "A=1" "B=2") (target-arch "aarch64")) (make-flags "-DNO_ROOT")"#,
            None,
        )
        .unwrap();
        let request = flagged.request(1, "r".into());
        assert_eq!(
            request.policy.make_flags,
            ["-DNO_ROOT", "B=2"],
            "the matrix's, then the cell's"
        );
        assert_eq!(request.freebsd_base.target, "arm64");
        // Without the file's jobs, each machine that builds uses its CPUs.
        assert!(request.jobs_per_machine);
        assert_eq!(request.policy.jobs, crate::request::default_jobs());
    }

    #[test]
    fn max_parallel_given_by_the_caller_overrides_the_file() {
        let body = r#"(axes (executor "local")) (max-parallel 2)"#;
        assert_eq!(
            load(body, None).unwrap().file.strategy.max_parallel,
            Some(2)
        );
        assert_eq!(
            load(body, Some(5)).unwrap().file.strategy.max_parallel,
            Some(5)
        );
        let e = load(body, Some(0)).unwrap_err();
        assert_eq!(e.to_string(), "--max-parallel must be at least 1");
        assert_eq!(e.failure(), Failure::Input);
    }

    /// The error of loading `body`, checked to be the caller's fault.
    fn refused(body: &str) -> Error {
        let e = load(body, None).unwrap_err();
        assert_eq!(e.failure(), Failure::Input, "{e:?}");
        e
    }

    #[test]
    fn what_cannot_run_is_refused_before_anything_runs() {
        let e = refused(r#"(axes (executor "remote"))"#);
        assert!(
            matches!(&e, Error::InvalidCell { cell, .. } if cell == "remote"),
            "{e:?}"
        );
        assert!(e.to_string().contains("give machines-file in"), "{e}");
        let e =
            refused(r#"(axes (executor "local")) (include ((executor "local") (machine "m1")))"#);
        assert!(
            e.to_string()
                .contains("but executor local builds on this host"),
            "{e}"
        );
        let e =
            refused(r#"(machines-file "machines.scm") (axes (executor "remote") (machine "m9"))"#);
        assert!(e.to_string().starts_with("cell remote: "), "{e}");
        assert!(e.to_string().contains("m9"), "{e}");
        let e = refused(
            r#"(machines-file "machines.scm") (axes (executor "remote") (target-arch "riscv64") (machine "m1"))"#,
        );
        assert!(e.to_string().contains("does not build riscv64"), "{e}");
        let e = refused(r#"(axes (executor "local")) (config (local (machine "m1")))"#);
        assert!(
            matches!(&e, Error::SchedulerKey { key: "machine", .. }),
            "{e:?}"
        );
        let e = refused(r#"(axes (executor "local")) (config (local (bad 1)))"#);
        assert!(
            matches!(&e, Error::CellSetup { cell, .. } if cell == "local"),
            "{e:?}"
        );
        assert!(e.to_string().contains("unknown key `bad`"), "{e}");
        let e = refused(r#"(axes (executor "lokal"))"#);
        assert!(e.to_string().contains("unknown executor `lokal`"), "{e}");
        let e = refused(r#"(axes (executor "local")) (jobs 1) (jobs 2)"#);
        assert!(
            matches!(&e, Error::Core(fruix_core::Error::InvalidMetadata { field, .. }) if field == "jobs"),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_source_is_refused() {
        let dir = setup(r#"(axes (executor "local"))"#);
        std::fs::remove_dir_all(dir.path().join("src")).unwrap();
        let e =
            MatrixPlan::load(&dir.path().join("matrix.scm"), None, None, &registry()).unwrap_err();
        assert!(matches!(e, Error::InvalidSource { .. }), "{e:?}");
    }

    /// [`setup`] with m1's `private-key` at `keys/m1-misspelt` (absent)
    /// and m2's at `keys/m2`, a symlink to a regular file.
    fn setup_with_keys(body: &str) -> tempfile::TempDir {
        let dir = setup(body);
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(keys.join("m2.real"), "a key\n").unwrap();
        std::os::unix::fs::symlink("m2.real", keys.join("m2")).unwrap();
        std::fs::write(
            dir.path().join("machines.scm"),
            format!(
                r#"(fruix-machines
  (machine (name "m1") (host "h1") (user "u") (systems "amd64") (parallel-builds 2) (speed 2.0)
           (private-key {:?}))
  (machine (name "m2") (host "h2") (user "u") (private-key {:?})))"#,
                keys.join("m1-misspelt"),
                keys.join("m2")
            ),
        )
        .unwrap();
        dir
    }

    /// Regression: a machine's misspelt `private-key` was found only when
    /// a cell ran on it, after other cells were built: `matrix plan` took
    /// it. It is refused when the plan is loaded, as the configuration's
    /// mistake, naming the machine, its field and the path.
    #[test]
    fn a_used_machine_s_missing_private_key_is_refused_before_anything_runs() {
        let dir =
            setup_with_keys(r#"(machines-file "machines.scm") (axes (executor "local" "remote"))"#);
        let machines = dir.path().join("machines.scm");
        let e =
            MatrixPlan::load(&dir.path().join("matrix.scm"), None, None, &registry()).unwrap_err();
        assert_eq!(e.failure(), Failure::Input, "{e:?}");
        let Error::Core(fruix_core::Error::InvalidMetadata {
            path,
            field,
            line,
            message,
        }) = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(
            (path, field.as_str(), *line),
            (&machines, "machine[0].private-key", Some(3))
        );
        let key = dir.path().join("keys/m1-misspelt");
        assert!(
            message.starts_with(&format!("machine \"m1\": {} does not exist", key.display())),
            "{message}"
        );
    }

    /// Only the machines a cell may run on have their keys checked: a
    /// machine that builds none of the cells' arches, or that no cell is
    /// pinned to, or whose cells' executor is given another key
    /// (`identity`), may name a key this host lacks.
    #[test]
    fn a_machine_no_cell_uses_may_lack_its_private_key() {
        for body in [
            r#"(axes (executor "remote") (target-arch "aarch64"))"#,
            r#"(axes (executor "remote") (machine "m2"))"#,
            r#"(axes (executor "local"))"#,
            r#"(axes (executor "remote")) (config (remote (identity "/elsewhere")))"#,
        ] {
            let dir = setup_with_keys(&format!("(machines-file \"machines.scm\") {body}"));
            MatrixPlan::load(&dir.path().join("matrix.scm"), None, None, &registry())
                .unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    /// `run-cell` checks the keys of its own cell's machines only: a CI
    /// runner need not hold the keys of machines other jobs build on.
    #[test]
    fn run_cell_checks_the_keys_of_its_cell_s_machines_only() {
        let dir = setup_with_keys(
            r#"(machines-file "machines.scm") (axes (executor "remote") (machine "m1" "m2"))"#,
        );
        let load = |cell: &str| {
            MatrixPlan::load_cell(&dir.path().join("matrix.scm"), None, &registry(), cell)
        };
        assert_eq!(load("remote-m2").unwrap().cells[0].id, "remote-m2");
        let e = load("remote-m1").unwrap_err();
        assert!(e.to_string().contains("machine[0].private-key"), "{e}");
        assert_eq!(e.failure(), Failure::Input);
        let e = load("remote-m3").unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidOption {
                    option: "--cell",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
