//! A linear pre-scan that bounds what the S-expression reader may build,
//! run before lexpr sees the text.
//!
//! lexpr recurses once per quote prefix (`'`, `` ` ``, `,`, `,@`) while
//! parsing, and once per list cell while freeing (and cloning) a value: about
//! 20,000 nested quotes, or a flat list of some 50,000 items, overflow the
//! stack and abort the process. The scan refuses, with the line and column:
//!
//! - nesting deeper than [`MAX_DEPTH`] levels, where every list or vector
//!   opening (`(`, `[`, `#(`) and every quote-like prefix (`'`, `` ` ``,
//!   `,`, `,@`, `#'`, `` #` ``, `#,`, `#,@`) is a level;
//! - a datum more than [`MAX_CELLS`] list cells from the top: its place in its
//!   list, plus that list's place in the list around it, and so on up (a
//!   quote prefix takes two cells). That is how deep lexpr recurses when it
//!   frees or clones the value, so it bounds the stack;
//! - more than [`MAX_DATA`] data in the file (each atom, string, character,
//!   list and quote prefix counts once), which bounds the memory the parsed
//!   value takes;
//! - anything whose tokens could be split differently by lexpr: an atom must
//!   be followed by a space, a parenthesis, a bracket or `;`; numbers are plain
//!   decimals; `#` introduces only `#t`, `#f`, `#(`, `#\` characters, `#|`
//!   block comments and the quote-like prefixes; atoms use only the
//!   characters of Scheme identifiers and numbers.
//!
//! Strings (with their escapes), `;` comments and character literals such
//! as `#\(` are skipped exactly as lexpr reads them, so parentheses inside
//! them are not structure. `#|...|#` block comments (nested, as Guile reads
//! them) are skipped too, and noted: lexpr does not read them, so
//! [`blank`] makes them white space before it does.

use std::path::Path;

use crate::error::{Error, Result};
use crate::escape;

/// The deepest nesting of lists, vectors and quote prefixes a metadata file
/// may use. Fruix's own files nest at most four levels.
pub const MAX_DEPTH: usize = 64;

/// How many list cells from the top a datum may sit. lexpr frees, clones and
/// compares a list recursively along its cells, at about 200 bytes of stack
/// per cell in a debug build, so this keeps the reader within 1 MiB of stack,
/// half of a Rust thread's default. Only a list of some 4,000 items reaches
/// it (a special-modes file of 4,000 paths, say).
pub const MAX_CELLS: usize = 4096;

/// The most data (atoms, strings, characters, lists and quote prefixes) a
/// metadata file may hold, which bounds the memory of the parsed value and
/// its positions. A machine in a machines file takes 13 to 40 data, so a
/// pool of some 1,600 machines with every field fits.
pub const MAX_DATA: usize = 65_536;

/// How much of an offending atom a message shows.
const SHOWN_BYTES: usize = 64;

/// Checks `text` (the contents of `path`) against the limits above.
/// Returns the byte ranges of the text's `#|...|#` block comments, which
/// lexpr does not read: [`blank`] makes them white space for it.
pub fn check(path: &Path, text: &str) -> Result<Vec<(usize, usize)>> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
        open: Vec::new(),
        cells: 0,
        data: 0,
        comments: Vec::new(),
    };
    scanner.run().map_err(|(at, message)| Error::Syntax {
        path: path.to_path_buf(),
        line: at.line,
        column: super::char_column(text, at.line_start, at.pos),
        message,
    })?;
    Ok(scanner.comments)
}

/// `text` with the byte ranges `comments` made spaces, its line breaks
/// kept: every line, and every byte, where it was (for lexpr, which does
/// not read block comments; Guile does).
pub fn blank<'t>(text: &'t str, comments: &[(usize, usize)]) -> std::borrow::Cow<'t, str> {
    if comments.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut bytes = text.as_bytes().to_vec();
    for &(start, end) in comments {
        for b in &mut bytes[start..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    // Whole characters were replaced, byte for byte, by ASCII.
    std::borrow::Cow::Owned(String::from_utf8(bytes).expect("ASCII replaced whole characters"))
}

/// An open level: a list (or vector) waiting for its closing parenthesis, or
/// a quote prefix waiting for its datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Opened at this position.
    List(Position),
    Quote,
}

/// A place in the text: its 1-based line, where that line starts and the
/// byte offset of the place. (Made a column in characters only for a
/// refusal: counting them at every parenthesis would be quadratic on one
/// long line.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    line: usize,
    line_start: usize,
    pos: usize,
}

/// Where the scan stopped, and why.
type Refusal = (Position, String);

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Line of `pos` (1-based), and where that line starts. Every refusal is
    /// about the line the scan has reached (atoms hold no line break).
    line: usize,
    line_start: usize,
    /// The open levels, each with the cells it puts above the next datum
    /// (the items a list has so far; two for a quote prefix).
    open: Vec<(Level, usize)>,
    /// The sum of those cells: how deep the next datum sits.
    cells: usize,
    data: usize,
    /// The block comments met, as byte ranges.
    comments: Vec<(usize, usize)>,
}

impl Scanner<'_> {
    fn run(&mut self) -> std::result::Result<(), Refusal> {
        while let Some(b) = self.peek(0) {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0c => self.bump(1),
                b';' => self.line_comment(),
                b'"' => {
                    self.datum()?;
                    self.string();
                    self.complete();
                }
                b'(' | b'[' => {
                    self.open(Level::List(self.at(self.pos)))?;
                    self.bump(1);
                }
                b')' | b']' => {
                    self.bump(1);
                    self.close();
                }
                b'\'' | b'`' | b',' => {
                    self.open(Level::Quote)?;
                    self.bump(if b == b',' && self.peek(1) == Some(b'@') {
                        2
                    } else {
                        1
                    });
                }
                b'#' => self.hash()?,
                _ => {
                    self.datum()?;
                    let start = self.pos;
                    self.atom()?;
                    self.check_number(start)?;
                    self.complete();
                }
            }
        }
        // Point at the innermost parenthesis left open (the one a missing
        // `)` most likely belongs to), not at the end of the file.
        match self.open.iter().rev().find_map(|(l, _)| match l {
            Level::List(at) => Some(*at),
            Level::Quote => None,
        }) {
            Some(at) => Err((
                at,
                "this parenthesis is never closed; add its `)`".to_string(),
            )),
            None => Ok(()),
        }
    }

    /// The position of byte `pos`, on the line the scan has reached (refusals
    /// are about it: atoms hold no line break).
    fn at(&self, pos: usize) -> Position {
        Position {
            line: self.line,
            line_start: self.line_start,
            pos,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// Moves `n` bytes forward, counting lines.
    fn bump(&mut self, n: usize) {
        for _ in 0..n {
            if self.peek(0) == Some(b'\n') {
                self.line += 1;
                self.line_start = self.pos + 1;
            }
            self.pos += 1;
        }
    }

    /// Counts one datum, an item of the innermost open list.
    fn datum(&mut self) -> std::result::Result<(), Refusal> {
        self.data += 1;
        if self.data > MAX_DATA {
            return Err((
                self.at(self.pos),
                format!("the file holds more than {MAX_DATA} data (atoms, strings, lists and quote prefixes); fruix metadata is far smaller: check where it came from"),
            ));
        }
        if let Some((Level::List(_), items)) = self.open.last_mut() {
            *items += 1;
            self.cells += 1;
        }
        self.check_cells()
    }

    fn check_cells(&self) -> std::result::Result<(), Refusal> {
        if self.cells > MAX_CELLS {
            return Err((
                self.at(self.pos),
                format!("this datum sits more than {MAX_CELLS} list cells deep (its place in its list, plus that list's place in the one around it, and so on up); lists this long cannot be read safely: split the file, or check where it came from"),
            ));
        }
        Ok(())
    }

    /// Opens a level (a list or a quote prefix, each a datum).
    fn open(&mut self, level: Level) -> std::result::Result<(), Refusal> {
        self.datum()?;
        if self.open.len() == MAX_DEPTH {
            return Err((
                self.at(self.pos),
                format!("nested more than {MAX_DEPTH} levels deep (lists and quote prefixes each count); fruix metadata nests a few levels: check where it came from"),
            ));
        }
        // `'x` is `(quote x)`: x is the second cell of that list.
        let cells = match level {
            Level::List(_) => 0,
            Level::Quote => 2,
        };
        self.open.push((level, cells));
        self.cells += cells;
        self.check_cells()
    }

    /// Closes the innermost level.
    fn pop(&mut self) -> Option<Level> {
        let (level, cells) = self.open.pop()?;
        self.cells -= cells;
        Some(level)
    }

    /// A datum ended: the quote prefixes waiting for it are complete.
    fn complete(&mut self) {
        while matches!(self.open.last(), Some((Level::Quote, _))) {
            self.pop();
        }
    }

    /// A closing parenthesis ends the innermost list (lexpr reports any
    /// mismatch; the scan only has to follow the nesting).
    fn close(&mut self) {
        self.complete();
        if self.pop().is_some() {
            self.complete();
        }
    }

    fn line_comment(&mut self) {
        while let Some(b) = self.peek(0) {
            self.bump(1);
            if b == b'\n' {
                break;
            }
        }
    }

    /// Skips a string, from its opening quote to its closing one; a
    /// backslash escapes the byte after it (`\"`, `\\`, `\x41;`, and a
    /// backslash before a line break).
    fn string(&mut self) {
        self.bump(1);
        while let Some(b) = self.peek(0) {
            match b {
                b'"' => {
                    self.bump(1);
                    return;
                }
                b'\\' => self.bump(2),
                _ => self.bump(1),
            }
        }
    }

    /// `#` forms: `#(`, `#\c`, `#|...|#`, quote-like prefixes, `#t`, `#f`.
    fn hash(&mut self) -> std::result::Result<(), Refusal> {
        match self.peek(1) {
            Some(b'(') => {
                self.open(Level::List(self.at(self.pos)))?;
                self.bump(2);
            }
            Some(b'\\') => {
                self.datum()?;
                self.bump(2);
                self.character();
                self.after_atom(self.pos)?;
                self.complete();
            }
            Some(b'|') => self.block_comment()?,
            Some(b'\'' | b'`' | b',') => {
                self.open(Level::Quote)?;
                let splice = self.peek(1) == Some(b',') && self.peek(2) == Some(b'@');
                self.bump(if splice { 3 } else { 2 });
            }
            _ => {
                self.datum()?;
                let start = self.pos;
                self.atom()?;
                let atom = &self.text[start..self.pos];
                if atom != "#t" && atom != "#f" {
                    return Err((
                        self.at(start),
                        format!(
                            "`{}` is not supported; fruix metadata uses #t and #f",
                            escape::text(atom).cut_at(SHOWN_BYTES)
                        ),
                    ));
                }
                self.complete();
            }
        }
        Ok(())
    }

    /// The rest of a character literal after `#\`, as lexpr reads it: one
    /// character, then (when it is ASCII) every byte up to a delimiter, for
    /// names such as `#\space` and `#\x41`.
    fn character(&mut self) {
        let Some(c) = self.text[self.pos..].chars().next() else {
            return;
        };
        self.bump(c.len_utf8());
        if c.is_ascii() {
            while let Some(b) = self.peek(0) {
                if b.is_ascii_whitespace() || b"|()\"".contains(&b) {
                    break;
                }
                self.bump(1);
            }
        }
    }

    /// Skips a `#| ... |#` block comment, which may nest, noting where it
    /// is: lexpr does not read them, so [`blank`] makes them white space
    /// for it, and nothing inside is ever parsed. One never closed is
    /// refused where it opens.
    fn block_comment(&mut self) -> std::result::Result<(), Refusal> {
        let start = self.pos;
        let opened = self.at(start);
        self.bump(2);
        let mut depth = 1;
        while let Some(b) = self.peek(0) {
            match (b, self.peek(1)) {
                (b'|', Some(b'#')) => {
                    self.bump(2);
                    depth -= 1;
                    if depth == 0 {
                        self.comments.push((start, self.pos));
                        return Ok(());
                    }
                }
                (b'#', Some(b'|')) => {
                    self.bump(2);
                    depth += 1;
                }
                _ => self.bump(1),
            }
        }
        Err((
            opened,
            "a block comment `#|` is never closed by `|#`".into(),
        ))
    }

    /// An atom (symbol, number, boolean): identifier characters up to a
    /// delimiter.
    fn atom(&mut self) -> std::result::Result<(), Refusal> {
        let start = self.pos;
        while self.peek(0).is_some_and(is_atom_byte) {
            self.bump(1);
        }
        if self.pos == start {
            let c = self.text[start..].chars().next().unwrap_or('\0');
            return Err((
                self.at(start),
                format!(
                    "unexpected character `{}` (U+{:04X}); outside strings, metadata uses parentheses, identifiers, numbers, #t and #f",
                    escape::text(c.encode_utf8(&mut [0; 4])),
                    u32::from(c)
                ),
            ));
        }
        self.after_atom(start)
    }

    /// What follows an atom must end it for lexpr too.
    fn after_atom(&self, start: usize) -> std::result::Result<(), Refusal> {
        match self.peek(0) {
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'[' | b']' | b';') => Ok(()),
            Some(_) => {
                let c = self.text[self.pos..].chars().next().unwrap_or('\0');
                Err((
                    self.at(self.pos),
                    format!(
                        "unexpected `{}` right after `{}`; separate items with a space",
                        escape::text(c.encode_utf8(&mut [0; 4])),
                        escape::text(&self.text[start..self.pos]).cut_at(SHOWN_BYTES)
                    ),
                ))
            }
        }
    }

    /// An atom that lexpr reads as a number must be one number in full
    /// (lexpr would otherwise read `1-2` as two data).
    fn check_number(&self, start: usize) -> std::result::Result<(), Refusal> {
        let atom = &self.bytes[start..self.pos];
        let unsigned = match atom {
            [b'+' | b'-', rest @ ..] => rest,
            _ => atom,
        };
        if !unsigned.first().is_some_and(u8::is_ascii_digit) || is_decimal(unsigned) {
            return Ok(());
        }
        Err((
            self.at(start),
            format!(
                "`{}` is not a number fruix reads; write decimal numbers such as 12, -3, 0.5 or 1.5e3 (a point has digits on both sides, and an exponent follows a point: 1.0e3, not 1e3)",
                escape::bytes(atom).cut_at(SHOWN_BYTES)
            ),
        ))
    }
}

/// Bytes of Scheme identifiers and numbers.
fn is_atom_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&*/:<=>?@^_~.+-#".contains(&b)
}

/// `DIGITS[.DIGITS[(e|E)[+|-]DIGITS]]`: what lexpr reads as a number.
/// Guile reads `1.` and `1e3` too, but lexpr does not (an exponent only
/// follows a fraction), so the scan refuses them with a message saying
/// what to write, not lexpr's bare "invalid number".
fn is_decimal(s: &[u8]) -> bool {
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = digits(s);
    if s.get(i) != Some(&b'.') {
        return i == s.len();
    }
    let fraction = digits(&s[i + 1..]);
    if fraction == 0 {
        return false;
    }
    i += 1 + fraction;
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exponent = digits(&s[i..]);
        if exponent == 0 {
            return false;
        }
        i += exponent;
    }
    i == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Result<()> {
        check(Path::new("m.scm"), text).map(drop)
    }

    fn refusal(text: &str) -> (usize, usize, String) {
        match scan(text) {
            Err(Error::Syntax {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn fruix_files_pass() {
        let m = crate::testing::sample_metadata("local", "20260405T213444Z");
        scan(&m.to_scheme()).unwrap();
        scan(
            "(a (b 1 -2 +3 4.5 6.0e7 -8.9E+10 #t #f) [c] #(d) 'e `(f ,g ,@h) #\\( #\\space \"s\")",
        )
        .unwrap();
        scan("(x ; comment ((((\n #| block (((( #| nested |# |# y)").unwrap();
        scan("(format-version 1) (speed 1.0) (a.b c/d e:f <=> ...)").unwrap();
    }

    #[test]
    fn deep_quotes_are_refused_with_their_line() {
        let text = format!("(fruix-special-modes\n  (modes {}x))", "'".repeat(20_000));
        let (line, column, message) = refusal(&text);
        // The 63rd quote, after the 9 characters of `  (modes `.
        assert_eq!((line, column), (2, 9 + MAX_DEPTH - 1));
        assert!(message.contains("more than 64 levels"), "{message}");
        for prefix in ["`", ",", ",@", "#'", "#`", "#,", "#,@", "' "] {
            let text = format!("(a {}x)", prefix.repeat(MAX_DEPTH));
            assert!(scan(&text).is_err(), "{prefix:?}");
        }
    }

    #[test]
    fn deep_lists_are_refused_and_shallow_ones_pass() {
        let (line, _, message) = refusal(&format!("\n{}", "(".repeat(100_000)));
        assert_eq!(line, 2);
        assert!(message.contains("nested more than 64"), "{message}");
        let ok = format!("{}x{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        scan(&ok).unwrap();
        let deep = format!(
            "{}x{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(scan(&deep).is_err());
        let mixed = format!(
            "{}x{}",
            "'[#(".repeat(MAX_DEPTH / 3 + 1),
            "])".repeat(MAX_DEPTH)
        );
        assert!(scan(&mixed).is_err());
    }

    #[test]
    fn quotes_are_released_by_their_datum() {
        // 100 quoted items side by side nest one level each, not 100.
        scan(&format!("(a {})", "'x ".repeat(100))).unwrap();
        scan(&format!("(a {})", "'(x) ".repeat(100))).unwrap();
    }

    #[test]
    fn nesting_inside_strings_comments_and_characters_is_not_structure() {
        let deep = "(".repeat(10_000);
        scan(&format!("(a \"{deep}\\\"{deep}\")")).unwrap();
        scan(&format!("(a \"{}\")", "'".repeat(20_000))).unwrap();
        scan(&format!("(a ; {deep}\n b)")).unwrap();
        scan(&format!("(a #| {deep} |# b)")).unwrap();
        scan(&format!("(a {})", "#\\( ".repeat(1000))).unwrap();
        scan("(a #\\\" b)").unwrap();
    }

    #[test]
    fn a_list_longer_than_the_cell_cap_is_refused_where_it_passes_it() {
        scan(&format!("({})", "a ".repeat(MAX_CELLS))).unwrap();
        let text = format!("(\n{})", "a ".repeat(MAX_CELLS + 1));
        let (line, column, message) = refusal(&text);
        assert_eq!((line, column), (2, 2 * MAX_CELLS + 1));
        assert!(message.contains("more than 4096 list cells"), "{message}");
        assert!(scan(&format!("({})", "\"\" ".repeat(MAX_CELLS + 1))).is_err());
        // A quote prefix is two cells: `'b` sits at three.
        scan(&format!("(a {})", "'b ".repeat(MAX_CELLS - 3))).unwrap();
        scan(&format!("({}'b)", "a ".repeat(MAX_CELLS - 3))).unwrap();
        assert!(scan(&format!("({}'b)", "a ".repeat(MAX_CELLS - 2))).is_err());
    }

    #[test]
    fn cells_add_up_along_the_path_not_across_the_file() {
        // Each list's place counts for what is inside it...
        let half = MAX_CELLS / 2;
        let inner = format!("({})", "x ".repeat(half));
        scan(&format!("({}{inner})", "a ".repeat(half - 1))).unwrap();
        let deeper = format!("({})", "x ".repeat(half + 1));
        assert!(scan(&format!("({}{deeper})", "a ".repeat(half - 1))).is_err());
        // ... and a closed list gives its cells back: 14,000 data in short
        // lists pass (a machines file of 1,000 machines is of this shape).
        let machines =
            "(machine (name \"m\") (host \"h\") (port 22) (parallel-builds 2)) ".repeat(1000);
        scan(&format!("(fruix-machines (format-version 1) {machines})")).unwrap();
    }

    #[test]
    fn too_many_data_are_refused() {
        // Groups of 127 short lists keep every list short: 1,018 data a group.
        let group = format!("(g {})", "(b c d e f g h) ".repeat(127));
        let groups = |n: usize| format!("(a {})", group.repeat(n));
        scan(&groups(64)).unwrap();
        let (_, _, message) = refusal(&groups(65));
        assert!(message.contains("more than 65536 data"), "{message}");
    }

    #[test]
    fn tokens_lexpr_would_split_are_refused() {
        for text in [
            "(a b\"c\")",
            "(a 1\"c\")",
            "(a b'c)",
            "(a 1-1-1)",
            "(a 12x)",
            "(a 6e7)",
            "(a #true)",
            "(a #t#t)",
            "(a #x1F)",
            "(a #u8(1))",
            "(a -\"b\")",
            "(a b|c|)",
            "(a {b})",
            "(a b\u{c}c)",
            "(a \u{1b}[31m)",
            "(a é)",
            "(a #\\a\"b\")",
        ] {
            let (line, _, message) = refusal(text);
            assert_eq!(line, 1, "{text:?}");
            assert!(!message.contains('\u{1b}'), "{message}");
        }
        let (_, column, message) = refusal("(a \u{1b}[31m)");
        assert_eq!(column, 4);
        assert!(message.contains("`\\033` (U+001B)"), "{message}");
    }

    /// Regression: an unclosed list was reported at the end of the file, and
    /// the message repeated its location.
    #[test]
    fn an_unclosed_parenthesis_is_named_where_it_opens() {
        let text = "(fruix-matrix\n  (format-version 1)\n  (axes (executor \"local\")\n";
        let (line, column, message) = refusal(text);
        assert_eq!((line, column), (3, 3), "{message}");
        assert_eq!(message, "this parenthesis is never closed; add its `)`");
    }
}
