//! Finding the processes a run left behind: those whose command line or
//! environment mentions a path (the run's result root, work directory).

use std::path::Path;

/// Processes (other than this one) whose command line or environment
/// mentions `path`. Environments are read from `/proc` where there is one;
/// elsewhere only command lines are seen, through ps(1).
pub fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return processes_mentioning_by_ps(&needle);
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if zombie {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) || String::from_utf8_lossy(&environ).contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn processes_mentioning_by_ps(needle: &str) -> Vec<String> {
    let out = std::process::Command::new("ps")
        .args(["-A", "-o", "pid=", "-o", "stat=", "-o", "args="])
        .output()
        .expect("ps(1) is needed to look for processes left running");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|s| !s.starts_with('Z'))
        })
        .map(str::to_string)
        .collect()
}
