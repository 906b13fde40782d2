//! Safe printing of untrusted strings: paths and values from result roots,
//! guests and metadata files, escaped the way `vis(3)` and `ls -b` do it.
//!
//! A file name or a metadata value can hold a newline (forging an output
//! line), an ANSI escape sequence (recolouring or rewriting the terminal) or
//! bytes that are not UTF-8. Every error message and output line that embeds
//! such a value prints it through one of the wrappers here:
//!
//! - printable characters are kept as they are (UTF-8 included);
//! - a backslash is doubled, so that every escape below is unambiguous;
//! - `\n`, `\t` and `\r` become those C escapes;
//! - every other control character (U+0000–U+001F, DEL, the C1 controls
//!   U+0080–U+009F), every format character (Unicode general category Cf,
//!   [`FORMAT_CHARACTERS`]: the bidirectional-text controls, which reorder
//!   what a terminal shows, and invisible characters such as U+200B or
//!   U+FEFF, which make one name look like another), the line and paragraph
//!   separators U+2028 and U+2029, and each byte that is
//!   not UTF-8 become `\ooo`, the octal value of each of their bytes;
//! - more than [`MAX_SHOWN_BYTES`] bytes of input are cut at a character
//!   boundary, and the output says how many bytes were left out.
//!
//! JSON output shows a path as [`path_text`] does: a UTF-8 path as it is
//! (JSON escapes it), any other path escaped as above, never cut. Reports
//! serialise their path fields through [`serialize_path`] (and
//! [`serialize_opt_path`], [`serialize_paths`]), which serde could not
//! serialise otherwise.
//!
//! ```
//! use fruix_core::escape;
//! assert_eq!(escape::text("a\nb\x1b[31m\\").to_string(), "a\\nb\\033[31m\\\\");
//! assert_eq!(escape::bytes(b"\xff").to_string(), "\\377");
//! ```

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::{self, Display, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How many bytes of a value are shown before the rest is cut.
pub const MAX_SHOWN_BYTES: usize = 1024;

/// A value to print escaped; see the module documentation for the rules.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    bytes: &'a [u8],
    limit: usize,
    /// Printed between double quotes, with `"` escaped as `\"`.
    quoted: bool,
}

/// `path`, escaped (its bytes, not a lossy UTF-8 conversion).
pub fn path(path: &Path) -> Escaped<'_> {
    bytes(path.as_os_str().as_bytes())
}

/// `s`, escaped.
pub fn os_str(s: &OsStr) -> Escaped<'_> {
    bytes(s.as_bytes())
}

/// `s`, escaped.
pub fn text(s: &str) -> Escaped<'_> {
    bytes(s.as_bytes())
}

/// `b`, escaped; bytes that are not UTF-8 print as `\ooo`.
pub fn bytes(b: &[u8]) -> Escaped<'_> {
    Escaped {
        bytes: b,
        limit: MAX_SHOWN_BYTES,
        quoted: false,
    }
}

/// `s`, escaped, between double quotes (`"a\"b"`): for values inside a
/// sentence, where `{:?}` would neither cut them nor escape them as `vis` does.
pub fn quoted(s: &str) -> Escaped<'_> {
    Escaped {
        quoted: true,
        ..text(s)
    }
}

impl Escaped<'_> {
    /// Shows at most `limit` bytes of the value (instead of [`MAX_SHOWN_BYTES`]).
    pub fn cut_at(self, limit: usize) -> Self {
        Escaped { limit, ..self }
    }
}

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = cut(self.bytes, self.limit);
        if self.quoted {
            f.write_char('"')?;
        }
        for chunk in shown.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' if self.quoted => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\r' => f.write_str("\\r")?,
                    c if is_unsafe(c) => octal(f, c.encode_utf8(&mut [0; 4]).as_bytes())?,
                    c => f.write_char(c)?,
                }
            }
            octal(f, chunk.invalid())?;
        }
        if self.quoted {
            f.write_char('"')?;
        }
        let left_out = self.bytes.len() - shown.len();
        if left_out > 0 {
            write!(f, "…[{left_out} more bytes cut]")?;
        }
        Ok(())
    }
}

/// Makes text that is already formatted (an error message whose values are
/// escaped) safe for a terminal: control characters other than newline and
/// tab become `\ooo`; everything else, backslashes included, stays.
///
/// This is the last line of defence in front of a terminal, for text that
/// keeps structural newlines (such as a list of problems).
pub fn terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_unsafe(c) && c != '\n' && c != '\t' {
            octal(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes())
                .expect("writing to a String cannot fail");
        } else {
            out.push(c);
        }
    }
    out
}

/// Makes one line of output (a log line, a stage name) safe for a terminal,
/// like [`terminal`], but a newline in it becomes `\n` too: a line from a
/// guest or a build can never show as two.
pub fn line(s: &str) -> String {
    terminal(s).replace('\n', "\\n")
}

/// `b` as text: its UTF-8 as it is, and each byte that is not UTF-8 as
/// `\ooo`, as [`bytes`] shows it (`String::from_utf8_lossy` would lose it to
/// U+FFFD). For output lines, which [`line()`] then makes safe to show.
pub fn utf8_or_octal(b: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(b) {
        return text.into();
    }
    let mut out = String::with_capacity(b.len() + 16);
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        octal(&mut out, chunk.invalid()).expect("writing to a String cannot fail");
    }
    out.into()
}

/// `path` as text for machine-readable output (JSON): the path itself when
/// it is UTF-8, else escaped as [`path`] shows it, but never cut. serde
/// cannot serialise a path that is not UTF-8 at all.
///
/// ```
/// use std::ffi::OsStr;
/// use std::os::unix::ffi::OsStrExt;
/// use std::path::Path;
/// use fruix_core::escape;
/// assert_eq!(escape::path_text(Path::new("/s/a\\b\n")), "/s/a\\b\n");
/// let odd = Path::new(OsStr::from_bytes(b"/s/a\\b\xff"));
/// assert_eq!(escape::path_text(odd), "/s/a\\\\b\\377");
/// ```
pub fn path_text(p: &Path) -> Cow<'_, str> {
    match p.to_str() {
        Some(text) => text.into(),
        None => path(p).cut_at(usize::MAX).to_string().into(),
    }
}

/// Serialises `path` as [`path_text`], for the path fields of reports:
/// `#[serde(serialize_with = "fruix_core::escape::serialize_path")]`.
pub fn serialize_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path_text(path))
}

/// [`serialize_path`] for an optional path (`None` is `null`).
pub fn serialize_opt_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => serializer.serialize_some(&*path_text(p)),
        None => serializer.serialize_none(),
    }
}

/// [`serialize_path`] for a list of paths.
pub fn serialize_paths<S: serde::Serializer>(
    paths: &[PathBuf],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(paths.iter().map(|p| path_text(p)))
}

/// Whether fruix escapes `c` when it prints it: a control character (C0,
/// DEL, C1, [`char::is_control`]), a format character (Unicode general
/// category Cf, [`FORMAT_CHARACTERS`]), or the line or paragraph separator
/// (U+2028, U+2029), which some terminals and log viewers break a line at.
/// A key name must hold none (`fruix_promote::sign::key_name_problem`).
///
/// ```
/// use fruix_core::escape::is_unsafe;
/// assert!(is_unsafe('\u{1b}') && is_unsafe('\u{202e}') && is_unsafe('\u{200e}'));
/// assert!(is_unsafe('\u{2028}') && is_unsafe('\u{2029}'));
/// assert!(!is_unsafe('a') && !is_unsafe('é') && !is_unsafe(' '));
/// ```
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || FORMAT_CHARACTERS
            .binary_search_by(|&(first, last)| {
                if last < c {
                    std::cmp::Ordering::Less
                } else if first > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

/// The format characters (general category Cf, Unicode 15.1), as sorted
/// ranges: they are invisible or change how the text around them shows.
/// Among them are every bidirectional-text control (Bidi_Control: the
/// marks U+061C, U+200E, U+200F, the embeddings and overrides
/// U+202A–U+202E, the isolates U+2066–U+2069), which reorder what a
/// terminal shows, and the invisible characters that make one name look
/// like another: the soft hyphen U+00AD, the zero-width space, non-joiner
/// and joiner U+200B–U+200D, the word joiner and invisible operators
/// U+2060–U+2064, and the byte order mark (zero-width no-break space)
/// U+FEFF.
pub const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

/// The longest prefix of `b` of at most `limit` bytes that does not split a
/// UTF-8 character (each byte that is not UTF-8 counts as one character).
fn cut(b: &[u8], limit: usize) -> &[u8] {
    if b.len() <= limit {
        return b;
    }
    let mut end = 0;
    for chunk in b.utf8_chunks() {
        let lengths = chunk.valid().chars().map(char::len_utf8);
        for len in lengths.chain(chunk.invalid().iter().map(|_| 1)) {
            if end + len > limit {
                return &b[..end];
            }
            end += len;
        }
    }
    &b[..end]
}

fn octal(out: &mut impl Write, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(out, "\\{b:03o}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_escape_sequences_are_octal() {
        assert_eq!(text("\x1b[31mred").to_string(), "\\033[31mred");
        assert_eq!(
            text("\x7f\u{85}\u{9b}").to_string(),
            "\\177\\302\\205\\302\\233"
        );
        assert_eq!(
            text("\u{202e}txt.exe").to_string(),
            "\\342\\200\\256txt.exe"
        );
    }

    /// Regression: the bidi marks (U+061C, U+200E, U+200F) and invisible
    /// format characters printed raw, so that a key named `k1<U+200E>`
    /// showed as `k1` in a refusal.
    #[test]
    fn bidi_marks_and_invisible_format_characters_are_octal() {
        for (c, octal) in [
            ('\u{61c}', "\\330\\234"),
            ('\u{200e}', "\\342\\200\\216"),
            ('\u{200f}', "\\342\\200\\217"),
            ('\u{200b}', "\\342\\200\\213"),
            ('\u{200d}', "\\342\\200\\215"),
            ('\u{2060}', "\\342\\201\\240"),
            ('\u{2064}', "\\342\\201\\244"),
            ('\u{feff}', "\\357\\273\\277"),
            ('\u{ad}', "\\302\\255"),
            ('\u{e0001}', "\\363\\240\\200\\201"),
            ('\u{2028}', "\\342\\200\\250"),
            ('\u{2029}', "\\342\\200\\251"),
        ] {
            assert_eq!(text(&format!("k1{c}")).to_string(), format!("k1{octal}"));
            assert_eq!(terminal(&format!("k1{c}\n")), format!("k1{octal}\n"));
            assert_eq!(line(&format!("k1{c}")), format!("k1{octal}"));
        }
        // Their neighbours are printable, and stay.
        for c in [
            '\u{ac}',
            '\u{ae}',
            '\u{2010}',
            '\u{2065}',
            '\u{fefe}',
            '\u{e0080}',
        ] {
            assert_eq!(text(&format!("k1{c}")).to_string(), format!("k1{c}"));
        }
    }

    #[test]
    fn the_format_character_ranges_are_sorted_and_apart() {
        for (first, last) in FORMAT_CHARACTERS {
            assert!(first <= last, "{first:?}..{last:?}");
        }
        for pair in FORMAT_CHARACTERS.windows(2) {
            assert!(pair[0].1 < pair[1].0, "{pair:?}");
        }
        for (first, last) in FORMAT_CHARACTERS {
            assert!(is_unsafe(*first) && is_unsafe(*last));
        }
    }

    #[test]
    fn newline_tab_return_and_backslash_are_c_escapes() {
        assert_eq!(text("a\nb\tc\rd\\e").to_string(), "a\\nb\\tc\\rd\\\\e");
        assert_eq!(text("\0").to_string(), "\\000");
    }

    #[test]
    fn printable_unicode_is_kept() {
        assert_eq!(text("héllo wörld ✓").to_string(), "héllo wörld ✓");
    }

    #[test]
    fn invalid_utf8_bytes_are_octal() {
        assert_eq!(bytes(b"a\xffb\xc3").to_string(), "a\\377b\\303");
        let p = Path::new(OsStr::from_bytes(b"/tmp/x\xfe\n"));
        assert_eq!(path(p).to_string(), "/tmp/x\\376\\n");
        assert_eq!(os_str(p.as_os_str()).to_string(), "/tmp/x\\376\\n");
    }

    #[test]
    fn long_values_are_cut_and_say_so() {
        let value = "x".repeat(100 * 1024);
        let shown = text(&value).to_string();
        assert!(shown.starts_with(&"x".repeat(MAX_SHOWN_BYTES)), "{shown}");
        assert!(
            shown.ends_with(&format!(
                "…[{} more bytes cut]",
                100 * 1024 - MAX_SHOWN_BYTES
            )),
            "{}",
            &shown[MAX_SHOWN_BYTES..]
        );
        assert_eq!(
            shown.len(),
            MAX_SHOWN_BYTES + "…[101376 more bytes cut]".len()
        );
        assert_eq!(
            text("short").cut_at(3).to_string(),
            "sho…[2 more bytes cut]"
        );
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // "é" is two bytes; a cut after 3 bytes keeps "aé" whole or drops the é.
        assert_eq!(text("aéé").cut_at(2).to_string(), "a…[4 more bytes cut]");
        assert_eq!(text("aéé").cut_at(3).to_string(), "aé…[2 more bytes cut]");
        assert_eq!(
            bytes(b"a\xff\xff").cut_at(2).to_string(),
            "a\\377…[1 more bytes cut]"
        );
    }

    #[test]
    fn quoted_values_escape_their_quotes() {
        assert_eq!(quoted("a\"b\n").to_string(), "\"a\\\"b\\n\"");
        assert_eq!(
            quoted("abcdef").cut_at(2).to_string(),
            "\"ab\"…[4 more bytes cut]"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_become_octal_escapes() {
        assert_eq!(
            utf8_or_octal(b"caf\xc3\xa9 \xff\xfe!"),
            "caf\u{e9} \\377\\376!"
        );
        assert!(matches!(
            utf8_or_octal(b"plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }

    /// A report with each kind of path field.
    #[derive(serde::Serialize)]
    struct Report {
        #[serde(serialize_with = "serialize_path")]
        one: PathBuf,
        #[serde(serialize_with = "serialize_opt_path")]
        maybe: Option<PathBuf>,
        #[serde(serialize_with = "serialize_opt_path")]
        none: Option<PathBuf>,
        #[serde(serialize_with = "serialize_paths")]
        many: Vec<PathBuf>,
    }

    fn report(p: &Path) -> serde_json::Value {
        serde_json::to_value(Report {
            one: p.into(),
            maybe: Some(p.into()),
            none: None,
            many: vec![p.into(), "/plain".into()],
        })
        .unwrap()
    }

    #[test]
    fn json_paths_that_are_not_utf8_are_escaped_whole() {
        let long = [b"/s/\\\n\xff".as_slice(), &[b'x'; 2 * MAX_SHOWN_BYTES]].concat();
        let odd = Path::new(OsStr::from_bytes(&long));
        let shown = format!("/s/\\\\\\n\\377{}", "x".repeat(2 * MAX_SHOWN_BYTES));
        assert_eq!(path_text(odd), shown);
        assert_eq!(
            report(odd),
            serde_json::json!({ "one": shown, "maybe": shown, "none": null, "many": [shown, "/plain"] })
        );
    }

    #[test]
    fn json_paths_that_are_utf8_serialise_as_serde_does() {
        let plain = Path::new("/s/caf\u{e9} \\ \n\u{1b}");
        assert!(matches!(path_text(plain), Cow::Borrowed(_)));
        let serde = serde_json::to_value(plain).unwrap();
        assert_eq!(
            report(plain),
            serde_json::json!({ "one": serde, "maybe": serde, "none": null, "many": [serde, "/plain"] })
        );
    }

    #[test]
    fn a_line_never_shows_as_two() {
        assert_eq!(
            line("a\n==> buildworld done\r\x1b[2J\tb"),
            "a\\n==> buildworld done\\015\\033[2J\tb"
        );
    }

    #[test]
    fn terminal_keeps_layout_and_backslashes() {
        assert_eq!(
            terminal("line 1\n\tline 2 \\n\x1b[2J\u{9b}"),
            "line 1\n\tline 2 \\n\\033[2J\\302\\233"
        );
    }
}
