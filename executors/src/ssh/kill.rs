//! Stopping a remote command's whole session in the guest: the kill loop
//! that cancellation runs on a second channel, and the lifeline that runs
//! the same loop when this host is gone (see [`super::remote`]'s contract).

use super::remote::under_sh;
use super::SshSession;

/// Seconds of `SIGTERM` before `SIGKILL` when a remote command is cancelled.
pub const TERM_SECONDS: u32 = 5;

/// Seconds after which the kill loop gives up.
pub const KILL_SECONDS: u32 = 12;

/// How long the channel of a kill loop may take to open before the guest
/// is taken to have stopped answering ([`SshSession::stopped_answering`]).
pub const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many times, in the second between two rounds of the kill loop, it
/// looks whether the session has a live member left: the next round (which
/// ends the loop when none is) comes as soon as it has none, so a cancel
/// ends a tenth of a second after the command does, not a second.
pub const LOOKS_PER_SECOND: u32 = 10;

/// The POSIX kill loop over session `sid` (see [`super::remote`]).
pub fn kill_session_script(sid: u32) -> String {
    format!("{}\n{}", session_of(sid), kill_loop())
}

/// What a lifeline says once it is no longer needed.
const RELEASE: &str = "done";

/// How long a released lifeline may take to end.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The lifeline of session `sid` (see [`super::remote`]): it waits on its
/// stdin, and stops the session with the kill loop unless the host said
/// [`RELEASE`] before its end.
fn lifeline_script(sid: u32) -> String {
    format!(
        "{}\nIFS= read -r said && [ \"$said\" = {RELEASE} ] && exit 0\n{}",
        session_of(sid),
        kill_loop()
    )
}

/// Sets `s` to session id `sid` and `born` to its leader's start time,
/// as it is now: what [`kill_loop`] checks the session by.
fn session_of(sid: u32) -> String {
    format!("s={sid}\nborn=$(ps -o lstart= -p \"$s\" 2>/dev/null)")
}

/// The kill loop over session `$s` whose leader started at `$born`: each
/// member gets SIGTERM once (a fruix there cancels its build at the first,
/// and would give up its cleanup at a second), SIGKILL after
/// [`TERM_SECONDS`]. Between two rounds, a second apart (a little more:
/// looking takes time too), it looks whether a live member is left
/// [`LOOKS_PER_SECOND`] times (not at all where `sleep` takes no fraction
/// of a second: POSIX's takes whole seconds).
fn kill_loop() -> String {
    let look = 1.0 / f64::from(LOOKS_PER_SECOND);
    format!(
        r#"n=0; sent=
while :; do
  now=$(ps -o lstart= -p "$s" 2>/dev/null)
  [ -z "$now" ] || [ "$now" = "$born" ] || exit 0
  pids=$(ps -A -o pid= -o sid= -o stat= | awk -v s="$s" '$2 == s && $3 !~ /^Z/ {{ print $1 }}')
  [ -n "$pids" ] || exit 0
  if [ "$n" -lt {TERM_SECONDS} ]; then
    new=
    for p in $pids; do case " $sent " in *" $p "*) ;; *) new="$new $p" ;; esac; done
    [ -z "$new" ] || kill -s TERM $new 2>/dev/null
    sent="$sent$new"
  else
    kill -s KILL $pids 2>/dev/null
  fi
  n=$((n + 1))
  [ "$n" -le {KILL_SECONDS} ] || exit 1
  t=0
  while [ "$t" -lt {LOOKS_PER_SECOND} ]; do
    sleep {look} 2>/dev/null || {{ sleep 1; break; }}
    ps -A -o sid= -o stat= | awk -v s="$s" '$1 == s && $2 !~ /^Z/ {{ left = 1 }} END {{ exit !left }}' || break
    t=$((t + 1))
  done
done"#
    )
}

/// A remote command's lifeline: a session of its own in the guest that
/// stops the command's session when this host is gone (see
/// [`super::remote`]), until [`Arming::release`].
pub(super) struct Lifeline(russh::Channel<russh::client::Msg>);

/// A command's [`Lifeline`] as its gate ([`super::gate`]) gets it: opened
/// once the command's session id is known, while the command's output is
/// read (a channel left unread can stall the connection, and the opening
/// with it).
pub(super) enum Arming<'a> {
    /// The session id is not known yet.
    Waiting,
    /// Being opened.
    Opening(std::pin::Pin<Box<dyn std::future::Future<Output = Option<Lifeline>> + Send + 'a>>),
    /// Opened; `None` when it could not be.
    Opened(Option<Lifeline>),
}

impl Arming<'_> {
    /// The lifeline, once opened; never, unless it is being opened.
    pub(super) async fn opened(&mut self) -> Option<Lifeline> {
        match self {
            Arming::Opening(opening) => opening.await,
            _ => std::future::pending().await,
        }
    }

    /// The command ended, or was stopped from here: its lifeline exits
    /// without stopping anything, and is waited for (one being opened
    /// too), at most [`RELEASE_WAIT`]: the next command starts once it is
    /// gone. None is left running, and the guest's sshd never sees the next
    /// command's channel opened while the lifeline's is closing (dropbear,
    /// under load, then closed the new channel at once, its command never
    /// run: a lost connection to the host). The command's channel must be
    /// closed, or read meanwhile: one left full stalls the connection, and
    /// the opening with it.
    pub(super) async fn release(mut self) {
        let released = async {
            if matches!(self, Arming::Opening(_)) {
                self = Arming::Opened(self.opened().await);
            }
            if let Arming::Opened(Some(Lifeline(mut channel))) = self {
                let _ = channel.data(format!("{RELEASE}\n").as_bytes()).await;
                let _ = channel.eof().await;
                while channel.wait().await.is_some() {}
            }
        };
        let _ = tokio::time::timeout(RELEASE_WAIT, released).await;
    }
}

impl SshSession {
    /// The lifeline of remote session `sid` (see [`super::remote`]); `None`
    /// when it cannot be started (sshd's `MaxSessions` reached): the
    /// command then runs without one.
    pub(super) async fn lifeline(&self, sid: u32) -> Option<Lifeline> {
        let channel = self.exec(under_sh(&lifeline_script(sid))).await.ok()?;
        Some(Lifeline(channel))
    }

    /// Stops every process of remote session `sid`; waits for the kill
    /// loop. A loop whose channel does not open within [`ANSWER_WAIT`] is
    /// given up, and the guest taken to have stopped answering.
    pub async fn kill_session(&self, sid: u32) {
        let script = kill_session_script(sid);
        let Ok(opened) = tokio::time::timeout(ANSWER_WAIT, self.exec(under_sh(&script))).await
        else {
            self.no_answer();
            return;
        };
        let Ok(mut channel) = opened else {
            return;
        };
        let limit = std::time::Duration::from_secs(u64::from(KILL_SECONDS) + 2);
        let _ =
            tokio::time::timeout(limit, async { while channel.wait().await.is_some() {} }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    /// Process 4242's start time, as a faked `ps` shows it.
    const STARTED: &str = "Tue Dec  1 10:00:00 2026";

    /// Runs `script` (over session 4242) under `sh`, fed `stdin`, with `ps`
    /// and `sleep` faked in `dir`: round `r` (one per `ps -A`) shows
    /// `lstart[r]` as process 4242's start time (`None`: no such process)
    /// and the processes `members[r]` as the session's members. Fails
    /// unless the script exits 0.
    fn run_faked(
        dir: &Path,
        script: &str,
        stdin: &str,
        lstart: &[Option<&str>],
        members: &[Vec<u32>],
    ) {
        use std::os::unix::fs::PermissionsExt;
        for (r, start) in lstart.iter().enumerate() {
            if let Some(start) = start {
                let file = dir.join(format!("lstart.{r}"));
                std::fs::write(file, format!("{start}\n")).unwrap();
            }
        }
        for (r, round) in members.iter().enumerate() {
            let lines: String = round.iter().map(|p| format!("{p} 4242 S\n")).collect();
            std::fs::write(dir.join(format!("members.{r}")), lines).unwrap();
        }
        let fake = |name: &str, body: &str| {
            let path = dir.join(name);
            let text = format!("#!/bin/sh\nd='{}'\n{body}", dir.display());
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // A round's `ps -A` goes on to the next round; a look between two
        // rounds sees what the next round will.
        fake(
            "ps",
            r#"r=$(cat "$d/round" 2>/dev/null || echo 0)
case "$*" in
  "-A -o pid= -o sid= -o stat=") echo $((r + 1)) > "$d/round"; cat "$d/members.$r" 2>/dev/null ;;
  "-A -o sid= -o stat=") cut -d ' ' -f 2- "$d/members.$r" 2>/dev/null ;;
  *) cat "$d/lstart.$r" 2>/dev/null || exit 1 ;;
esac
"#,
        );
        fake("sleep", "exit 0\n");
        let path = format!("{}:/usr/bin:/bin", dir.display());
        let out = crate::ssh::sh_fed(script, Some(path), stdin);
        assert!(out.status.success(), "{out:?}");
    }

    /// Runs the kill loop over session 4242 ([`run_faked`]), `members[r]`
    /// being indexes of `count` real `sleep` processes of the test's own.
    /// Returns, for each process, whether the loop sent it SIGTERM.
    ///
    /// Each process is then sent SIGKILL and reaped: it died of SIGTERM
    /// exactly when the loop had signalled it (Linux settles a fatal
    /// signal's exit code when the signal is sent), so no timing matters.
    fn kill_loop_over(lstart: &[Option<&str>], members: &[&[usize]], count: usize) -> Vec<bool> {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let mut children: Vec<std::process::Child> = (0..count)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("600")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let members: Vec<Vec<u32>> = members
            .iter()
            .map(|round| round.iter().map(|&i| children[i].id()).collect())
            .collect();
        run_faked(dir.path(), &kill_session_script(4242), "", lstart, &members);
        children
            .iter_mut()
            .map(|c| {
                let _ = c.kill();
                let signal = c.wait().unwrap().signal();
                assert!(matches!(signal, Some(9 | 15)), "{signal:?}");
                signal == Some(15)
            })
            .collect()
    }

    /// The `kill` commands `script` runs ([`run_faked`] with `stdin`, for
    /// the rounds `members`, process 4242 keeping its start time), each as
    /// its arguments (`-s TERM 101`): `kill` is made a shell function that
    /// records them, so nothing is signalled.
    fn kills_by(script: &str, stdin: &str, members: &[Vec<u32>]) -> Vec<String> {
        looked_by(script, stdin, members, "return 0").0
    }

    /// [`kills_by`], with `sleep` a shell function that records its
    /// argument, then runs `sleep` (sh). Returns the kills and the
    /// arguments `sleep` got.
    fn looked_by(
        script: &str,
        stdin: &str,
        members: &[Vec<u32>],
        sleep: &str,
    ) -> (Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let (kills, sleeps) = (dir.path().join("kills"), dir.path().join("sleeps"));
        let script = format!(
            "kill() {{ echo \"$*\" >> '{}'; }}\nsleep() {{ echo \"$1\" >> '{}'; {sleep}; }}\n{script}",
            kills.display(),
            sleeps.display()
        );
        let lstart = vec![Some(STARTED); members.len() + 1];
        run_faked(dir.path(), &script, stdin, &lstart, members);
        let lines = |path: &Path| -> Vec<String> {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines().map(String::from).collect()
        };
        (lines(&kills), lines(&sleeps))
    }

    /// Regression: the kill loop looked whether the session was gone a
    /// second after signalling it, so a cancelled command (the import's
    /// `tar`, gone at SIGTERM) took a second to stop. It looks a tenth of
    /// a second apart, and goes on to its next round as soon as no live
    /// member is left; where `sleep` takes whole seconds only, a second
    /// apart, as before.
    #[test]
    fn the_kill_loop_looks_again_a_tenth_of_a_second_after_signalling() {
        let script = kill_session_script(4242);
        let gone_at_once = [vec![101], vec![]];
        let (kills, sleeps) = looked_by(&script, "", &gone_at_once, "return 0");
        assert_eq!(kills, ["-s TERM 101"]);
        assert_eq!(sleeps, ["0.1"]);
        // Still there for a round: looked at all second long.
        let gone_later = [vec![101], vec![101], vec![]];
        let (_, sleeps) = looked_by(&script, "", &gone_later, "return 0");
        assert_eq!(sleeps, vec!["0.1"; LOOKS_PER_SECOND as usize + 1]);
        let whole = r#"case "$1" in *.*) return 1 ;; esac"#;
        let (_, sleeps) = looked_by(&script, "", &gone_later, whole);
        assert_eq!(sleeps, ["0.1", "1", "0.1", "1"]);
    }

    /// Regression: the kill loop sent SIGTERM to every member each second,
    /// and a guest helper it stopped gave up its cleanup (removing its
    /// cancelled result root) at the second one. Each member gets SIGTERM
    /// once, a member that came later too, then SIGKILL.
    #[test]
    fn the_kill_loop_sends_each_member_sigterm_once_then_sigkill() {
        let term = TERM_SECONDS as usize;
        let mut members = vec![vec![101], vec![101]];
        members.resize(term + 2, vec![101, 102]);
        members.push(vec![]);
        assert_eq!(
            kills_by(&kill_session_script(4242), "", &members),
            [
                "-s TERM 101",
                "-s TERM 102",
                "-s KILL 101 102",
                "-s KILL 101 102"
            ]
        );
    }

    /// A lifeline stops its command's session when its stdin ends before
    /// the host said `done` (the host is gone, perhaps mid-line), and
    /// stops nothing once the host said it.
    #[test]
    fn a_lifeline_stops_the_session_unless_released() {
        let members = [vec![101], vec![]];
        for gone in ["", "do", "done"] {
            let kills = kills_by(&lifeline_script(4242), gone, &members);
            assert_eq!(kills, ["-s TERM 101"], "{gone:?}");
        }
        let kills = kills_by(&lifeline_script(4242), "done\n", &members);
        assert_eq!(kills, Vec::<String>::new());
    }

    #[test]
    fn kill_loop_stops_members_but_never_a_new_session_that_took_the_id() {
        let started = Some(STARTED);
        let reused = Some("Tue Dec  1 10:00:07 2026");
        // Round 2: process 4242 has another start time, a new session's
        // leader; the member listed then (process 1) is a stranger.
        let signalled = kill_loop_over(&[started, started, reused], &[&[0], &[0], &[1]], 2);
        assert_eq!(signalled, [true, false]);
        // The leader gone: the members left are still the command's.
        let signalled = kill_loop_over(&[started, None, None], &[&[0], &[1]], 2);
        assert_eq!(signalled, [true, true]);
        // Gone when the loop began, there later: a new session's leader.
        let signalled = kill_loop_over(&[None, reused], &[&[0], &[1]], 2);
        assert_eq!(signalled, [true, false]);
    }

    #[test]
    fn kill_loop_is_valid_sh_and_ends_for_a_gone_session() {
        let out = std::process::Command::new("sh")
            .args(["-c", &kill_session_script(999_999_999)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}
