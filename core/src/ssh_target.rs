//! Where an SSH connection goes: `user@host[:port]`, as the guest
//! executors take it and as a machines file describes a machine.

use std::fmt;

/// Where to connect: `user@host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The user to log in as. [`SshTarget::parse`] requires it non-empty,
    /// without `@`, `:`, space or `/`.
    pub user: String,
    /// Host name or address, an IPv6 address without its brackets.
    /// [`SshTarget::parse`] requires it non-empty, without `@`, space or `/`.
    pub host: String,
    /// TCP port; [`SshTarget::parse`] gives 22 when the text has none and
    /// refuses 0.
    pub port: u16,
}

impl SshTarget {
    /// Parses `user@host[:port]` (IPv6 addresses in brackets: `user@[::1]:22`).
    pub fn parse(text: &str) -> std::result::Result<SshTarget, String> {
        let bad = |why: &str| {
            format!(
                "{} is not user@host[:port]: {why}",
                crate::escape::quoted(text)
            )
        };
        let (user, rest) = text.split_once('@').ok_or_else(|| bad("no user@"))?;
        if user.is_empty() || user.contains(['@', ':', ' ', '/']) {
            return Err(bad("bad user name"));
        }
        let (host, port) = if let Some(rest) = rest.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (rest, None),
            }
        };
        if !is_host(host) {
            return Err(bad("the host is not a host name or IP address"));
        }
        let port = match port {
            None => 22,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("port is not 1 to 65535"))?,
        };
        Ok(SshTarget {
            user: user.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

/// Whether `text` is a host alone, as a machines file and the `ssh` command
/// line take it: an IP address (IPv4, or IPv6 without brackets), or a host
/// name of dot-separated RFC 1123 labels (1 to 63 ASCII letters, digits and
/// `-`, neither first nor last; 253 bytes in all) whose last label is not
/// all digits (that would be a mistyped IPv4 address). No user (`@`), port
/// (`:`), blank or leading `-` (which ssh would read as an option) passes.
pub fn is_host(text: &str) -> bool {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    text.len() <= 253
        && text.split('.').all(label)
        && !text
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_port() {
        let t = SshTarget::parse("root@127.0.0.1:2222").unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("root", "127.0.0.1", 2222)
        );
        assert_eq!(SshTarget::parse("fruix@builder").unwrap().port, 22);
        let v6 = SshTarget::parse("root@[::1]:2200").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2200));
        assert_eq!(v6.to_string(), "root@[::1]:2200");
        for bad in [
            "builder",
            "@host",
            "root@",
            "root@host:0",
            "root@host:x",
            "root@[::1",
            "root@-oProxyCommand=x",
            "root@under_score.example",
            "root@[h:22]",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
