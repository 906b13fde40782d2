//! Where the store and the state directory are when neither a flag nor
//! `FRUIX_STORE` / `FRUIX_STATE_DIR` names them: `/frx/store` and
//! `/var/lib/fruix` for root, `$XDG_DATA_HOME/fruix/store` and
//! `$XDG_DATA_HOME/fruix/state` (`$XDG_DATA_HOME` defaulting to
//! `~/.local/share`, `~` being `$HOME`, else the user's home in the
//! password database) for everyone else, who could not write the former.
//! On a terminal, a command says once, first, which ones it uses.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use fruix_core::escape;

use crate::display::Mode;

/// The state directory of root.
const ROOT_STATE_DIR: &str = "/var/lib/fruix";

/// `$XDG_DATA_HOME/fruix` (an absolute `$XDG_DATA_HOME` only, as the XDG
/// spec says), else `$HOME/.local/share/fruix`; `None` without either.
fn data_home(xdg_data_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let xdg = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        home.map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|h| h.join(".local/share"))
    })?;
    Some(base.join("fruix"))
}

/// `root_default` for root (or when there is no home to go to), else
/// `DATA_HOME/fruix/name`.
fn default_dir(root_default: &str, name: &str) -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from(root_default);
    }
    let home = fruix_core::fsutil::home_dir().map(OsString::from);
    data_home(std::env::var_os("XDG_DATA_HOME"), home)
        .map_or_else(|| PathBuf::from(root_default), |d| d.join(name))
}

/// Where trusted public keys are read from unless `--trusted-keys-file` says.
pub const TRUSTED_KEYS_FILE: &str = "/etc/fruix/trusted-keys";

/// The default store.
pub fn store() -> PathBuf {
    default_dir(fruix_promote::store::DEFAULT_STORE, "store")
}

/// The default state directory.
pub fn state_dir() -> PathBuf {
    default_dir(ROOT_STATE_DIR, "state")
}

/// On a terminal (and not `--quiet`), says on stderr which store and state
/// directory the command uses: `fruix: store /frx/store, state /var/lib/fruix`.
pub fn announce(mode: Mode, store: Option<&Path>, state_dir: Option<&Path>) {
    if mode != Mode::Terminal {
        return;
    }
    let mut parts = Vec::new();
    if let Some(store) = store {
        parts.push(format!("store {}", escape::path(store)));
    }
    if let Some(state) = state_dir {
        parts.push(format!("state {}", escape::path(state)));
    }
    eprintln!("fruix: {}", parts.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_home_is_xdg_then_home_and_only_absolute() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            data_home(some("/x/data"), some("/home/u")),
            Some(PathBuf::from("/x/data/fruix"))
        );
        assert_eq!(
            data_home(None, some("/home/u")),
            Some(PathBuf::from("/home/u/.local/share/fruix"))
        );
        assert_eq!(
            data_home(some("relative"), some("/home/u")),
            Some(PathBuf::from("/home/u/.local/share/fruix")),
            "a relative XDG_DATA_HOME is ignored"
        );
        assert_eq!(data_home(None, some("")), None);
        assert_eq!(data_home(None, None), None);
    }
}
