//! Where an SSH connection goes: `user@host[:port]`, as the guest
//! executors take it and as a machines file describes a machine.

use std::fmt;

/// Where to connect: `user@host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The user to log in as. [`SshTarget::parse`] requires it non-empty,
    /// without `@`, `:`, space, `/` or a character [`unprintable`] names.
    pub user: String,
    /// Host name or address, an IPv6 address without its brackets.
    /// [`SshTarget::parse`] requires a host name or IP address ([`is_host`]),
    /// and names a character [`unprintable`] finds in it.
    pub host: String,
    /// TCP port; [`SshTarget::parse`] gives 22 when the text has none and
    /// refuses 0.
    pub port: u16,
}

impl SshTarget {
    /// Parses `user@host[:port]` (IPv6 addresses in brackets: `user@[::1]:22`),
    /// also written as a URL, `ssh://user@host[:port][/]`, as `store copy`
    /// takes it.
    pub fn parse(text: &str) -> std::result::Result<SshTarget, String> {
        let bad = |why: &str| {
            format!(
                "{} is not [ssh://]user@host[:port]: {why}",
                crate::escape::quoted(text)
            )
        };
        let target = match text.strip_prefix("ssh://") {
            Some(url) => url.strip_suffix('/').unwrap_or(url),
            None => text,
        };
        let (user, rest) = target.split_once('@').ok_or_else(|| bad("no user@"))?;
        if let Some(problem) = unprintable("user name", user) {
            return Err(bad(&problem));
        }
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
        if let Some(problem) = unprintable("host", host) {
            return Err(bad(&problem));
        }
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

/// What is wrong with `text`, the `what` of an SSH target, when it holds a
/// character fruix escapes when it prints it ([`crate::escape::is_unsafe`]:
/// a control character, a format character such as a bidi control): the
/// first such character, named escaped (`the user name holds \n, ...`).
/// ssh could not log in as such a user, and every message naming the
/// target would have to show it escaped.
pub fn unprintable(what: &str, text: &str) -> Option<String> {
    let c = text.chars().find(|&c| crate::escape::is_unsafe(c))?;
    Some(format!(
        "the {what} holds {}, a control or format character",
        crate::escape::text(c.encode_utf8(&mut [0; 4]))
    ))
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

/// `user@host:port` (`user@[host]:port` for an IPv6 address), the user
/// and host escaped ([`crate::escape::text`]): a target made without
/// [`SshTarget::parse`] (from a machines file, a VM's endpoint) is shown
/// safely too.
impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (user, host) = (
            crate::escape::text(&self.user),
            crate::escape::text(&self.host),
        );
        if self.host.contains(':') {
            write!(f, "{user}@[{host}]:{}", self.port)
        } else {
            write!(f, "{user}@{host}:{}", self.port)
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
        // Regression: `--guest ssh://root@h:22` was "bad user name", while
        // `store copy` takes only that form.
        for url in ["ssh://root@127.0.0.1:2222", "ssh://root@127.0.0.1:2222/"] {
            assert_eq!(SshTarget::parse(url), Ok(t.clone()), "{url}");
        }
        assert!(SshTarget::parse("ssh://ssh://root@h").is_err());
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

    /// Regression: a control character in the user (newline, tab, ESC,
    /// DEL) passed, and `cannot connect to a` + newline + `b@host:22` could
    /// forge an output line.
    #[test]
    fn unprintable_characters_are_refused_by_their_escaped_form() {
        for (text, says) in [
            (
                "a\nb@host",
                "the user name holds \\n, a control or format character",
            ),
            ("a\tb@host", "the user name holds \\t,"),
            ("a\u{1b}[2Jb@host", "the user name holds \\033,"),
            ("a\u{7f}@host", "the user name holds \\177,"),
            ("a\u{202e}b@host", "the user name holds \\342\\200\\256,"),
            ("a@ho\nst", "the host holds \\n,"),
            ("a@[::1\u{200b}]:22", "the host holds \\342\\200\\213,"),
        ] {
            let e = SshTarget::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains(['\n', '\u{1b}', '\u{202e}']), "{e:?}");
        }
    }

    #[test]
    fn a_target_shows_its_user_and_host_escaped() {
        let t = SshTarget {
            user: "a\nb\u{202e}".into(),
            host: "h".into(),
            port: 22,
        };
        assert_eq!(t.to_string(), "a\\nb\\342\\200\\256@h:22");
    }
}
