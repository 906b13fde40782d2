//! A pinned SSH host key as known_hosts writes it (`ssh-ed25519 AAAA...`):
//! the one parser every pinned key is read with when its file or
//! configuration is read (a machine's `host-key`, a `(vm ...)` record's
//! `host-key` and `master-host-key`), so a key that is no key is refused
//! there, naming its field, not when a connection is made.

use crate::escape;

/// Why `text` is no OpenSSH public key (`TYPE BASE64 [COMMENT]`, as in
/// known_hosts) of a type fruix connects with (ed25519, ecdsa, rsa):
/// `None` when it is one. Its encoding is checked (base64, the type named
/// inside it, that type's fields, nothing after them), as the SSH
/// connection will read it; whether the server holds it is the
/// connection's to find.
pub fn problem(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    let (Some(kind), Some(base64)) = (words.next(), words.next()) else {
        return Some("not TYPE BASE64: a key type, then the key".into());
    };
    match ssh_key::PublicKey::from_openssh(&format!("{kind} {base64}")) {
        Err(e) => Some(e.to_string()),
        Ok(key) => match key.key_data() {
            ssh_key::public::KeyData::Ed25519(_)
            | ssh_key::public::KeyData::Ecdsa(_)
            | ssh_key::public::KeyData::Rsa(_) => None,
            _ => Some(format!(
                "{kind} is not a key type fruix connects with (ssh-ed25519, ecdsa-sha2-nistp256, -nistp384, -nistp521, ssh-rsa)"
            )),
        },
    }
}

/// The refusal of `text` as the pinned key of `field` (`host-key`,
/// `master-host-key`), saying what is wrong and how to write one; `None`
/// when [`problem`] finds nothing wrong. `text` is escaped.
pub fn refusal(field: &str, text: &str) -> Option<String> {
    problem(text).map(|why| {
        format!(
            "pinned {field} {} is not a public key ({}); give it as in known_hosts: \"ssh-ed25519 AAAA...\"",
            escape::quoted(text),
            escape::text(&why)
        )
    })
}
