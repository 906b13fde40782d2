//! Who built an object: ed25519 signatures over an object's fingerprint,
//! in Nix's forms. A secret key file holds `name:BASE64` of the 64-byte
//! key pair, a public key `name:BASE64` of the 32-byte key, and a signature
//! is `name:BASE64` of the 64-byte signature of the fingerprint
//! `1;STORE_PATH;TREE_SIGNATURE;SIZE;REF,REF,...` (references sorted, full
//! store paths). Signatures live in the store's registry, at most
//! [`MAX_SIGNATURES`] an object, each within [`MAX_SIGNATURE_BYTES`]: the
//! caps an import holds an archive to, so that whatever a store signs,
//! another store can import.

use std::borrow::Cow;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use fruix_core::error::IoContext;
use fruix_core::escape;

use crate::error::{Error, Result};
use crate::store::Store;

/// Most signatures an object carries. `store sign` and a promotion's
/// `--sign-with` refuse to add one more; an import keeps the ones the
/// store has and adds the archive's while there is room, and refuses an
/// archive that lists more for one object.
pub const MAX_SIGNATURES: usize = 64;
/// Longest signature text an import reads; no key name makes a longer one
/// ([`MAX_KEY_NAME_BYTES`]).
pub const MAX_SIGNATURE_BYTES: usize = 1024;
/// Length of the BASE64 of an ed25519 signature's 64 bytes.
const SIGNATURE_BASE64_BYTES: usize = 88;
/// Longest key name: a signature, `NAME:` and the BASE64 of 64 bytes,
/// must fit [`MAX_SIGNATURE_BYTES`].
pub const MAX_KEY_NAME_BYTES: usize = MAX_SIGNATURE_BYTES - 1 - SIGNATURE_BASE64_BYTES;

/// A `name:BASE64` text's parts, or why not. Nothing is trimmed: a key
/// file's reader trims its text, a signature is read as it is.
fn parts<'a>(what: &str, text: &'a str) -> std::result::Result<(&'a str, Vec<u8>), String> {
    let (name, data) = text
        .split_once(':')
        .ok_or_else(|| format!("{what} is not NAME:BASE64"))?;
    if name.is_empty() {
        return Err(format!("{what} has no name (NAME:BASE64)"));
    }
    if let Some(problem) = key_name_problem(name) {
        return Err(format!("{what}'s name {}: {problem}", escape::quoted(name)));
    }
    let bytes = BASE64
        .decode(data.as_bytes())
        .map_err(|e| format!("{what} is not base64: {e}"))?;
    Ok((name, bytes))
}

/// Why a text cannot name a key (see [`key_name_problem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_KEY_NAME_BYTES`].
    TooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The name holds `:`, white space, a control character or a format
    /// character ([`escape::is_unsafe`]): `found`, the first such.
    Character {
        /// The first character the name may not hold.
        found: char,
    },
}

impl std::fmt::Display for KeyNameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyNameProblem::Empty => write!(f, "it is empty"),
            KeyNameProblem::TooLong { bytes } => write!(
                f,
                "it is {bytes} bytes long, over the cap of {MAX_KEY_NAME_BYTES} (every signature carries the name, and an import reads signatures of at most {MAX_SIGNATURE_BYTES} bytes)"
            ),
            KeyNameProblem::Character { found: ':' } => write!(
                f,
                "it holds ':', which ends a name in the NAME:BASE64 texts of keys and signatures"
            ),
            KeyNameProblem::Character { found } if found.is_control() => write!(
                f,
                "it holds the control character {} (U+{:04X})",
                escape::text(&found.to_string()),
                u32::from(*found)
            ),
            KeyNameProblem::Character { found } if found.is_whitespace() => write!(
                f,
                "it holds white space (U+{:04X}), which ends a name in a trusted keys file",
                u32::from(*found)
            ),
            KeyNameProblem::Character { found } => write!(
                f,
                "it holds U+{:04X}, an invisible or bidirectional-text format character (a name must show as it is)",
                u32::from(*found)
            ),
        }
    }
}

/// Why `name` cannot name a key, or `None` when it can: it must not be
/// empty, must fit [`MAX_KEY_NAME_BYTES`] (every signature carries it, and
/// must fit an import's cap), must have no `:` and no white space (the
/// `NAME` of `NAME:BASE64` texts would not read back otherwise), and no
/// character fruix escapes when it prints ([`escape::is_unsafe`]): no
/// control character (C0, DEL, C1) and no format character (Unicode
/// general category Cf: the bidirectional-text controls and marks, and
/// invisible characters such as U+200B or U+FEFF). A name printed in a
/// refusal shows as it is, and no name looks like another.
pub fn key_name_problem(name: &str) -> Option<KeyNameProblem> {
    let bad = |c: char| c == ':' || c.is_whitespace() || escape::is_unsafe(c);
    if name.is_empty() {
        Some(KeyNameProblem::Empty)
    } else if name.len() > MAX_KEY_NAME_BYTES {
        Some(KeyNameProblem::TooLong { bytes: name.len() })
    } else {
        let found = name.chars().find(|c| bad(*c))?;
        Some(KeyNameProblem::Character { found })
    }
}

/// Whether `name` can name a key ([`key_name_problem`] finds nothing).
pub fn is_key_name(name: &str) -> bool {
    key_name_problem(name).is_none()
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
    /// signature it makes, by which verifiers find the public key. It is
    /// one [`is_key_name`] accepts: [`SecretKey::generate`] refuses any
    /// other, [`SecretKey::read`] never gives one.
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
    /// reached through the symlinks of its path (the user named it), never
    /// waiting on a FIFO
    /// ([`read_file_of_kind`](fruix_core::fsutil::read_file_of_kind)).
    pub fn read(path: &Path) -> Result<SecretKey> {
        let text = fruix_core::fsutil::read_file_of_kind(path, "secret key file")?;
        let (name, bytes) =
            parts("the secret key", text.trim()).map_err(|m| invalid_key(path, m))?;
        let pair: [u8; 64] = bytes
            .try_into()
            .map_err(|_| invalid_key(path, "the secret key is not 64 bytes".into()))?;
        let key = SigningKey::from_keypair_bytes(&pair).map_err(|_| {
            invalid_key(
                path,
                "the secret key is not a key pair: its public half is not its secret half's".into(),
            )
        })?;
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
    /// Parses `name:BASE64`, white space around it ignored.
    pub fn parse(text: &str) -> std::result::Result<PublicKey, String> {
        let (name, bytes) = parts("the public key", text.trim())?;
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

/// `text` as a signature: its key's name and its 64 bytes, or `None` when
/// it is not exactly `NAME:BASE64` of 64 bytes. Nothing around it is
/// trimmed: fruix writes none, and a signature read in more than one
/// spelling would be recorded as more than one.
fn signature_parts(text: &str) -> Option<(&str, [u8; 64])> {
    let (name, bytes) = parts("the signature", text).ok()?;
    Some((name, bytes.try_into().ok()?))
}

/// The signatures among `texts`, each in its one spelling (`NAME:BASE64`,
/// re-encoded from its bytes) and once, in the order first met, at most
/// [`MAX_SIGNATURES`]: what an import keeps of an archive's, and an export
/// writes of the registry's. A text that is not exactly a signature (with
/// white space around it, say) is left out.
pub fn canonical_signatures(texts: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    texts
        .iter()
        .filter_map(|text| signature_parts(text))
        .map(|(name, bytes)| format!("{name}:{}", BASE64.encode(&bytes)))
        .filter(|s| seen.insert(s.clone()))
        .take(MAX_SIGNATURES)
        .collect()
}

/// Whether `signature` (`name:BASE64`, exactly: see `signature_parts`)
/// is a valid signature of `fingerprint` by one of `trusted` (by name).
pub fn verify(fingerprint: &str, signature: &str, trusted: &[PublicKey]) -> bool {
    let Some((name, bytes)) = signature_parts(signature) else {
        return false;
    };
    let signature = Signature::from_bytes(&bytes);
    trusted
        .iter()
        .filter(|k| k.name == name)
        .any(|k| k.key.verify(fingerprint.as_bytes(), &signature).is_ok())
}

/// `path` as fingerprints and archives (their `store` line) spell it: its
/// text when it is UTF-8; otherwise its UTF-8 parts as they are, and each
/// other byte as NUL and two hex digits. No path holds NUL, so two paths
/// are spelled alike only when they are the same bytes: a signature made
/// for a store at `s\xfe` never verifies for one at `s\xff`, nor at
/// `s\u{fffd}`, and their archives are not each other's.
pub fn exact_path_text(path: &Path) -> Cow<'_, str> {
    let bytes = path.as_os_str().as_bytes();
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut text = String::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\0{byte:02x}"));
        }
    }
    Cow::Owned(text)
}

/// An object's fingerprint: `1;PATH;TREE_SIGNATURE;SIZE;REFS`, each path
/// spelled exactly, whatever its bytes (see [`exact_path_text`]).
pub fn fingerprint(
    path: &Path,
    tree_signature: Option<&str>,
    size: u64,
    references: &[PathBuf],
) -> String {
    let mut refs: Vec<Cow<'_, str>> = references.iter().map(|r| exact_path_text(r)).collect();
    refs.sort();
    format!(
        "1;{};{};{size};{}",
        exact_path_text(path),
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
    let size = record.valid_size().ok_or_else(|| Error::Inconsistent {
        object: store.path().join(name),
        message: "the registry's size of it is invalid (not a number of bytes); run `fruix store verify --repair`, which rewrites its record from the object".into(),
    })?;
    Ok(fingerprint(
        &store.path().join(name),
        record.tree_signature.as_deref(),
        size,
        &references,
    ))
}

/// An object that carries [`MAX_SIGNATURES`] signatures already, none of
/// them the one to add: no other is added.
#[derive(Debug, thiserror::Error)]
#[error("{}: it carries {MAX_SIGNATURES} signatures already, the most an object may carry (an import refuses an object with more); no signature was added", escape::path(object))]
pub struct SignaturesFull {
    /// The object's path in the store.
    pub object: PathBuf,
}

impl From<SignaturesFull> for Error {
    fn from(full: SignaturesFull) -> Error {
        fruix_core::Error::InvalidMetadata {
            path: full.object.clone(),
            field: "signatures".into(),
            line: None,
            message: full.to_string(),
        }
        .into()
    }
}

/// Signs the registered objects `names` of `store` with `key`, recording
/// the signatures in the registry in one transaction; returns them, in
/// the order of `names`. When one of the objects is full (it carries
/// [`MAX_SIGNATURES`] signatures, and not this one), none is recorded:
/// [`SignaturesFull`].
pub fn sign_objects(
    store: &Store,
    names: &[String],
    key: &SecretKey,
) -> Result<std::result::Result<Vec<String>, SignaturesFull>> {
    let signed = names
        .iter()
        .map(|name| Ok((name.clone(), key.sign(&object_fingerprint(store, name)?))))
        .collect::<Result<Vec<_>>>()?;
    Ok(match store.db().add_signatures(&signed)? {
        Some(full) => Err(SignaturesFull {
            object: store.path().join(full),
        }),
        None => Ok(signed.into_iter().map(|(_, s)| s).collect()),
    })
}

/// Signs the registered object `name` with `key`, recording the signature
/// in the registry; returns it. A full object ([`sign_objects`]) is an
/// error.
pub fn sign_object(store: &Store, name: &str, key: &SecretKey) -> Result<String> {
    let mut signed = sign_objects(store, &[name.to_string()], key)??;
    Ok(signed.remove(0))
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

    /// Regression: a key name with a bidi mark (U+061C, U+200E, U+200F) or
    /// an invisible format character was accepted, and a refusal naming it
    /// looked like one naming the key without it.
    #[test]
    fn a_key_name_with_a_bidi_mark_or_an_invisible_character_is_refused() {
        for c in [
            '\u{61c}',
            '\u{200e}',
            '\u{200f}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{2064}',
            '\u{feff}',
            '\u{ad}',
            '\u{e0001}',
        ] {
            let name = format!("k1{c}");
            assert_eq!(
                key_name_problem(&name),
                Some(KeyNameProblem::Character { found: c }),
                "{name:?}"
            );
            let refused = SecretKey::generate(&name);
            assert!(
                matches!(&refused, Err(Error::InvalidKeyName { name: n }) if *n == name),
                "{name:?}: {refused:?}"
            );
        }
        assert!(is_key_name("k1-é✓"));
    }

    /// Regression: a refused key name was told every rule at once ("it
    /// holds ':', white space, a control character or ..."), not the one
    /// it breaks.
    #[test]
    fn a_refused_key_name_is_told_the_rule_it_breaks() {
        for (name, says) in [
            ("a:b", "it holds ':', which ends a name"),
            ("a b", "it holds white space (U+0020)"),
            ("a\u{a0}b", "it holds white space (U+00A0)"),
            (
                "a\u{1b}[31m",
                "it holds the control character \\033 (U+001B)",
            ),
            (
                "a\u{202e}b",
                "it holds U+202E, an invisible or bidirectional-text",
            ),
        ] {
            let problem = key_name_problem(name).unwrap().to_string();
            assert!(problem.starts_with(says), "{name:?}: {problem}");
        }
    }

    /// Regression: a key name of any length was accepted, and its
    /// signatures went over the import's cap on one; an empty name was
    /// refused without saying it was empty.
    #[test]
    fn every_signature_of_a_key_fits_the_import_cap() {
        let longest = "k".repeat(MAX_KEY_NAME_BYTES);
        let key = SecretKey::generate(&longest).unwrap();
        assert_eq!(key.sign("anything").len(), MAX_SIGNATURE_BYTES);
        let over = "k".repeat(MAX_KEY_NAME_BYTES + 1);
        let problem = key_name_problem(&over).unwrap();
        assert_eq!(
            problem,
            KeyNameProblem::TooLong {
                bytes: MAX_KEY_NAME_BYTES + 1
            }
        );
        assert!(problem.to_string().contains("cap of 935"), "{problem}");
        assert!(SecretKey::generate(&over).is_err());
        // Nor is a key file with such a name read.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, key.to_text().replacen(&longest, &over, 1)).unwrap();
        let refused = SecretKey::read(&file).unwrap_err().to_string();
        assert!(refused.contains("bytes long, over the cap"), "{refused}");
        assert_eq!(key_name_problem("").unwrap().to_string(), "it is empty");
    }

    /// Regression: an import recorded ` k:SIG\n`, `k:SIG` and `k:SIG\u{85}`
    /// as three signatures of one object.
    #[test]
    fn a_signature_has_one_spelling() {
        let key = SecretKey::generate("builder-1").unwrap();
        let public = [PublicKey::parse(&key.public_text()).unwrap()];
        let signature = key.sign("print");
        let texts = [
            format!(" {signature}\n"),
            signature.clone(),
            format!("{signature}\u{85}"),
            signature.clone(),
            "builder-1:AAAA".to_string(),
            "no signature".to_string(),
        ];
        let kept = canonical_signatures(&texts);
        assert_eq!(kept, std::slice::from_ref(&signature));
        for text in &texts {
            assert_eq!(
                verify("print", text, &public),
                *text == signature,
                "{text:?}"
            );
        }
        // At most MAX_SIGNATURES, the first met.
        let many: Vec<String> = (0..MAX_SIGNATURES + 3)
            .map(|i| SecretKey::generate(&format!("k{i}")).unwrap().sign("print"))
            .collect();
        let kept = canonical_signatures(&many);
        assert_eq!(kept, many[..MAX_SIGNATURES]);
    }

    /// Regression: a fingerprint spelled its paths lossily, so that a
    /// signature made for a store at `/s\xfe` verified for one at `/s\xff`.
    #[test]
    fn a_fingerprint_spells_its_paths_exactly() {
        use std::ffi::OsStr;
        let at = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
        let print = |store: &[u8]| {
            let object = at(&[store, b"/x"].concat());
            fingerprint(&object, None, 1, &[at(&[store, b"/r"].concat())])
        };
        let (fe, ff) = (print(b"/s\xfe"), print(b"/s\xff"));
        let replacement = print("/s\u{fffd}".as_bytes());
        assert_eq!(fe, "1;/s\u{0}fe/x;;1;/s\u{0}fe/r");
        assert_eq!(replacement, "1;/s\u{fffd}/x;;1;/s\u{fffd}/r");
        assert_ne!(fe, ff);
        let key = SecretKey::generate("k").unwrap();
        let public = [PublicKey::parse(&key.public_text()).unwrap()];
        assert!(verify(&fe, &key.sign(&fe), &public));
        assert!(!verify(&ff, &key.sign(&fe), &public));
        assert!(!verify(&replacement, &key.sign(&fe), &public));
    }
}
