//! Caps on a guest's import: every size and count a guest controls is bounded,
//! each by a configuration key of the guest executors.
//!
//! | configuration key | default | what it bounds |
//! | --- | --- | --- |
//! | `import_max_bytes` | 64 GiB | bytes of the tar stream (contents and headers) |
//! | `import_max_entries` | 10,000,000 | archive entries read (re-declarations and extended headers included), plus directories created for entries whose parents the archive did not declare |
//! | `import_max_path_bytes` | 4095 (`PATH_MAX` less its NUL) | bytes of one entry's path |
//! | `import_max_name_bytes` | 255 (`NAME_MAX`) | bytes of one component of a path |
//! | `import_max_link_bytes` | 4095 (`PATH_MAX` less its NUL) | bytes of a symlink's target or a hard link's name |
//! | `import_max_header_bytes` | 1 MiB | bytes of one extended header (pax `x`, GNU long name, GNU long link) |
//!
//! A FreeBSD base result root (world about 1 GB, about 30,000 entries) is far
//! below every default. Going over a cap is [`Error::LimitExceeded`], naming
//! the key and its value.

use fruix_core::Error;

/// One cap of [`ImportLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `import_max_bytes`: bytes of the whole tar stream, headers included.
    Bytes,
    /// `import_max_entries`: archive entries read, plus the directories
    /// created for entries whose parents the archive did not declare.
    Entries,
    /// `import_max_path_bytes`: bytes of one entry's path.
    PathBytes,
    /// `import_max_name_bytes`: bytes of one component of an entry's path.
    NameBytes,
    /// `import_max_link_bytes`: bytes of a symlink's target or a hard link's
    /// name.
    LinkBytes,
    /// `import_max_header_bytes`: bytes of one extended header (pax `x`, GNU
    /// long name or long link).
    HeaderBytes,
}

impl Cap {
    /// Every cap, in the order of the module docs.
    pub const ALL: [Cap; 6] = [
        Cap::Bytes,
        Cap::Entries,
        Cap::PathBytes,
        Cap::NameBytes,
        Cap::LinkBytes,
        Cap::HeaderBytes,
    ];

    /// The configuration key that sets this cap.
    pub fn key(self) -> &'static str {
        match self {
            Cap::Bytes => "import_max_bytes",
            Cap::Entries => "import_max_entries",
            Cap::PathBytes => "import_max_path_bytes",
            Cap::NameBytes => "import_max_name_bytes",
            Cap::LinkBytes => "import_max_link_bytes",
            Cap::HeaderBytes => "import_max_header_bytes",
        }
    }
}

/// The caps of one import (see the module docs for each one's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Most bytes of the tar stream, headers included ([`Cap::Bytes`];
    /// default 64 GiB).
    pub max_bytes: u64,
    /// Most entries, created parent directories included ([`Cap::Entries`];
    /// default 10,000,000).
    pub max_entries: u64,
    /// Most bytes of one entry's path ([`Cap::PathBytes`]; default 4095).
    pub max_path_bytes: u64,
    /// Most bytes of one path component ([`Cap::NameBytes`]; default 255).
    pub max_name_bytes: u64,
    /// Most bytes of a symlink's target or a hard link's name
    /// ([`Cap::LinkBytes`]; default 4095).
    pub max_link_bytes: u64,
    /// Most bytes of one extended header ([`Cap::HeaderBytes`]; default
    /// 1 MiB).
    pub max_header_bytes: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_bytes: 64 << 30,
            max_entries: 10_000_000,
            max_path_bytes: 4095,
            max_name_bytes: 255,
            max_link_bytes: 4095,
            max_header_bytes: 1 << 20,
        }
    }
}

impl ImportLimits {
    /// The value of `cap`.
    pub fn get(&self, cap: Cap) -> u64 {
        match cap {
            Cap::Bytes => self.max_bytes,
            Cap::Entries => self.max_entries,
            Cap::PathBytes => self.max_path_bytes,
            Cap::NameBytes => self.max_name_bytes,
            Cap::LinkBytes => self.max_link_bytes,
            Cap::HeaderBytes => self.max_header_bytes,
        }
    }

    /// Sets `cap` to `value`.
    pub fn set(&mut self, cap: Cap, value: u64) {
        *match cap {
            Cap::Bytes => &mut self.max_bytes,
            Cap::Entries => &mut self.max_entries,
            Cap::PathBytes => &mut self.max_path_bytes,
            Cap::NameBytes => &mut self.max_name_bytes,
            Cap::LinkBytes => &mut self.max_link_bytes,
            Cap::HeaderBytes => &mut self.max_header_bytes,
        } = value;
    }

    /// Refuses `value` for `cap` when it is over; `detail` says what was
    /// measured.
    pub(crate) fn check(
        &self,
        cap: Cap,
        value: u64,
        detail: impl FnOnce() -> String,
    ) -> fruix_core::Result<()> {
        if value <= self.get(cap) {
            return Ok(());
        }
        Err(self.exceeded(cap, detail()))
    }

    /// The error for going over `cap`.
    pub(crate) fn exceeded(&self, cap: Cap, detail: String) -> Error {
        Error::LimitExceeded {
            input: "the guest's archive of its result root".into(),
            detail,
            key: cap.key(),
            limit: self.get(cap),
        }
    }
}

/// The first bytes of untrusted `bytes`, quoted and escaped, for a message
/// about something too long: never the whole of it.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]).into_owned();
    if bytes.len() > SHOWN {
        format!("{shown:?}...")
    } else {
        format!("{shown:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cap_has_its_own_key_and_round_trips() {
        let mut limits = ImportLimits::default();
        for (i, cap) in Cap::ALL.into_iter().enumerate() {
            limits.set(cap, i as u64 + 1);
            assert_eq!(limits.get(cap), i as u64 + 1);
            assert!(cap.key().starts_with("import_max_"));
        }
        let keys: std::collections::BTreeSet<_> = Cap::ALL.map(Cap::key).into();
        assert_eq!(keys.len(), Cap::ALL.len());
    }

    #[test]
    fn going_over_a_cap_is_typed_and_names_key_and_value() {
        let limits = ImportLimits::default();
        limits
            .check(Cap::NameBytes, 255, || unreachable!())
            .unwrap();
        let e = limits
            .check(Cap::NameBytes, 256, || "a component of 256 bytes".into())
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::LimitExceeded {
                    key: "import_max_name_bytes",
                    limit: 255,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.failure(), fruix_core::Failure::Input);
        let text = e.to_string();
        assert!(
            text.contains("a component of 256 bytes, over the cap import_max_name_bytes = 255"),
            "{text}"
        );
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt(b"a\nb"), "\"a\\nb\"");
        let long = excerpt(&[b'x'; 5000]);
        assert!(long.len() < 80 && long.ends_with("..."), "{long}");
    }
}
