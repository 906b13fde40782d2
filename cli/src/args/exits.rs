//! The line each command's `--help` (and man page) ends with: the exit
//! statuses the command can end with, from the one table
//! (`fruix_core::ExitStatus`); `fruix --help` lists them all with what each
//! means.

use fruix_core::ExitStatus;
use ExitStatus::{
    BuildFailure, Cancelled, Divergence, MatrixFailure, PromotionFailure, Success, SystemFailure,
    Usage,
};

/// `build`: a build, then a promotion.
const BUILD: &[ExitStatus] = &[
    Success,
    BuildFailure,
    Usage,
    SystemFailure,
    PromotionFailure,
    Cancelled,
];
/// The store commands that check what they take in.
const CHECKING: &[ExitStatus] = &[Success, Usage, SystemFailure, PromotionFailure, Cancelled];
/// `matrix run` and `matrix collect` (the README's "Exit statuses of
/// `fruix matrix run`").
const MATRIX: &[ExitStatus] = &[
    Success,
    Usage,
    SystemFailure,
    MatrixFailure,
    Divergence,
    Cancelled,
];
/// `matrix run-cell`: its cell's status (a result refused when validated or
/// promoted is a build failure there).
const CELL: &[ExitStatus] = &[Success, BuildFailure, Usage, SystemFailure, Cancelled];

/// The statuses of the command at `path` (`["store", "verify"]`), and what
/// its [`PromotionFailure`] means there; `None` for the commands whose help
/// points at `fruix --help` alone.
fn statuses(path: &[&str]) -> Option<(&'static [ExitStatus], &'static str)> {
    Some(match path {
        ["build"] => (BUILD, "the result refused when promoted"),
        ["native-build", "promote"] => (CHECKING, "the result root refused"),
        ["store", "verify"] => (CHECKING, "corruption found"),
        ["store", "import"] | ["store", "copy"] => (CHECKING, "an archive refused"),
        ["matrix", "run"] | ["matrix", "collect"] => (MATRIX, ""),
        ["matrix", "run-cell"] => (CELL, ""),
        _ => return None,
    })
}

/// The exit-status line of the command at `path`.
pub fn line(path: &[&str]) -> String {
    let Some((list, promotion_failure)) = statuses(path) else {
        return "Exit statuses: see `fruix --help`.".to_string();
    };
    let each: Vec<String> = list
        .iter()
        .map(|&status| match status {
            PromotionFailure => {
                format!("{} {} ({promotion_failure})", status.code(), status.name())
            }
            _ => format!("{} {}", status.code(), status.name()),
        })
        .collect();
    format!(
        "Exit statuses: {}; `fruix --help` says what each means.",
        each.join(", ")
    )
}

/// `command` (a subcommand of `fruix`) and its subcommands, each with its
/// [`line`] after its help.
pub fn annotate(command: clap::Command) -> clap::Command {
    annotate_at(command, &[])
}

fn annotate_at(command: clap::Command, parents: &[String]) -> clap::Command {
    let mut path = parents.to_vec();
    path.push(command.get_name().to_string());
    let words: Vec<&str> = path.iter().map(String::as_str).collect();
    let after = line(&words);
    command
        .after_help(after)
        .mut_subcommands(|sub| annotate_at(sub, &path))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command the table names is one of fruix's.
    #[test]
    fn the_commands_named_are_fruix_commands() {
        let cli = crate::args::Cli::command();
        for path in [
            &["build"][..],
            &["native-build", "promote"],
            &["store", "verify"],
            &["store", "import"],
            &["store", "copy"],
            &["matrix", "run"],
            &["matrix", "collect"],
            &["matrix", "run-cell"],
        ] {
            assert!(statuses(path).is_some(), "{path:?}");
            let found = path
                .iter()
                .try_fold(&cli, |c, name| c.find_subcommand(name));
            assert!(found.is_some(), "{path:?} is no fruix command");
        }
    }

    #[test]
    fn verify_says_4_is_corruption() {
        assert_eq!(
            line(&["store", "verify"]),
            "Exit statuses: 0 success, 2 usage, 3 system-failure, 4 promotion-failure (corruption found), 130 cancelled; `fruix --help` says what each means."
        );
    }
}
