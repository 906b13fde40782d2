//! Running the plan's commands: the real runner starts processes through
//! fruix-core's process runner; tests swap in a recording fake, so the jail
//! commands can be checked on machines without jails.

use std::fmt::Debug;

use async_trait::async_trait;
use fruix_core::process::{run_step, Finished, Step};
use fruix_core::Result;

use crate::plan::Invocation;

/// Runs one [`Invocation`] as `step` (output to the step's log and events,
/// stopped by its cancellation).
#[async_trait]
pub trait CommandRunner: Debug + Send + Sync {
    /// Runs `invocation` until it ends or `step` stops it, and reports how
    /// it ended: a non-zero exit is still `Ok`, for the caller to judge by
    /// [`Invocation::purpose`]. `Err` when it could not be run at all (the
    /// program could not be started, the log could not be written).
    async fn run(&self, invocation: &Invocation, step: &Step<'_>) -> Result<Finished>;
}

/// Starts real processes, each in its own process group.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

#[async_trait]
impl CommandRunner for SystemRunner {
    async fn run(&self, invocation: &Invocation, step: &Step<'_>) -> Result<Finished> {
        let mut command = tokio::process::Command::new(&invocation.argv[0]);
        command.args(&invocation.argv[1..]);
        for var in &invocation.env_remove {
            command.env_remove(var);
        }
        command.envs(invocation.env.iter().map(|(k, v)| (k, v)));
        run_step(command, step).await
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::sync::Mutex;

    use fruix_core::process::Ending;

    use super::*;

    /// Records every command line and answers with exit status 0, except
    /// for the stages listed in `failing` (exit status 1 after a line of
    /// output).
    #[derive(Debug, Default)]
    pub struct Recording {
        pub lines: Mutex<Vec<String>>,
        pub failing: Vec<String>,
    }

    impl Recording {
        pub fn failing(stages: &[&str]) -> Recording {
            Recording {
                lines: Mutex::default(),
                failing: stages.iter().map(|s| s.to_string()).collect(),
            }
        }

        pub fn lines(&self) -> Vec<String> {
            self.lines.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl CommandRunner for Recording {
        async fn run(&self, invocation: &Invocation, step: &Step<'_>) -> Result<Finished> {
            self.lines.lock().unwrap().push(invocation.line());
            let fails = self.failing.contains(&invocation.stage);
            let (code, tail) = if fails {
                let line = format!("{}: failed on purpose", invocation.stage);
                step.events.log(
                    step.stage,
                    fruix_core::executor::Stream::Stderr,
                    line.clone(),
                );
                (1, vec![line])
            } else {
                (0, Vec::new())
            };
            Ok(Finished {
                ending: Ending::Exited(ExitStatus::from_raw(code << 8)),
                tail,
            })
        }
    }
}
