//! The arguments `fruix matrix export` hands on to its jobs
//! (`--run-cell-arg`, `--collect-arg`), checked when the pipeline is
//! written against the flags `run-cell` and `collect` take: an argument
//! every job would refuse, or one the export gives every job itself
//! (`--cell`, `--report-dir`, `--from`, `--pipeline-run`), is refused
//! then, once, rather than by every job of the pipeline.
//!
//! The tables here follow the commands' clap definitions; the `fruix`
//! crate's tests check that they do, flag by flag and pair by pair.

use fruix_core::escape;

use crate::{Error, Result};

/// A flag of a job's command, as its command line defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flag {
    /// Its long name, without the dashes: `store`.
    pub long: &'static str,
    /// Its short name, if it has one: `q` of `--quiet`.
    pub short: Option<char>,
    /// It takes a value (`--store DIR`, `--store=DIR`).
    pub takes_value: bool,
    /// It may be given more than once.
    pub repeatable: bool,
}

/// A flag that takes a value, once.
const fn valued(long: &'static str) -> Flag {
    Flag {
        long,
        short: None,
        takes_value: true,
        repeatable: false,
    }
}

/// A flag that takes no value, once.
const fn switch(long: &'static str, short: Option<char>) -> Flag {
    Flag {
        long,
        short,
        takes_value: false,
        repeatable: false,
    }
}

/// The command line of a job's `fruix matrix` command, as far as the
/// export checks the arguments it adds.
#[derive(Debug)]
pub struct JobCommand {
    /// The `fruix matrix` subcommand: `run-cell`, `collect`.
    pub name: &'static str,
    /// The `matrix export` option that adds arguments to it.
    pub option: &'static str,
    /// Every flag the command takes, those the export gives included.
    pub flags: &'static [Flag],
    /// The flags (long names) the export gives every job itself.
    pub set_by_export: &'static [&'static str],
    /// Flags (long names) that cannot go together.
    pub conflicts: &'static [(&'static str, &'static str)],
    /// Flags (long names) that need another: (flag, the flag it needs).
    pub requires: &'static [(&'static str, &'static str)],
    /// Whether it takes operands after the matrix file (collect's `REPORT...`).
    pub operands: bool,
}

/// `fruix matrix run-cell`, whose `--cell`, `--report-dir` and
/// `--pipeline-run` the export gives.
pub const RUN_CELL: JobCommand = JobCommand {
    name: "run-cell",
    option: "--run-cell-arg",
    flags: &[
        Flag {
            long: "executors-file",
            short: None,
            takes_value: true,
            repeatable: true,
        },
        valued("store"),
        valued("state-dir"),
        valued("machines"),
        valued("cell"),
        valued("report-dir"),
        valued("pipeline-run"),
        switch("quiet", Some('q')),
        switch("verbose", Some('v')),
        valued("progress-every"),
        switch("json", None),
    ],
    set_by_export: &["cell", "report-dir", "pipeline-run"],
    conflicts: &[("quiet", "verbose")],
    requires: &[],
    operands: false,
};

/// `fruix matrix collect`, whose `--from`, `--report-dir` and
/// `--pipeline-run` the export gives.
pub const COLLECT: JobCommand = JobCommand {
    name: "collect",
    option: "--collect-arg",
    flags: &[
        valued("from"),
        valued("store"),
        valued("report-dir"),
        valued("state-dir"),
        valued("diff"),
        valued("pipeline-run"),
        switch("json", None),
    ],
    set_by_export: &["from", "report-dir", "pipeline-run"],
    conflicts: &[],
    requires: &[("diff", "store")],
    operands: true,
};

impl JobCommand {
    /// Checks `args`, added to every job's command after what the export
    /// gives it: each flag one the command takes and the export does not
    /// give, with its value when it takes one (in the same argument after
    /// `=`, or the next), given once unless it may be repeated, none
    /// beside a flag it conflicts with nor without one it needs; an operand
    /// only if the command takes operands.
    pub fn check(&self, args: &[String]) -> Result<()> {
        let mut given: Vec<&'static str> = Vec::new();
        let mut args = args.iter().peekable();
        while let Some(arg) = args.next() {
            if !is_flag(arg) {
                if self.operands {
                    continue;
                }
                return Err(self.refused(
                    arg,
                    format!(
                        "is not a flag, and {} takes no operand but the matrix file, which the export gives; give a flag's value after it ({}=--store {}=/frx/store, or {}=--store=/frx/store)",
                        self.name, self.option, self.option, self.option
                    ),
                ));
            }
            let flag = self.flag(arg)?;
            let inline = arg.starts_with("--") && arg.contains('=');
            if flag.takes_value && !inline && args.next_if(|v| !is_flag(v)).is_none() {
                return Err(self.refused(
                    arg,
                    format!(
                        "needs a value: {}=--{}=VALUE, or {}=--{} {}=VALUE",
                        self.option, flag.long, self.option, flag.long, self.option
                    ),
                ));
            }
            if !flag.takes_value && inline {
                return Err(self.refused(arg, format!("--{} takes no value", flag.long)));
            }
            if given.contains(&flag.long) && !flag.repeatable {
                return Err(self.refused(
                    arg,
                    format!(
                        "--{} is given twice; {} takes it once",
                        flag.long, self.name
                    ),
                ));
            }
            given.push(flag.long);
        }
        for (a, b) in self.conflicts {
            if given.contains(a) && given.contains(b) {
                return Err(Error::InvalidOption {
                    option: self.option,
                    message: format!("--{a} and --{b}: {} takes one or the other", self.name),
                });
            }
        }
        for (flag, needed) in self.requires {
            if given.contains(flag) && !given.contains(needed) {
                return Err(Error::InvalidOption {
                    option: self.option,
                    message: format!(
                        "--{flag} needs --{needed} too ({}=--{needed}=VALUE)",
                        self.option
                    ),
                });
            }
        }
        Ok(())
    }

    /// The flag `arg` (`--long`, `--long=VALUE` or `-s`) names, if the
    /// command takes it and the export does not give it itself.
    fn flag(&self, arg: &str) -> Result<&'static Flag> {
        let found = match arg.strip_prefix("--") {
            Some(long) => {
                let name = long.split_once('=').map_or(long, |(name, _)| name);
                self.flags.iter().find(|f| f.long == name)
            }
            None => self
                .flags
                .iter()
                .find(|f| f.short.is_some_and(|s| arg == format!("-{s}"))),
        };
        let Some(flag) = found else {
            let name = arg.trim_start_matches('-');
            let close = self
                .takes()
                .find(|f| fruix_core::sexp::is_close(name, f.long))
                .map(|f| format!("did you mean --{}? ", f.long))
                .unwrap_or_default();
            let takes: Vec<String> = self
                .takes()
                .map(|f| match f.short {
                    Some(s) => format!("--{} (-{s})", f.long),
                    None => format!("--{}", f.long),
                })
                .collect();
            return Err(self.refused(
                arg,
                format!(
                    "is not a flag of fruix matrix {}; {close}the export passes on {}",
                    self.name,
                    takes.join(", ")
                ),
            ));
        };
        if self.set_by_export.contains(&flag.long) {
            return Err(self.refused(
                arg,
                format!(
                    "the export gives every {} job its --{} itself",
                    self.name, flag.long
                ),
            ));
        }
        Ok(flag)
    }

    /// The flags an export option may add.
    fn takes(&self) -> impl Iterator<Item = &'static Flag> + '_ {
        self.flags
            .iter()
            .filter(|f| !self.set_by_export.contains(&f.long))
    }

    fn refused(&self, arg: &str, why: String) -> Error {
        Error::InvalidOption {
            option: self.option,
            message: format!("{}: {why}", escape::quoted(arg)),
        }
    }
}

/// Whether `arg` is a flag, as clap reads one: a dash and more (`-` alone
/// is an operand).
fn is_flag(arg: &str) -> bool {
    arg.starts_with('-') && arg != "-"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(job: &JobCommand, args: &[&str]) -> std::result::Result<(), String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        job.check(&args).map_err(|e| e.to_string())
    }

    fn refused(job: &JobCommand, args: &[&str], says: &str) {
        let message = check(job, args).expect_err(&format!("{args:?} passed"));
        assert!(message.contains(says), "{args:?}: {message}");
    }

    #[test]
    fn run_cell_arguments_the_jobs_take_pass() {
        for args in [
            &["--store", "/frx/store", "--state-dir=/var/lib/fruix"][..],
            &["--executors-file", "a.scm", "--executors-file=b.scm"],
            &["-q", "--json", "--progress-every", "5min"],
            &["--machines", "-"],
            &[],
        ] {
            assert_eq!(check(&RUN_CELL, args), Ok(()), "{args:?}");
        }
        assert_eq!(
            check(&COLLECT, &["--store", "/s", "--diff=diffoscope", "r.json"]),
            Ok(())
        );
    }

    /// Regression: `--run-cell-arg=--report-dir=x` made every job fail
    /// ("cannot be used multiple times"), and `--bogus` or an operand was
    /// written into every job's command.
    #[test]
    fn run_cell_arguments_every_job_would_refuse_are_refused() {
        let refusals: &[(&JobCommand, &[&str], &str)] = &[
            (&RUN_CELL, &["--report-dir=x"], "--run-cell-arg \"--report-dir=x\": the export gives every run-cell job its --report-dir itself"),
            (&RUN_CELL, &["--cell", "x"], "its --cell itself"),
            (&RUN_CELL, &["--bogus"], "\"--bogus\": is not a flag of fruix matrix run-cell; the export passes on --executors-file, --store, --state-dir, --machines, --quiet (-q), --verbose (-v), --progress-every, --json"),
            (&RUN_CELL, &["--stor", "/s"], "did you mean --store?"),
            (&RUN_CELL, &["-qv"], "is not a flag"),
            (&RUN_CELL, &["/frx/store"], "takes no operand"),
            (&RUN_CELL, &["--store"], "needs a value: --run-cell-arg=--store=VALUE"),
            (&RUN_CELL, &["--store", "--json"], "needs a value"),
            (&RUN_CELL, &["--json=yes"], "--json takes no value"),
            (&RUN_CELL, &["--store=/a", "--store", "/b"], "--store is given twice; run-cell takes it once"),
            (&RUN_CELL, &["-v", "--quiet"], "--quiet and --verbose: run-cell takes one or the other"),
            (&COLLECT, &["--from=x"], "every collect job its --from itself"),
            (&COLLECT, &["--diff", "diffoscope"], "--collect-arg --diff needs --store too"),
        ];
        for (job, args, says) in refusals {
            refused(job, args, says);
        }
    }
}
