//! This machine's host name, as executors record it in `promotion.scm`.
//!
//! Choosing probes, signing artifact trees and writing `promotion.scm` for a
//! FreeBSD base build is the FreeBSD build contract's job: see
//! `fruix_freebsd::promotion`.

use crate::error::{Error, Result};

/// This machine's host name.
pub fn host_name() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(Error::system(format!(
            "cannot read this machine's host name: {}",
            std::io::Error::last_os_error()
        )));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_not_empty() {
        assert!(!host_name().unwrap().is_empty());
    }
}
