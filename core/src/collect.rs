//! This machine's host name, as executors record it in `promotion.scm`.
//!
//! Choosing probes, signing artifact trees and writing `promotion.scm` for a
//! FreeBSD base build is the FreeBSD build contract's job: see
//! `fruix_freebsd::promotion`.

use crate::error::{Error, Result};

/// This machine's host name.
pub fn host_name() -> Result<String> {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        return Err(Error::system(
            "this machine has no host name (uname says none); set one",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_not_empty() {
        assert!(!host_name().unwrap().is_empty());
    }
}
