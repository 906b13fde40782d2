//! Command-line arguments of `fruix`, as parsed by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fruix_core::promotion::MAX_SOURCE_DATE_EPOCH;

mod exits;
mod matrix;
mod parse;
mod store;
mod version;
pub use matrix::*;
pub use parse::{parse, refusal, refused_line_wants_json};
pub use store::*;

/// Fruix: native FreeBSD base builds through pluggable executors, promoted into
/// an immutable, content-identified store.
#[derive(Debug, Parser)]
#[command(name = "fruix", version, long_version = version::long(), after_help = fruix_core::ExitStatus::help_table(), propagate_version = true)]
// Each command's help ends with its exit statuses.
#[command(mut_subcommands(exits::annotate))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub executors: ExecutorsFiles,
}

/// `--executors-file`, given before the command or after it; only the
/// commands that use executors (build, executors list and describe, matrix
/// plan, run and run-cell) take it, and any other refuses it (exit 2).
#[derive(Debug, Args, Clone, Default)]
pub struct ExecutorsFiles {
    /// Also read external executors from FILE (repeatable; before or after the command), after
    /// /etc/fruix/executors.scm and $XDG_CONFIG_HOME/fruix/executors.scm. Only build, executors
    /// list and describe, and matrix plan, run and run-cell use it; any other command refuses it.
    #[arg(long = "executors-file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build FreeBSD base (world, kernel, headers, bootloader) with an executor and promote the result.
    Build(Box<BuildArgs>),
    /// Native-build result roots: promote them into the store; self-hosted is the guest side of guest-self-hosted.
    #[command(name = "native-build", subcommand)]
    NativeBuild(NativeBuildCommand),
    /// The store: verify, list, info, query, roots, add-root, gc, delete, generate-key, sign, export, import, copy, serve.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Source trees as store objects, identified by their content.
    #[command(subcommand)]
    Source(SourceCommand),
    /// The executors this fruix knows.
    #[command(subcommand)]
    Executors(ExecutorsCommand),
    /// Build matrices: one build across executors, configurations and machines, checked for agreement.
    #[command(subcommand)]
    Matrix(MatrixCommand),
    /// Print a shell completion script for fruix (e.g. `fruix completions bash > /etc/bash_completion.d/fruix`).
    Completions(CompletionsArgs),
    /// Write fruix's man pages: fruix(1) on stdout, or one page per command into --dir.
    Man(ManArgs),
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Copy a FreeBSD source tree into the store (ignored build output left out) and print its store path.
    Add(SourceAddArgs),
}

/// `--json` and `--quiet` are those of [`SummaryArgs`], with help that
/// says what `source add` prints: a store path, not key=value lines.
#[derive(Debug, Args)]
#[command(mut_arg("json", |a| a.help(
    "Print the source object as one JSON object (its store path, whether it is new, its identity \
     and size) instead of its store path alone"
)))]
#[command(mut_arg("quiet", |a| a.help(
    "Print no progress and no notes: the store path (and a warning, if any) alone"
)))]
pub struct SourceAddArgs {
    /// The source tree (a git checkout's commit and dirtiness are recorded).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The source object's name: STORE/<hash>-freebsd-source-NAME.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub name: String,
    /// FreeBSD version, e.g. 15.0-STABLE (default: read from the tree's sys/conf/newvers.sh).
    #[arg(long, value_name = "VERSION")]
    pub freebsd_version: Option<String>,
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub output: SummaryArgs,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write fruix.1 and a page per command (fruix-build.1, fruix-store-verify.1, ...) into DIR.
    #[arg(long, value_name = "DIR", value_parser = directory())]
    pub dir: Option<PathBuf>,
}

/// How much a promotion prints (no build log: promote runs no build);
/// `source add` says its own help for them.
#[derive(Debug, Args, Clone, Copy)]
pub struct SummaryArgs {
    /// Print the summary as one JSON object instead of key=value lines.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but the summary (no progress).
    #[arg(long, short)]
    pub quiet: bool,
}

impl From<SummaryArgs> for OutputArgs {
    fn from(s: SummaryArgs) -> OutputArgs {
        OutputArgs {
            json: s.json,
            quiet: s.quiet,
            verbose: false,
        }
    }
}

/// How much to print.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArgs {
    /// Print the summary as one JSON object instead of key=value lines.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but the summary (no progress, no stage lines).
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Stream every build log line.
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Args, Clone)]
pub struct StateDirArg {
    /// Fruix state directory: garbage collector roots (gcroots/), result roots
    /// (native-builds/) and matrix reports (matrix/) (default: /var/lib/fruix as root,
    /// else $XDG_DATA_HOME/fruix/state).
    #[arg(
        long,
        value_name = "DIR",
        env = "FRUIX_STATE_DIR",
        default_value_os_t = crate::defaults::state_dir(),
        value_parser = directory()
    )]
    pub state_dir: PathBuf,
}

/// A directory fruix makes when it is missing (`--state-dir`,
/// `--report-dir`, `man --dir`): refused (exit 2) when it, or a directory
/// above it, is there as something else (a regular file, say), which no
/// command could write into. A relative one is made absolute against the
/// working directory, so that every path fruix prints beneath it (a result
/// root `store gc` removed, a build's full log, a matrix report) can be used
/// from anywhere.
pub fn directory() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::PathBufValueParser::new().try_map(|path| {
        if let Some(found) = fruix_promote::store::not_a_directory(&path) {
            return Err(format!(
                "{found}; give a directory, or a path where one can be made"
            ));
        }
        std::path::absolute(&path).map_err(|e| {
            format!(
                "{}: cannot make it absolute: {e}",
                fruix_core::escape::path(&path)
            )
        })
    })
}

/// The `./result` link to a promoted bundle, registered as a root, and the
/// key the promoted objects are signed with: [`OutLinkFlags`] as parsed,
/// with where the key came from.
#[derive(Debug, Clone)]
pub struct OutLinkArgs {
    /// The key of `--sign-with`, or else of `FRUIX_SIGNING_KEY`.
    pub sign_with: Option<PathBuf>,
    /// Whether `--sign-with` was given on the command line: a key from
    /// `FRUIX_SIGNING_KEY` is a default, not a request (`build
    /// --no-promote` refuses the flag, not the variable).
    pub sign_with_given: bool,
    /// Where to link the result bundle.
    pub out_link: PathBuf,
    /// Make no link.
    pub no_out_link: bool,
}

/// The flags of [`OutLinkArgs`], as clap parses them.
#[derive(Debug, Args)]
struct OutLinkFlags {
    /// Sign what is promoted (the bundle's closure) with this secret key (see `fruix store generate-key`).
    #[arg(long, value_name = "FILE", env = "FRUIX_SIGNING_KEY")]
    sign_with: Option<PathBuf>,
    /// Where to link the result bundle (a garbage collector root as long as
    /// the link exists).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "result",
        conflicts_with = "no_out_link"
    )]
    out_link: PathBuf,
    /// Make no link: the bundle is not a root, and `fruix store gc` may remove it.
    #[arg(long)]
    no_out_link: bool,
}

impl clap::FromArgMatches for OutLinkArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let OutLinkFlags {
            sign_with,
            out_link,
            no_out_link,
        } = OutLinkFlags::from_arg_matches(matches)?;
        Ok(OutLinkArgs {
            sign_with,
            sign_with_given: matches.value_source("sign_with")
                == Some(clap::parser::ValueSource::CommandLine),
            out_link,
            no_out_link,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = OutLinkArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for OutLinkArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        OutLinkFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        OutLinkFlags::augment_args_for_update(command)
    }
}

#[derive(Debug, Args, Clone)]
pub struct StoreArg {
    /// The store directory (default: /frx/store as root, else
    /// $XDG_DATA_HOME/fruix/store).
    #[arg(long, value_name = "DIR", env = "FRUIX_STORE", default_value_os_t = crate::defaults::store())]
    pub store: PathBuf,
}

/// `build`: the source is `--source` or `--guest-source`, one of them (a
/// required group, so that the usage line shows it).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source_tree").args(["source", "guest_source"]).required(true)))]
pub struct BuildArgs {
    /// The executor to run (see `fruix executors list`).
    #[arg(long, value_name = "NAME")]
    pub executor: String,
    #[command(flatten)]
    pub executors: ExecutorsFiles,
    /// The FreeBSD source tree on this host: a source object's store path, or a directory, which
    /// is first added to the store (see `fruix source add`); a guest executor sends it to the guest.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// A guest executor's own checkout, as an absolute path in the guest (instead of --source);
    /// the guest-self-hosted helper records its tree signature.
    #[arg(long, value_name = "PATH")]
    pub guest_source: Option<String>,
    /// The source's commit, recorded in the metadata.
    #[arg(long, value_name = "COMMIT")]
    pub source_commit: Option<String>,
    /// Kernel configuration.
    #[arg(long, value_name = "K", default_value = "GENERIC")]
    pub kernconf: String,
    /// TARGET_ARCH to build for (default: what --target builds by default, e.g. aarch64 for
    /// arm64; amd64 without --target).
    #[arg(long, value_name = "A")]
    pub target_arch: Option<String>,
    /// TARGET to build for (default: derived from --target-arch); one that does not build
    /// --target-arch is refused.
    #[arg(long, value_name = "T")]
    pub target: Option<String>,
    /// Parallel make jobs, 1 to 4096 (default: the number of CPUs of the machine that builds).
    #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(fruix_core::executor::MAX_JOBS)))]
    pub jobs: Option<u32>,
    /// Extra make argument, repeatable (e.g. -DNO_ROOT, WITH_REPRODUCIBLE_BUILD=yes).
    #[arg(long = "make-flag", value_name = "F", allow_hyphen_values = true)]
    pub make_flags: Vec<String>,
    /// Stop the build once it has run this long (e.g. 2h, 90min; a bare number is seconds): a
    /// timeout, exit 3.
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub timeout: Option<std::time::Duration>,
    /// Stop the build once it has said nothing for this long (no log line, no progress; a
    /// hung make), e.g. 30min (a bare number is seconds): a timeout, exit 3.
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub max_silent_time: Option<std::time::Duration>,
    /// SOURCE_DATE_EPOCH for the build, seconds from 0 to 253402300799 (the end of the year
    /// 9999) (default: $SOURCE_DATE_EPOCH, if set).
    #[arg(long, value_name = "SECONDS", env = "SOURCE_DATE_EPOCH", allow_negative_numbers = true, value_parser = parse_source_date_epoch)]
    pub source_date_epoch: Option<i64>,
    /// FreeBSD version, e.g. 15.0-STABLE (default: read from the source's sys/conf/newvers.sh).
    #[arg(long, value_name = "VERSION")]
    pub freebsd_version: Option<String>,
    /// FreeBSD branch, e.g. stable/15 (default: derived from the version).
    #[arg(long, value_name = "BRANCH")]
    pub freebsd_branch: Option<String>,
    /// Where to write the result root (default: STATE_DIR/native-builds/RUN_ID). Must not exist.
    #[arg(long, value_name = "DIR")]
    pub result_root: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateDirArg,
    /// Executor configuration, repeatable (see `fruix executors describe NAME`).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    #[command(flatten)]
    pub store: StoreArg,
    /// Stop after the result root is built and validated; do not promote
    /// (so no --out-link, --no-out-link or --sign-with).
    #[arg(long, conflicts_with_all = ["out_link", "no_out_link"])]
    pub no_promote: bool,
    #[command(flatten)]
    pub out_link: OutLinkArgs,
    #[command(flatten)]
    pub guest: GuestArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// `--progress-every`, of the commands that build or do long store work.
#[derive(Debug, Args)]
pub struct ProgressArg {
    /// Without a terminal, say how far along long work is (a stage still running, files and bytes
    /// so far) once nothing was printed for this long (e.g. 10min; a bare number is seconds; 0:
    /// never).
    #[arg(long, value_name = "DURATION", value_parser = parse_progress_every, default_value = crate::heartbeat::PROGRESS_EVERY, env = "FRUIX_PROGRESS_EVERY")]
    pub progress_every: std::time::Duration,
}

impl ProgressArg {
    /// The interval, `None` for never.
    pub fn every(&self) -> Option<std::time::Duration> {
        Some(self.progress_every).filter(|d| !d.is_zero())
    }
}

/// The guest of the SSH executors (host-initiated, guest-self-hosted); each
/// flag sets the executor configuration key of the same name.
#[derive(Debug, Args, Default)]
pub struct GuestArgs {
    /// The guest to build in, as USER@HOST[:PORT].
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    pub guest: Option<String>,
    #[command(flatten)]
    pub auth: SshAuthArgs,
    /// The guest's state directory (default /var/lib/fruix).
    #[arg(long, value_name = "DIR")]
    pub guest_state_dir: Option<String>,
    /// The guest's fruix, for guest-self-hosted (default: fruix on the guest's PATH).
    #[arg(long, value_name = "PATH")]
    pub guest_helper: Option<String>,
    /// A machines file (fruix-machines ...) naming the guests.
    #[arg(long, value_name = "FILE", requires = "machine")]
    pub machines: Option<PathBuf>,
    /// The machine of --machines to build on.
    #[arg(long, value_name = "NAME", requires = "machines")]
    pub machine: Option<String>,
}

/// How to log in to another machine over SSH and check its host key: the
/// guest of `build`, the other machine of `store copy`.
#[derive(Debug, Args, Default)]
pub struct SshAuthArgs {
    /// Private key file for the other machine (default: ssh-agent, then ~/.ssh/id_*).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// OpenSSH known_hosts file checked for the other machine's host key (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record an unknown host key in known_hosts instead of refusing it.
    #[arg(long)]
    pub accept_new_host_key: bool,
}

#[derive(Debug, Subcommand)]
pub enum NativeBuildCommand {
    /// Validate a result root and promote it into the store.
    Promote(PromoteArgs),
    /// Guest side of the guest-self-hosted executor: build a JSON request here, answering on
    /// stdout in the guest helper protocol (JSON Lines: events, then one outcome: the result
    /// root or the failure).
    #[command(name = "self-hosted")]
    SelfHosted(SelfHostedArgs),
}

#[derive(Debug, Args)]
pub struct SelfHostedArgs {
    /// The build request (JSON); default: read it from stdin.
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateDirArg,
    /// The make program (default: make on FreeBSD, bmake elsewhere).
    #[arg(long, value_name = "MAKE")]
    pub make: Option<String>,
    /// Sign the result where it is built with this machine's secret key
    /// (the host checks the signatures against the machine's signing-key).
    #[arg(long, value_name = "FILE", requires = "sign_for_store")]
    pub sign_with: Option<PathBuf>,
    /// The host store the signed objects will be in (their fingerprints name it).
    #[arg(long, value_name = "DIR", requires = "sign_with")]
    pub sign_for_store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The result root (promotion.scm + artifacts/).
    #[arg(value_name = "RESULT_ROOT")]
    pub result_root: PathBuf,
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub state: StateDirArg,
    #[command(flatten)]
    pub out_link: OutLinkArgs,
    #[command(flatten)]
    pub output: SummaryArgs,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Subcommand)]
pub enum ExecutorsCommand {
    /// Name, version, kind and description of every executor.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        executors: ExecutorsFiles,
    },
    /// An executor's configuration keys and capabilities.
    Describe {
        /// The executor's name.
        name: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        executors: ExecutorsFiles,
    },
}

/// A `SOURCE_DATE_EPOCH` (`--source-date-epoch` or the environment): a
/// non-negative integer, as the reproducible-builds specification says,
/// no later than [`MAX_SOURCE_DATE_EPOCH`]. Refused as the arguments are
/// read, rather than late inside make.
fn parse_source_date_epoch(value: &str) -> Result<i64, String> {
    let decimal = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<i64>() {
        Ok(n) if decimal && n <= MAX_SOURCE_DATE_EPOCH => Ok(n),
        _ => Err(format!(
            "SOURCE_DATE_EPOCH must be a whole number of seconds from 0 to \
             {MAX_SOURCE_DATE_EPOCH} (the end of the year 9999)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::{ArgAction, CommandFactory, Parser};
    use fruix_matrix::export::{Flag, JobCommand, COLLECT, RUN_CELL};

    use super::Cli;

    /// A flag as the tests compare them: long name, short name, whether it
    /// takes a value, whether it may be repeated.
    type FlagShape = (String, Option<char>, bool, bool);

    /// The flags of `fruix matrix NAME`, as clap defines them, and whether
    /// it takes operands after the matrix file.
    fn clap_flags(name: &str) -> (Vec<FlagShape>, bool) {
        let cli = Cli::command();
        let command = cli
            .find_subcommand("matrix")
            .and_then(|m| m.find_subcommand(name))
            .unwrap_or_else(|| panic!("no matrix {name}"));
        let mut flags: Vec<FlagShape> = command
            .get_arguments()
            .filter_map(|arg| {
                let action = arg.get_action();
                Some((
                    arg.get_long()?.to_string(),
                    arg.get_short(),
                    action.takes_values(),
                    matches!(action, ArgAction::Append | ArgAction::Count),
                ))
            })
            .filter(|(long, ..)| !["help", "version"].contains(&long.as_str()))
            .collect();
        flags.sort();
        let operands = command.get_positionals().any(|a| a.get_id() != "file");
        (flags, operands)
    }

    /// Regression: `fruix store --help`'s summary left out `add-root`. It
    /// names every store command, in `--help`'s order.
    #[test]
    fn the_store_summary_names_every_store_command() {
        let cli = Cli::command();
        let store = cli.find_subcommand("store").unwrap();
        let about = store.get_about().unwrap().to_string();
        let listed = about
            .strip_prefix("The store: ")
            .map(|l| l.trim_end_matches('.'))
            .unwrap_or_else(|| panic!("{about}"));
        let names: Vec<&str> = store
            .get_subcommands()
            .map(|c| c.get_name())
            .filter(|n| *n != "help")
            .collect();
        assert_eq!(listed.split(", ").collect::<Vec<_>>(), names);
    }

    /// `matrix export` checks the arguments it hands on to run-cell and
    /// collect against its own tables of their flags: they are clap's.
    #[test]
    fn export_knows_the_flags_of_run_cell_and_collect() {
        for job in [&RUN_CELL, &COLLECT] {
            let mut ours: Vec<FlagShape> = job
                .flags
                .iter()
                .map(|f| (f.long.to_string(), f.short, f.takes_value, f.repeatable))
                .collect();
            ours.sort();
            assert_eq!(clap_flags(job.name), (ours, job.operands), "{}", job.name);
        }
    }

    /// Whether clap takes `fruix matrix NAME FILE` with what the export
    /// gives, then `args`.
    fn clap_takes(job: &JobCommand, args: &[String]) -> bool {
        let given = job
            .set_by_export
            .iter()
            .flat_map(|long| [format!("--{long}"), "x".to_string()]);
        let words = ["fruix", "matrix", job.name, "m.scm"]
            .map(String::from)
            .into_iter()
            .chain(given)
            .chain(args.iter().cloned());
        Cli::try_parse_from(words).is_ok()
    }

    /// `flag` as a job argument, with a value clap takes when it needs one.
    fn given(flag: &Flag, short: bool) -> Vec<String> {
        let name = match (short, flag.short) {
            (true, Some(s)) => format!("-{s}"),
            _ => format!("--{}", flag.long),
        };
        let value = match flag.long {
            "progress-every" => "5min",
            "diff" => "diffoscope",
            _ => "x",
        };
        match flag.takes_value {
            true => vec![name, value.into()],
            false => vec![name],
        }
    }

    /// `matrix export` refuses a job argument exactly when the job's clap
    /// would: every flag alone, every pair of flags (twice the same one,
    /// conflicting, one needing the other), the flags the export gives
    /// itself, and an operand.
    #[test]
    fn export_refuses_the_job_arguments_clap_refuses() {
        for job in [&RUN_CELL, &COLLECT] {
            let mut cases: Vec<Vec<String>> = vec![vec![], vec!["r.json".into()]];
            for a in job.flags {
                cases.push(given(a, true));
                cases.push(given(a, false));
                for b in job.flags {
                    cases.push([given(a, false), given(b, true)].concat());
                }
            }
            for args in cases {
                assert_eq!(
                    job.check(&args).is_ok(),
                    clap_takes(job, &args),
                    "{} {args:?}: {:?}",
                    job.name,
                    job.check(&args)
                );
            }
        }
    }

    #[test]
    fn a_source_date_epoch_is_a_decimal_from_0_to_the_end_of_the_year_9999() {
        for (value, taken) in [
            ("0", Some(0)),
            ("1775424884", Some(1_775_424_884)),
            ("253402300799", Some(super::MAX_SOURCE_DATE_EPOCH)),
            ("253402300800", None),
            ("-1", None),
            ("+5", None),
            (" 5", None),
            ("", None),
            ("9223372036854775807", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(
                super::parse_source_date_epoch(value).ok(),
                taken,
                "{value:?}"
            );
        }
    }
}
