//! What a review of fruix run by a user other than root found: a user
//! without `HOME` (`env -i`, cron, a systemd unit) got root's defaults,
//! a registry in a `.fruix` the user may not enter was said to be missing,
//! and a build whose state directory the user may not write made a store
//! and a source object before it failed.

use std::path::PathBuf;

use crate::util::{
    as_nobody, dir_for_root_and_others, fixture_source, promote_quietly, run, sample_root,
    stderr_of_exit, NOBODY,
};

/// The home directory the password database gives [`NOBODY`].
fn nobody_home() -> PathBuf {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() == 7 && fields[2] == NOBODY.to_string())
        .unwrap_or_else(|| panic!("no user {NOBODY} in /etc/passwd"));
    PathBuf::from(entry[5])
}

/// Regression: without `HOME`, a user other than root got root's store,
/// `/frx/store` ("no store at /frx/store", or a write refused there).
/// `~` is then the user's home in the password database, as it is for
/// OpenSSH.
#[test]
fn a_user_without_home_gets_the_home_of_the_password_database() {
    let dir = dir_for_root_and_others("runs fruix as nobody");
    let expected = nobody_home().join(".local/share/fruix/store");
    let out = run(as_nobody(dir.path()).args(["store", "list"]));
    let stderr = stderr_of_exit(&out, 2);
    assert!(
        stderr.contains(&format!("no store at {}", expected.display())),
        "{stderr}"
    );
    // An empty HOME, or (regression: it gave root's store) a relative
    // one, is as good as none.
    for home in ["", "relative/home"] {
        let out = run(as_nobody(dir.path())
            .args(["store", "list"])
            .env("HOME", home));
        let stderr = stderr_of_exit(&out, 2);
        assert!(
            stderr.contains(&format!("no store at {}", expected.display())),
            "HOME={home:?} is unset: {stderr}"
        );
    }
}

/// Regression: a store whose `.fruix` the user may not enter was said to
/// have no registry yet ("the store was written before fruix kept one");
/// the system's refusal is said instead.
#[test]
fn a_registry_the_user_may_not_reach_is_said_as_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_for_root_and_others("makes a store nobody may only partly read");
    let store = dir.path().join("store");
    promote_quietly(&store, &sample_root(dir.path(), "root"));
    let meta = store.join(".fruix");
    std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = run(as_nobody(dir.path())
        .args(["store", "list", "--store"])
        .arg(&store));
    let stderr = stderr_of_exit(&out, 3);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!stderr.contains("there is none yet"), "{stderr}");
}

/// Regression: `build` as a user who may not write its state directory
/// added the source to a store it made, then failed ("failed to create
/// state directory"), leaving that store. The state directory is checked
/// before anything is made.
#[test]
fn a_build_whose_state_directory_is_not_writable_makes_no_store() {
    let dir = dir_for_root_and_others("runs fruix as nobody with root's state directory");
    let state = dir.path().join("root-state");
    std::fs::create_dir(&state).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let store = home.join("store");
    let mut cmd = as_nobody(dir.path());
    cmd.args(["build", "--executor", "local", "--no-out-link", "--source"])
        .arg(fixture_source())
        .arg("--store")
        .arg(&store)
        .arg("--state-dir")
        .arg(&state);
    let stderr = stderr_of_exit(&run(&mut cmd), 3);
    let says = format!(
        "failed to create state directory {}",
        state.join("native-builds").display()
    );
    assert!(stderr.contains(&says), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!store.exists(), "a store was left: {stderr}");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "{stderr}");
}
