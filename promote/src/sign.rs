//! Who built an object: ed25519 signatures over an object's fingerprint,
//! in Nix's forms. A secret key file holds `name:BASE64` of the 64-byte
//! key pair, a public key `name:BASE64` of the 32-byte key, and a signature
//! is `name:BASE64` of the 64-byte signature of the fingerprint
//! `1;STORE_PATH;TREE_SIGNATURE;SIZE;REF,REF,...` (references sorted, full
//! store paths). Signatures live in the store's registry.

use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use fruix_core::error::IoContext;

use crate::error::{Error, Result};
use crate::store::Store;

/// A `name:BASE64` text's parts, or why not.
fn parts<'a>(what: &str, text: &'a str) -> std::result::Result<(&'a str, Vec<u8>), String> {
    let (name, data) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{what} is not NAME:BASE64"))?;
    if name.is_empty() {
        return Err(format!("{what} has no name (NAME:BASE64)"));
    }
    if !is_key_name(name) {
        return Err(format!(
            "{what}'s name {} holds white space or a control character",
            fruix_core::escape::quoted(name)
        ));
    }
    let bytes = BASE64
        .decode(data.as_bytes())
        .map_err(|e| format!("{what} is not base64: {e}"))?;
    Ok((name, bytes))
}

/// Whether `name` can name a key: not empty, with no `:` and no white
/// space (the `NAME` of `NAME:BASE64` texts would not read back otherwise),
/// and no control character (C0, DEL, C1) or bidirectional-text control
/// (U+202A–U+202E, U+2066–U+2069): every signature carries the name, and
/// what prints a signature must not print those to a terminal.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(|c: char| {
            c == ':'
                || c.is_whitespace()
                || c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
}

fn invalid_key(path: &Path, message: String) -> Error {
    fruix_core::Error::InvalidMetadata {
        path: path.to_path_buf(),
        field: "key".into(),
        line: None,
        message,
    }
    .into()
}

/// A secret key with its name.
#[derive(Debug)]
pub struct SecretKey {
    /// The key's name: the `name` of its `name:BASE64` texts and of every
    /// signature it makes, by which verifiers find the public key. It must
    /// have no `:`, no white space and no control character ([`is_key_name`]):
    /// [`SecretKey::generate`] refuses any other, [`SecretKey::read`] never
    /// gives one.
    pub name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A new key `name`, from the system's random source. A name its
    /// files could not carry (see [`is_key_name`]) is
    /// [`Error::InvalidKeyName`].
    pub fn generate(name: &str) -> Result<SecretKey> {
        if !is_key_name(name) {
            return Err(Error::InvalidKeyName {
                name: name.to_string(),
            });
        }
        let mut seed = [0u8; 32];
        let mut random = std::fs::File::open("/dev/urandom").with_path("open", "/dev/urandom")?;
        std::io::Read::read_exact(&mut random, &mut seed).with_path("read", "/dev/urandom")?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a secret key file: a regular file of at most
    /// [`MAX_METADATA_BYTES`](fruix_core::fsutil::MAX_METADATA_BYTES),
    /// never through a symlink, never waiting on a FIFO
    /// ([`read_file_of_kind`](fruix_core::fsutil::read_file_of_kind)).
    pub fn read(path: &Path) -> Result<SecretKey> {
        let text = fruix_core::fsutil::read_file_of_kind(path, "secret key file")?;
        let (name, bytes) = parts("the secret key", &text).map_err(|m| invalid_key(path, m))?;
        let pair: [u8; 64] = bytes
            .try_into()
            .map_err(|_| invalid_key(path, "the secret key is not 64 bytes".into()))?;
        let key = SigningKey::from_keypair_bytes(&pair)
            .map_err(|e| invalid_key(path, format!("the secret key is not a key pair: {e}")))?;
        Ok(SecretKey {
            name: name.to_string(),
            key,
        })
    }

    /// The secret key file's text.
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}\n",
            self.name,
            BASE64.encode(&self.key.to_keypair_bytes())
        )
    }

    /// The public key's text.
    pub fn public_text(&self) -> String {
        format!(
            "{}:{}\n",
            self.name,
            BASE64.encode(&self.key.verifying_key().to_bytes())
        )
    }

    /// The signature of `fingerprint`: `name:BASE64`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let signature = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(&signature.to_bytes()))
    }
}

/// A trusted public key with its name.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The key's name, the `name` of `name:BASE64`: [`verify`] tries only
    /// the trusted keys whose name a signature carries.
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:BASE64`.
    pub fn parse(text: &str) -> std::result::Result<PublicKey, String> {
        let (name, bytes) = parts("the public key", text)?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the public key is not 32 bytes".to_string())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not a public key: {e}"))?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }
}

/// Whether `signature` (`name:BASE64`) is a valid signature of
/// `fingerprint` by one of `trusted` (by name).
pub fn verify(fingerprint: &str, signature: &str, trusted: &[PublicKey]) -> bool {
    let Ok((name, bytes)) = parts("the signature", signature) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes) else {
        return false;
    };
    let signature = Signature::from_bytes(&bytes);
    trusted
        .iter()
        .filter(|k| k.name == name)
        .any(|k| k.key.verify(fingerprint.as_bytes(), &signature).is_ok())
}

/// An object's fingerprint: `1;PATH;TREE_SIGNATURE;SIZE;REFS`.
pub fn fingerprint(
    path: &Path,
    tree_signature: Option<&str>,
    size: u64,
    references: &[PathBuf],
) -> String {
    let mut refs: Vec<String> = references
        .iter()
        .map(|r| r.to_string_lossy().into_owned())
        .collect();
    refs.sort();
    format!(
        "1;{};{};{size};{}",
        path.display(),
        tree_signature.unwrap_or(""),
        refs.join(",")
    )
}

/// The fingerprint of the registered object `name` of `store`.
pub fn object_fingerprint(store: &Store, name: &str) -> Result<String> {
    let db = store.db();
    let record = db.get(name)?.ok_or_else(|| Error::NotValid {
        path: store.path().join(name),
    })?;
    let references: Vec<PathBuf> = db
        .neighbours(name, false)?
        .into_iter()
        .map(|n| store.path().join(n))
        .collect();
    Ok(fingerprint(
        &store.path().join(name),
        record.tree_signature.as_deref(),
        record.size,
        &references,
    ))
}

/// Signs the registered object `name` with `key`, recording the signature
/// in the registry; returns it.
pub fn sign_object(store: &Store, name: &str, key: &SecretKey) -> Result<String> {
    let signature = key.sign(&object_fingerprint(store, name)?);
    store.db().add_signature(name, &signature)?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_only_and_over_its_fingerprint_only() {
        let key = SecretKey::generate("builder-1").unwrap();
        let other = SecretKey::generate("builder-1").unwrap();
        let public = PublicKey::parse(&key.public_text()).unwrap();
        let refs = [PathBuf::from("/s/b"), PathBuf::from("/s/a")];
        let print = fingerprint(Path::new("/s/x"), Some("sha256:00"), 10, &refs);
        assert_eq!(print, "1;/s/x;sha256:00;10;/s/a,/s/b");
        let signature = key.sign(&print);
        assert!(signature.starts_with("builder-1:"));
        assert!(verify(&print, &signature, std::slice::from_ref(&public)));
        // Another key of the same name, another fingerprint, a forged byte.
        assert!(!verify(
            &print,
            &other.sign(&print),
            std::slice::from_ref(&public)
        ));
        let reordered = fingerprint(Path::new("/s/x"), Some("sha256:00"), 11, &refs);
        assert!(!verify(
            &reordered,
            &signature,
            std::slice::from_ref(&public)
        ));
        let mut forged = signature.clone().into_bytes();
        let last = forged.len() - 3;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(!verify(&print, &forged, std::slice::from_ref(&public)));
        // Keys round-trip through their files' text.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), key.to_text()).unwrap();
        let read = SecretKey::read(&dir.path().join("secret")).unwrap();
        assert_eq!(read.sign(&print), signature, "ed25519 is deterministic");
        assert!(PublicKey::parse("nocolon").is_err());
    }

    #[test]
    fn a_key_name_its_file_could_not_carry_is_refused() {
        for name in [
            "",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\rb",
            "a\u{a0}b",
            " a",
            "a\u{1b}[31mb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{202e}b",
            "a\u{2066}b",
        ] {
            let refused = SecretKey::generate(name);
            assert!(
                matches!(&refused, Err(Error::InvalidKeyName { name: n }) if n == name),
                "{name:?}: {refused:?}"
            );
            assert!(!is_key_name(name));
        }
        // A name it accepts is read back from the key's file.
        let key = SecretKey::generate("builder-1.example.org").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), key.to_text()).unwrap();
        let read = SecretKey::read(&dir.path().join("secret")).unwrap();
        assert_eq!(read.name, "builder-1.example.org");
    }
}
