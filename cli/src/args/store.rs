//! Arguments of `fruix store ...`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{ProgressArg, SshAuthArgs, StateDirArg, StoreArg};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Re-hash objects and compare them with their manifests and tree signatures; check the registry.
    Verify(VerifyArgs),
    /// List the valid objects: kind, artifact, version, executor, kernconf, run id, registration, size.
    List(ListArgs),
    /// Describe objects: kind, sizes (own and closure), signature, registration, build, references.
    Info(InfoArgs),
    /// Ask what an object references, what references it, its closure, or its roots.
    Query(QueryArgs),
    /// List the garbage collector's roots, and which are dead.
    Roots(RootsArgs),
    /// Make a symlink to an object and register it as a root, safely while a collection runs.
    AddRoot(AddRootArgs),
    /// Remove every object no root keeps alive, unused pool entries, leftovers and old result roots.
    Gc(GcArgs),
    /// Remove objects that nothing references and no root keeps alive.
    Delete(DeleteArgs),
    /// Create an ed25519 key pair for signing objects (name:base64 files, as Nix's).
    GenerateKey(GenerateKeyArgs),
    /// Sign objects with a secret key: their path, tree signature, size and references (at most 64 signatures an object).
    Sign(SignArgs),
    /// Write objects, with their metadata, references and signatures, as an archive.
    Export(ExportArgs),
    /// Read an archive into the store, checking every object and its signatures.
    Import(ImportArgs),
    /// Copy objects to or from another machine's store over SSH, sending only what it lacks.
    Copy(CopyArgs),
    /// Serve this store on standard input and output, for `store copy` on another machine.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("direction").args(["to", "from"]).required(true)))]
#[command(mut_args(for_from_only))]
pub struct CopyArgs {
    /// Send the objects to the store of this machine.
    #[arg(long, value_name = "ssh://USER@HOST[:PORT]")]
    pub to: Option<String>,
    /// Fetch the objects (paths in that machine's store) from this machine.
    #[arg(long, value_name = "ssh://USER@HOST[:PORT]")]
    pub from: Option<String>,
    /// The objects to copy.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Copy the objects' closures: everything they reference, transitively.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    #[command(flatten)]
    pub auth: SshAuthArgs,
    /// The fruix command on the other machine.
    #[arg(long, value_name = "COMMAND", default_value = "fruix")]
    pub remote_program: String,
    /// The store on the other machine (default: the same path as this one's;
    /// objects only move between stores at the same path).
    #[arg(long, value_name = "DIR")]
    pub remote_store: Option<PathBuf>,
    /// Stop the copy when the other side neither sends nor takes a byte for
    /// DURATION (e.g. 10min, 90s; a bare number is seconds) while the copy
    /// waits on it (a hung `store serve`, alive for SSH keepalives): a
    /// timeout, exit 3.
    #[arg(long, value_name = "DURATION", default_value = "10min", value_parser = parse_limit)]
    pub idle_timeout: Duration,
    /// Stop the copy once it has taken DURATION in all (e.g. 2h; a bare
    /// number is seconds), however the other side keeps it going (one that
    /// sends a byte now and then is never idle): a timeout, exit 3, the
    /// other side stopped. No limit unless given.
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub timeout: Option<Duration>,
    /// This machine's store, and whom it trusts with what --from fetches:
    /// the trust flags are for --from only, and refused with --to (the other
    /// store decides whom it trusts); their help says so (`for_from_only`).
    #[command(flatten)]
    pub local: StoreTrust,
    /// Print what was copied as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub quiet: QuietArg,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// `--quiet` of the commands that move objects (`store export`, `import`
/// and `copy`): as `verify`'s and `gc`'s, no progress.
#[derive(Debug, Args, Clone, Copy)]
pub struct QuietArg {
    /// Print no progress, and on a terminal no line naming the store (what was moved, and the
    /// summary line, are still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// A flag of `store copy` whose help gets "(with --from only)", when it is
/// one of its trust flags ([`TrustArgs`]).
fn for_from_only(flag: clap::Arg) -> clap::Arg {
    match flag.get_id().as_str() {
        "trusted_keys" | "trusted_keys_file" | "no_check_sigs" => {
            let help = flag.get_help().map(ToString::to_string).unwrap_or_default();
            flag.help(format!("{help} (with --from only)"))
        }
        _ => flag,
    }
}

/// Objects of a store: their paths, and the store.
#[derive(Debug, Args)]
pub struct ObjectsArg {
    /// The objects (store paths, or links to them).
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub local: StoreTrust,
    /// Stop serving when the client neither sends nor takes a byte for
    /// DURATION (e.g. 10min, 90s; a bare number is seconds) while the server
    /// waits on it (a client alive for SSH keepalives but hung, holding the
    /// store): a timeout, exit 3.
    #[arg(long, value_name = "DURATION", default_value = "10min", value_parser = parse_limit)]
    pub idle_timeout: Duration,
}

/// A store, and whom it trusts with the objects that come into it.
#[derive(Debug, Args)]
pub struct StoreTrust {
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub store: StoreArg,
}

/// Whom an import trusts.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// A trusted public key (NAME:BASE64, as `store generate-key` writes it); repeatable.
    #[arg(long = "trusted-key", value_name = "KEY")]
    pub trusted_keys: Vec<String>,
    /// A file of trusted public keys, one per line (# at a line's start or after white space starts a comment).
    #[arg(long, value_name = "FILE", env = "FRUIX_TRUSTED_KEYS_FILE", default_value = crate::defaults::TRUSTED_KEYS_FILE)]
    pub trusted_keys_file: PathBuf,
    /// Accept objects without a signature by a trusted key (their content is still checked).
    #[arg(long)]
    pub no_check_sigs: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub objects: ObjectsArg,
    /// Export the objects' closures: everything they reference, transitively.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Write the archive to FILE (created; never overwritten) instead of standard output (`-`:
    /// standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print what was exported as JSON (needs --output FILE).
    #[arg(long, requires = "output")]
    pub json: bool,
    #[command(flatten)]
    pub quiet: QuietArg,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive (default, or `-`: standard input).
    #[arg(value_name = "FILE")]
    pub archive: Option<PathBuf>,
    #[command(flatten)]
    pub local: StoreTrust,
    /// Print what was imported as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub quiet: QuietArg,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct GenerateKeyArgs {
    /// The key's name, which signatures carry (e.g. builder-1.example.org-1): at most 935 bytes, without ':', white space, or control, bidirectional-text or other invisible characters.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Where to write the secret key (mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub secret_key: PathBuf,
    /// Where to write the public key (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
    /// Print the key's name and public key as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The secret key file (from `fruix store generate-key`).
    #[arg(long, value_name = "FILE")]
    pub secret_key: PathBuf,
    #[command(flatten)]
    pub objects: ObjectsArg,
    /// Sign the objects' closures: everything they reference, transitively (each object once),
    /// as `store export -r` and `store copy -r` send them.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Print the signatures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Objects to verify (default: every object in the store, and every pool
    /// entry; with PATHs, the pool entries those objects link).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Remove what is corrupt: objects, pool entries, and the result bundles
    /// that name a removed artifact object; unregister missing objects;
    /// first record the references the registry lacks between valid objects
    /// (UNRECORDED). Removes nothing for a reference to an object the
    /// registry lacks (DANGLING): it exits 4 then, saying what to do.
    /// Promote the affected result roots again afterwards to recreate them.
    #[arg(long)]
    pub repair: bool,
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub progress: ProgressArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print only problems.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The kinds of store object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Artifact,
    Bundle,
    Source,
}

impl From<KindArg> for fruix_promote::db::Kind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Artifact => fruix_promote::db::Kind::Artifact,
            KindArg::Bundle => fruix_promote::db::Kind::Bundle,
            KindArg::Source => fruix_promote::db::Kind::Source,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Only objects of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only this artifact (world, kernel, headers, bootloader...).
    #[arg(long, value_name = "NAME")]
    pub artifact: Option<String>,
    /// Only objects built by this executor.
    #[arg(long, value_name = "NAME")]
    pub executor: Option<String>,
    /// Only objects first registered by this run.
    #[arg(long, value_name = "RUN_ID")]
    pub run_id: Option<String>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub objects: ObjectsArg,
    /// Print a JSON array, one object per path.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[group(id = "question", required = true, multiple = false)]
pub struct QuestionArgs {
    /// The objects PATH references directly.
    #[arg(long)]
    pub references: bool,
    /// The objects that reference PATH directly.
    #[arg(long)]
    pub referrers: bool,
    /// PATH's closure: it and everything it references, transitively.
    #[arg(long)]
    pub requisites: bool,
    /// The roots that keep PATH alive.
    #[arg(long)]
    pub roots: bool,
}

/// Its `--state-dir` is read by `--roots` only, and its help says so. It
/// is taken with the other questions, and unused: scripts (the README's
/// example, fruix-bench-store) name the store and state directory alike
/// for every store command, as `FRUIX_STATE_DIR` does.
#[derive(Debug, Args)]
#[command(mut_arg("state_dir", for_roots_only))]
pub struct QueryArgs {
    #[command(flatten)]
    pub question: QuestionArgs,
    /// The object asked about.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub at: RootedStore,
    /// Print a JSON array of paths.
    #[arg(long)]
    pub json: bool,
}

/// `store query --state-dir`, whose help says it is for `--roots` only.
fn for_roots_only(flag: clap::Arg) -> clap::Arg {
    let help = flag.get_help().map(ToString::to_string).unwrap_or_default();
    flag.help(format!("{help} (with --roots only)"))
}

/// A store, and the state directory holding the roots that keep its
/// objects alive: what the commands that follow roots use.
#[derive(Debug, Args)]
pub struct RootedStore {
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Args)]
pub struct RootsArgs {
    #[command(flatten)]
    pub at: RootedStore,
    /// Print the roots as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddRootArgs {
    /// The object to keep alive (a store path, or a link to one).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The symlink to make to it, registered as an indirect root (as
    /// `--out-link` is); a symlink already there is replaced, anything
    /// else is refused, as is a link in the store. Removing it later drops
    /// the root.
    #[arg(value_name = "LINK")]
    pub link: PathBuf,
    #[command(flatten)]
    pub at: RootedStore,
    /// Print the root as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A size: digits, then nothing or `B` (bytes), or K, M, G or T (either
/// case; powers of 1024) alone or as `KB` or `KiB`. Nothing else: not a
/// megabit's `Mb`, nor white space.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let (prefix, suffix) = match unit.chars().next() {
        Some(c) if c != 'B' => unit.split_at(c.len_utf8()),
        _ => ("", unit),
    };
    let shift = match prefix.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(not_a_size(text)),
    };
    match (shift, suffix) {
        (_, "" | "B") | (10.., "iB") => {}
        _ => return Err(not_a_size(text)),
    }
    if digits.is_empty() {
        return Err(not_a_size(text));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            format!(
                "{} is more bytes than a size can be (16 EiB at the most)",
                fruix_core::escape::quoted(text)
            )
        })
}

fn not_a_size(text: &str) -> String {
    format!(
        "{} is not a size: give bytes (e.g. 1048576, or 1048576B), or a number with K, M, G or T (powers of 1024), alone or as KB or KiB (e.g. 500M, 10GiB)",
        fruix_core::escape::quoted(text)
    )
}

/// A duration such as `7d`, `12h` or `30min`; refused, its message gives
/// `examples` (those of its flag).
fn parse_duration(text: &str, examples: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!(
            "{} is not a duration (e.g. {examples}): {e}",
            fruix_core::escape::quoted(text)
        )
    })
}

/// A duration or a bare number of seconds; refused, its message gives
/// `examples`.
fn parse_seconds_or_duration(text: &str, examples: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_duration(text, examples),
    }
}

/// `--progress-every`: a duration or a bare number of seconds, as every
/// time limit ([`parse_limit`]); 0 is never.
pub fn parse_progress_every(text: &str) -> Result<Duration, String> {
    parse_seconds_or_duration(text, "10min, 90s; a bare number is seconds; 0: never")
}

/// `store gc --older-than`: an age, with its unit. A bare number is
/// refused: `7` could be days or seconds.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{} has no unit: days (7d) or seconds (7s)? Give one, e.g. 7d, 12h",
            fruix_core::escape::quoted(text)
        ));
    }
    parse_duration(text, "7d, 12h")
}

/// A time limit (`--timeout`, `--max-silent-time`, `--idle-timeout`): a
/// duration or a bare number of seconds, as a matrix file's `timeout` is,
/// longer than 0.
pub fn parse_limit(text: &str) -> Result<Duration, String> {
    let limit = parse_seconds_or_duration(text, "2h, 30min; a bare number is seconds")?;
    match limit {
        limit if limit.is_zero() => Err(format!(
            "{} is no time at all: a limit is longer than 0 (e.g. 2h, 30min)",
            fruix_core::escape::quoted(text)
        )),
        // Regression: past what a clock can add, the build panicked.
        limit if limit > fruix_core::executor::MAX_LIMIT => Err(format!(
            "{} is longer than a limit can be (100 years at the most)",
            fruix_core::escape::quoted(text)
        )),
        limit => Ok(limit),
    }
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub at: RootedStore,
    /// List what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop once about SIZE bytes of objects are freed: bytes, or with K, M, G or T (powers of
    /// 1024), alone or as KB or KiB (e.g. 500M, 10GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_freed: Option<u64>,
    /// Keep promoted result roots in STATE_DIR/native-builds.
    #[arg(long)]
    pub keep_result_roots: bool,
    /// Promoted result roots older than this are removed (e.g. 7d, 12h: a unit is needed); not
    /// with --keep-result-roots, which removes none.
    #[arg(long, value_name = "DURATION", value_parser = parse_age, default_value = "7d", conflicts_with = "keep_result_roots")]
    pub older_than: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print only the summary line.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub objects: ObjectsArg,
    #[command(flatten)]
    pub state: StateDirArg,
    /// Print the removed paths as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `parse` reads each text of `accepted` as its number of
    /// seconds, and refuses each of `refused`.
    fn check_parser(
        parse: fn(&str) -> Result<Duration, String>,
        accepted: &[(&str, u64)],
        refused: &[&str],
    ) {
        for (text, seconds) in accepted {
            assert_eq!(parse(text), Ok(Duration::from_secs(*seconds)), "{text:?}");
        }
        for text in refused {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    /// `--idle-timeout` took bare seconds only, and `build --timeout` none
    /// (unlike a matrix file's `timeout`): every limit takes a duration or
    /// a bare number of seconds, longer than 0.
    #[test]
    fn a_limit_is_a_duration_or_bare_seconds_longer_than_0() {
        check_parser(
            parse_limit,
            &[("90min", 5400), ("2h", 7200), ("600", 600), ("90s", 90)],
            &[
                "0",
                "0s",
                "-1",
                "soon",
                "",
                "18446744073709551615",
                "18446744073709551615s",
                "101years",
            ],
        );
    }

    #[test]
    fn progress_every_0_is_never() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            progress: crate::args::ProgressArg,
        }
        let every = |args: &[&str]| {
            let words = std::iter::once("fruix").chain(args.iter().copied());
            Cli::try_parse_from(words).map(|c| c.progress.every())
        };
        assert_eq!(every(&["--progress-every", "0"]).unwrap(), None);
        // Regression: a bare number was refused ("time unit needed").
        assert_eq!(
            every(&["--progress-every", "30"]).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            every(&["--progress-every=90s"]).unwrap(),
            Some(Duration::from_secs(90))
        );
        assert!(every(&["--progress-every", "often"]).is_err());
        // The default (as clap has it, whatever the environment says).
        let cli = <Cli as clap::CommandFactory>::command();
        let arg = cli.get_arguments().find(|a| a.get_id() == "progress_every");
        let default = arg.unwrap().get_default_values()[0].to_str().unwrap();
        assert_eq!(parse_progress_every(default), Ok(Duration::from_secs(300)));
    }

    /// `--older-than` keeps its unit: a bare number could be days or
    /// seconds, and is refused saying so.
    #[test]
    fn an_age_needs_a_unit() {
        check_parser(
            parse_age,
            &[("7d", 7 * 86400), ("12h", 12 * 3600), ("0s", 0)],
            &["7", "0", "", "soon"],
        );
        assert!(parse_age("7").unwrap_err().contains("no unit"));
    }

    /// Each flag's refusal gives examples of its own: not gc's `7d` for a
    /// limit or an interval.
    #[test]
    fn a_refused_duration_gives_its_flag_s_examples() {
        assert!(parse_age("x").unwrap_err().contains("e.g. 7d, 12h"));
        assert!(parse_limit("x").unwrap_err().contains("e.g. 2h, 30min"));
        assert!(parse_progress_every("x").unwrap_err().contains("0: never"));
        assert!(!parse_progress_every("x").unwrap_err().contains("7d"));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10K"), Ok(10 << 10));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("10KB"), Ok(10 << 10));
        assert_eq!(parse_size("2mib"), Err(not_a_size("2mib")));
        assert_eq!(parse_size("2miB"), Ok(2 << 20));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999T").is_err(), "overflow");
        assert!(parse_size("99999999999999999999").is_err(), "overflow");
    }

    /// Regression: every trailing B, b and i was trimmed, so that these
    /// were taken.
    #[test]
    fn a_size_with_any_other_suffix_is_refused() {
        for text in [
            "5ibi", "1bbb", "1KiiB", "1Mb", "1b", "1iB", "1i", "1Ki", "1kb", "1BB", "M", "B", "",
            " 1M", "1M ", "1 M", "1KiBB", "1X", "1é",
        ] {
            assert!(parse_size(text).is_err(), "{text:?}");
        }
    }
}
