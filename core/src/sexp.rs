//! Strict reading and readable writing of Fruix's S-expression files.
//!
//! Fruix metadata files (`promotion.scm`, store object metadata, machines and
//! executors files) are records: `(HEAD (field value...) ...)`. [`Record`] reads
//! one with line numbers in every error, refusing unknown and duplicate fields.
//! [`Writer`] prints records one field per line so that Guile's `read`, the
//! Fruix reports and a human all read them alike.
//!
//! Metadata may come from a hostile guest, so reading is bounded: a text is
//! at most [`MAX_METADATA_BYTES`] long, and a linear pre-scan (`sexp/scan.rs`)
//! refuses nesting deeper than [`MAX_DEPTH`], a datum more than [`MAX_CELLS`]
//! list cells deep and more than [`MAX_DATA`] data before lexpr (which
//! recurses) parses anything. Strings and symbols may not
//! hold control characters (U+0000–U+001F, U+007F–U+009F), except for the
//! newlines and tabs that [`Record::multiline_strings`] allows. Values echoed
//! in messages are escaped and cut ([`crate::escape`]).

mod controls;
mod scan;
mod write;

use std::path::{Path, PathBuf};

use lexpr::datum::Ref;
use lexpr::Value;

use crate::error::{Error, MetadataFileProblem, Result};
use crate::escape;
use crate::fsutil::MAX_METADATA_BYTES;
use controls::{first_control_inside, Controls};

pub use scan::{MAX_CELLS, MAX_DATA, MAX_DEPTH};
pub use write::{field, string_field, Writer};

/// Refuses a `value` a metadata reader would refuse in a string field: one
/// holding a control character (see `sexp/controls.rs`). For writers that
/// check what they are given before any work starts; the message names
/// `what` and the character.
pub fn check_text(what: &str, value: &str) -> std::result::Result<(), String> {
    match Controls::Refused.first_refused(value) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{what} {} {}",
            escape::quoted(value),
            Controls::Refused.message(c)
        )),
    }
}

/// How many bytes of a value from the file a message shows.
const SHOWN_BYTES: usize = 80;

/// `value` as a message shows it: printed, escaped and cut.
pub fn shown(value: &Value) -> String {
    escape::text(&value.to_string())
        .cut_at(SHOWN_BYTES)
        .to_string()
}

/// Parses `text` (the contents of `path`) as exactly one S-expression record
/// whose head symbol is `head`, and calls `read` on it.
///
/// The datum is kept alive for the call so that field errors carry line numbers.
/// The text is bounded first (see the module documentation): no input makes
/// the reader recurse without bound.
pub fn read_record<T>(
    path: &Path,
    text: &str,
    head: &str,
    read: impl FnOnce(&mut Record<'_>) -> Result<T>,
) -> Result<T> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(Error::MetadataFile {
            path: path.to_path_buf(),
            problem: MetadataFileProblem::TooLarge {
                limit: MAX_METADATA_BYTES,
            },
        });
    }
    // Errors speak of `text`: `readable` has its bytes and lines.
    let readable = scan::blank(text, &scan::check(path, text)?);
    // Not `from_str`: its reader finds each datum's line by counting from the
    // start of the text (lexpr expects positions only for errors, but spans
    // take one per datum), which made reading quadratic: 48 s for a machines
    // file of 1,500 machines. The `io::Read` reader counts as it goes.
    let mut parser = lexpr::Parser::from_reader(readable.as_bytes());
    let datum = match parser.next_datum() {
        Ok(Some(datum)) => datum,
        Ok(None) => {
            return Err(Error::InvalidMetadata {
                path: path.to_path_buf(),
                field: head.to_string(),
                line: None,
                message: format!("file is empty; expected a ({head} ...) record"),
            })
        }
        Err(e) => return Err(syntax_error(path, text, &e)),
    };
    match parser.next_datum() {
        Ok(None) => {}
        Ok(Some(extra)) => {
            return Err(Error::InvalidMetadata {
                path: path.to_path_buf(),
                field: head.to_string(),
                line: Some(extra.span().start().line()),
                message: format!("unexpected data after the ({head} ...) record"),
            })
        }
        Err(e) => return Err(syntax_error(path, text, &e)),
    }
    let mut record = Record::new(path, datum.as_ref(), head, head)?;
    let value = read(&mut record)?;
    record.finish()?;
    Ok(value)
}

fn syntax_error(path: &Path, text: &str, e: &lexpr::parse::Error) -> Error {
    // lexpr counts the bytes it has read on the line, so its column is the
    // 1-based byte column of the last byte it read (0 when it read none of
    // the line yet): made a column in characters like the scan's.
    let (line, column) = match e.location() {
        Some(l) => {
            let line_start = line_start(text, l.line());
            let at = line_start + l.column().saturating_sub(1);
            (l.line(), char_column(text, line_start, at))
        }
        None => (0, 0),
    };
    // lexpr's message ends with the location, which the error states already.
    let message = e.to_string();
    let message = match message.rsplit_once(" at line ") {
        Some((what, _)) => what.to_string(),
        None => message,
    };
    Error::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// The byte offset where 1-based line `line` of `text` starts (lines end
/// at `\n`, as both readers count them); the end of `text` past its last line.
fn line_start(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .nth(line - 2)
        .map_or(text.len(), |(i, _)| i + 1)
}

/// The column of [`Error::Syntax`]: the 1-based column, in characters
/// (Unicode scalar values), of the character holding byte `at` of `text`, on
/// the line starting at byte `line_start`. At the end of the text it is one
/// past the line's last character.
fn char_column(text: &str, line_start: usize, at: usize) -> usize {
    let bytes = text.as_bytes();
    let end = at.min(bytes.len());
    let is_start = |b: &u8| (*b & 0xC0) != 0x80;
    let before = bytes[line_start.min(end)..end]
        .iter()
        .filter(|b| is_start(b))
        .count();
    // A byte inside a character belongs to one already counted.
    match bytes.get(at) {
        Some(b) if !is_start(b) => before,
        _ => before + 1,
    }
}

/// An integer field's value, as its errors say (lexpr reads a larger one as a float).
const INTEGER: &str = "an integer (of at most 9223372036854775807)";

/// A record being read: `(head (name value...) ...)`.
///
/// Each accessor consumes its field; [`Record::finish`] then refuses any field
/// that nobody asked for.
pub struct Record<'a> {
    path: PathBuf,
    /// Dotted field path of this record, for messages (`freebsd-base`).
    name: String,
    line: usize,
    fields: Vec<Field<'a>>,
    /// Every field name asked for so far: the names this record knows, for
    /// suggesting one in place of an unknown field.
    asked: Vec<String>,
    /// The line of each field read so far, for [`Record::invalid`].
    read_at: Vec<(String, usize)>,
}

struct Field<'a> {
    name: String,
    line: usize,
    item: Ref<'a>,
    values: Vec<Ref<'a>>,
}

impl<'a> Record<'a> {
    fn new(path: &Path, datum: Ref<'a>, head: &str, name: &str) -> Result<Self> {
        let line = datum.span().start().line();
        let invalid = |line: usize, message: String| Error::InvalidMetadata {
            path: path.to_path_buf(),
            field: name.to_string(),
            line: Some(line),
            message,
        };
        let list = |d: Ref<'a>, line: usize, expected: &str| {
            d.list_iter().ok_or_else(|| {
                invalid(
                    line,
                    format!("expected {expected}, found {}", shown(d.value())),
                )
            })
        };
        let mut items = list(datum, line, &format!("a list ({head} ...)"))?;
        match items.next() {
            Some(h) if h.value().as_symbol() == Some(head) => {}
            Some(h) => {
                return Err(invalid(
                    line,
                    format!("expected ({head} ...), found ({} ...)", shown(h.value())),
                ))
            }
            None => return Err(invalid(line, format!("expected ({head} ...), found ()"))),
        }
        let mut fields = Vec::new();
        for item in items {
            let item_line = item.span().start().line();
            let mut parts = list(item, item_line, "a (field value...) list")?;
            let field = parts
                .next()
                .and_then(|p| p.value().as_symbol().map(str::to_string))
                .ok_or_else(|| {
                    invalid(
                        item_line,
                        format!(
                            "expected a (field value...) list starting with a symbol, found {}",
                            shown(item.value())
                        ),
                    )
                })?;
            fields.push(Field {
                name: field,
                line: item_line,
                item,
                values: parts.collect(),
            });
        }
        Ok(Record {
            path: path.to_path_buf(),
            name: name.to_string(),
            line,
            fields,
            asked: Vec::new(),
            read_at: Vec::new(),
        })
    }

    fn field_name(&self, field: &str) -> String {
        if self.name.starts_with("fruix-") {
            field.to_string()
        } else {
            format!("{}.{field}", self.name)
        }
    }

    /// An [`Error::InvalidMetadata`] for `field` of this record.
    pub fn error(&self, field: &str, line: Option<usize>, message: impl Into<String>) -> Error {
        Error::InvalidMetadata {
            path: self.path.clone(),
            field: self.field_name(field),
            line: line.or(Some(self.line)),
            message: message.into(),
        }
    }

    /// An [`Error::InvalidMetadata`] for `field`, at its line once read
    /// (else at the record's): a value the reader refuses.
    pub fn invalid(&self, field: &str, message: impl Into<String>) -> Error {
        let line = self.read_at.iter().find(|(name, _)| name == field);
        self.error(field, line.map(|(_, line)| *line), message)
    }

    /// Removes and returns every occurrence of `field`.
    fn take_all(&mut self, field: &str) -> Vec<Field<'a>> {
        self.asked.push(field.to_string());
        let (taken, kept) = std::mem::take(&mut self.fields)
            .into_iter()
            .partition(|f| f.name == field);
        self.fields = kept;
        self.read_at
            .extend(taken.first().map(|f| (field.to_string(), f.line)));
        taken
    }

    fn take(&mut self, field: &str) -> Result<Option<Field<'a>>> {
        let mut taken = self.take_all(field);
        if taken.len() > 1 {
            return Err(self.error(
                field,
                Some(taken[1].line),
                "given more than once; give it once",
            ));
        }
        Ok(taken.pop())
    }

    fn required(&mut self, field: &str) -> Result<Field<'a>> {
        match self.take(field)? {
            Some(f) => Ok(f),
            // A misspelling of it, still unclaimed, is the likelier mistake:
            // name it at its line.
            None => Err(
                match self.fields.iter().find(|f| is_close(&f.name, field)) {
                    Some(typo) => self.error(
                        &typo.name,
                        Some(typo.line),
                        format!("unknown field; did you mean `{field}`?"),
                    ),
                    None => self.invalid(field, "missing; this field is required"),
                },
            ),
        }
    }

    fn single(&self, f: &Field<'a>) -> Result<Ref<'a>> {
        match f.values.as_slice() {
            [v] => Ok(*v),
            [] => Err(self.error(&f.name, Some(f.line), "has no value; expected exactly one")),
            _ => Err(self.error(
                &f.name,
                Some(f.line),
                "has several values; expected exactly one",
            )),
        }
    }

    /// Converts one value of `f`; a string or symbol must hold no control
    /// character but those `controls` allows.
    fn convert<T>(
        &self,
        f: &Field<'a>,
        value: Ref<'a>,
        expected: &str,
        controls: Controls,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T> {
        let converted = convert(value.value()).ok_or_else(|| {
            self.error(
                &f.name,
                Some(f.line),
                format!("expected {expected}, found {}", shown(value.value())),
            )
        })?;
        let text = value.value().as_str().or_else(|| value.value().as_symbol());
        match text.and_then(|t| controls.first_refused(t)) {
            Some(c) => Err(self.error(
                &f.name,
                Some(value.span().start().line()),
                controls.message(c),
            )),
            None => Ok(converted),
        }
    }

    fn opt_single<T>(
        &mut self,
        field: &str,
        expected: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.take(field)? {
            None => Ok(None),
            Some(f) => {
                let value = self.single(&f)?;
                self.convert(&f, value, expected, Controls::Refused, convert)
                    .map(Some)
            }
        }
    }

    fn req_single<T>(
        &mut self,
        field: &str,
        expected: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T> {
        let f = self.required(field)?;
        let value = self.single(&f)?;
        self.convert(&f, value, expected, Controls::Refused, convert)
    }

    /// A required field holding one string.
    pub fn string(&mut self, field: &str) -> Result<String> {
        self.req_single(field, "a string", |v| v.as_str().map(str::to_string))
    }

    /// An optional field holding one string.
    pub fn opt_string(&mut self, field: &str) -> Result<Option<String>> {
        self.opt_single(field, "a string", |v| v.as_str().map(str::to_string))
    }

    /// A required field holding one symbol or string (`(name world)`).
    pub fn name(&mut self, field: &str) -> Result<String> {
        self.req_single(field, "a symbol or string", |v| match v {
            Value::Symbol(s) => Some(s.to_string()),
            Value::String(s) => Some(s.to_string()),
            _ => None,
        })
    }

    /// The required `format-version` field, refused by number unless it is
    /// `supported`.
    pub fn format_version(&mut self, supported: i64) -> Result<()> {
        let version = self.integer("format-version")?;
        if version != supported {
            return Err(Error::UnsupportedFormatVersion {
                path: self.path.clone(),
                version,
                supported,
            });
        }
        Ok(())
    }

    /// A required field holding one integer (at most [`i64::MAX`]).
    pub fn integer(&mut self, field: &str) -> Result<i64> {
        self.req_single(field, INTEGER, Value::as_i64)
    }

    /// An optional field holding one integer.
    pub fn opt_integer(&mut self, field: &str) -> Result<Option<i64>> {
        self.opt_single(field, INTEGER, Value::as_i64)
    }

    /// An optional integer field whose value fits `T` and is above zero
    /// (`positive`) or at least zero; `what` names such a value in the
    /// error (`a positive count`, `a TCP port (1 to 65535)`).
    pub fn opt_count<T: TryFrom<i64> + PartialOrd + Default>(
        &mut self,
        field: &str,
        positive: bool,
        what: &str,
    ) -> Result<Option<T>> {
        let line = self.field_line(field);
        let Some(n) = self.opt_integer(field)? else {
            return Ok(None);
        };
        // Of the right sign but too large for `T`: out of range, not "not
        // positive".
        let signed_well = if positive { n > 0 } else { n >= 0 };
        T::try_from(n)
            .ok()
            .filter(|v| {
                if positive {
                    *v > T::default()
                } else {
                    *v >= T::default()
                }
            })
            .map(Some)
            .ok_or_else(|| {
                let problem = if signed_well {
                    format!("{n} is out of range for {what}")
                } else {
                    format!("{n} is not {what}")
                };
                self.error(field, line, problem)
            })
    }

    /// An optional field holding one number (integer or real).
    pub fn opt_number(&mut self, field: &str) -> Result<Option<f64>> {
        self.opt_single(field, "a number", Value::as_f64)
    }

    /// An optional field holding `#t` or `#f`.
    pub fn opt_bool(&mut self, field: &str) -> Result<Option<bool>> {
        self.opt_single(field, "#t or #f", Value::as_bool)
    }

    /// An optional field holding zero or more strings (`(make-flags "a" "b")`).
    pub fn strings(&mut self, field: &str) -> Result<Option<Vec<String>>> {
        self.strings_with(field, Controls::Refused)
    }

    /// Like [`Record::strings`], for commands and scripts: the strings may
    /// hold newlines and tabs (`(command "sh" "-c" "a\nb")`), but no other
    /// control character. Use it only where a value is meant to span lines.
    pub fn multiline_strings(&mut self, field: &str) -> Result<Option<Vec<String>>> {
        self.strings_with(field, Controls::NewlineAndTab)
    }

    fn strings_with(&mut self, field: &str, controls: Controls) -> Result<Option<Vec<String>>> {
        match self.take(field)? {
            None => Ok(None),
            Some(f) => f
                .values
                .iter()
                .map(|v| {
                    self.convert(&f, *v, "a string", controls, |v| {
                        v.as_str().map(str::to_string)
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    /// A required nested record `(field (sub value) ...)`.
    pub fn record(&mut self, field: &str) -> Result<Record<'a>> {
        self.opt_record(field)?
            .ok_or_else(|| self.invalid(field, "missing; this field is required"))
    }

    /// An optional nested record `(field (sub value) ...)`.
    pub fn opt_record(&mut self, field: &str) -> Result<Option<Record<'a>>> {
        match self.take(field)? {
            None => Ok(None),
            Some(f) => Record::new(&self.path, f.item, field, &self.field_name(field)).map(Some),
        }
    }

    /// A required list of child records: `(field (child ...) (child ...))`.
    pub fn children(&mut self, field: &str, child: &str) -> Result<Vec<Record<'a>>> {
        let f = self.required(field)?;
        let name = self.field_name(field);
        f.values
            .iter()
            .enumerate()
            .map(|(i, v)| Record::new(&self.path, *v, child, &format!("{name}[{i}]")))
            .collect()
    }

    /// Every occurrence of a repeatable child record `(field ...)`, in order.
    pub fn repeated(&mut self, field: &str) -> Result<Vec<Record<'a>>> {
        let name = self.field_name(field);
        self.take_all(field)
            .iter()
            .enumerate()
            .map(|(i, f)| Record::new(&self.path, f.item, field, &format!("{name}[{i}]")))
            .collect()
    }

    /// The raw values of an optional field, with its line, for readers with
    /// their own shapes. No string, symbol or character inside them may be
    /// or hold a control character.
    pub fn raw(&mut self, field: &str) -> Result<Option<(usize, Vec<Value>)>> {
        let Some(f) = self.take(field)? else {
            return Ok(None);
        };
        for value in &f.values {
            if let Some(c) = first_control_inside(value.value()) {
                return Err(self.error(
                    &f.name,
                    Some(value.span().start().line()),
                    Controls::Refused.message(c),
                ));
            }
        }
        Ok(Some((
            f.line,
            f.values.iter().map(|v| v.value().clone()).collect(),
        )))
    }

    /// The line of `field`, when it is present and not yet consumed: for
    /// errors about a value that read well but is not allowed.
    pub fn field_line(&self, field: &str) -> Option<usize> {
        self.fields.iter().find(|f| f.name == field).map(|f| f.line)
    }

    /// The line this record starts on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Refuses fields that no accessor consumed.
    pub fn finish(self) -> Result<()> {
        let Some(f) = self.fields.first() else {
            return Ok(());
        };
        let message = match self.asked.iter().find(|known| is_close(&f.name, known)) {
            Some(known) => format!("unknown field; did you mean `{known}`?"),
            None => "unknown field; remove it or check its spelling".to_string(),
        };
        Err(self.error(&f.name, Some(f.line), message))
    }
}

/// Whether `a` is probably a misspelling of `b` (a small edit distance for
/// their length).
pub fn is_close(a: &str, b: &str) -> bool {
    a != b && strsim::damerau_levenshtein(a, b) <= (b.len() / 4).clamp(1, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::invalid_metadata as invalid;

    /// Reads `text`, an `(fruix-x ...)` record, with `read` (for these
    /// tests and those of the submodules).
    pub(super) fn read<T>(
        text: &str,
        read: impl FnOnce(&mut Record<'_>) -> Result<T>,
    ) -> Result<T> {
        read_record(Path::new("m.scm"), text, "fruix-x", read)
    }

    /// Issue 10, class 4: 20,000 quote prefixes overflowed the stack (exit 134).
    #[test]
    fn deep_nesting_is_a_syntax_error_not_a_crash() {
        for text in [
            format!("(fruix-x\n (a {}x))", "'".repeat(20_000)),
            format!("(fruix-x\n (a {}x))", "`".repeat(20_000)),
            format!("(fruix-x\n (a {}", "(".repeat(100_000)),
            format!("(fruix-x)\n{}x", "'".repeat(20_000)),
        ] {
            match read(&text, |_| Ok(())) {
                Err(e @ Error::Syntax { line: 2, .. }) => {
                    assert!(e.to_string().starts_with("m.scm:2:"), "{e}")
                }
                other => panic!("expected a syntax error on line 2, got {other:?}"),
            }
        }
    }

    /// Regression: `1e3` and `1.`, which Guile reads, passed the scan and
    /// lexpr refused them with a bare "invalid number". Every number the
    /// scan lets through is one lexpr reads, and the others are refused
    /// saying what to write.
    #[test]
    fn numbers_are_read_or_refused_saying_what_to_write() {
        for (text, value) in [
            ("12", 12.0),
            ("-3", -3.0),
            ("+0.5", 0.5),
            ("1.5e3", 1500.0),
            ("-1.5E+3", -1500.0),
            ("2.5e-1", 0.25),
            ("007", 7.0),
        ] {
            let read = read(&format!("(fruix-x (a {text}))"), |r| r.opt_number("a"));
            assert_eq!(read.unwrap(), Some(value), "{text}");
        }
        for text in ["1e3", "1E3", "-1e-3", "1.", "1.e3", "1.5e", "1.5e+"] {
            match read(&format!("(fruix-x\n (a {text}))"), |r| r.opt_number("a")) {
                Err(Error::Syntax {
                    line: 2,
                    column: 5,
                    message,
                    ..
                }) => assert_eq!(
                    message,
                    format!("`{text}` is not a number fruix reads; write decimal numbers such as 12, -3, 0.5 or 1.5e3 (a point has digits on both sides, and an exponent follows a point: 1.0e3, not 1e3)")
                ),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_inside_a_string_is_just_a_string() {
        let deep = format!("{}{}", "(".repeat(100_000), "'".repeat(20_000));
        let text = format!("(fruix-x (a \"{deep}\"))");
        assert_eq!(read(&text, |r| r.string("a")).unwrap(), deep);
    }

    #[test]
    fn a_text_over_the_size_cap_is_refused_before_parsing() {
        let text = format!("(fruix-x (a \"{}\"))", "x".repeat(MAX_METADATA_BYTES));
        match read(&text, |r| r.string("a")) {
            Err(Error::MetadataFile {
                problem: MetadataFileProblem::TooLarge { .. },
                ..
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    /// The longest list and the most data the pre-scan lets through are
    /// read, cloned, compared and freed within half of the 2 MiB stack of a
    /// Rust thread.
    #[test]
    fn the_largest_accepted_records_fit_a_thread_stack() {
        // `fruix-x` and `(a ...)` are cells 1 and 2, `a` is cell 3.
        let long = format!("(fruix-x (a {}))", "b ".repeat(MAX_CELLS - 3));
        // 64 groups of 127 lists of 8 data: 65,154 data, no list long.
        let group = format!("(g {})", "(b c d e f g h) ".repeat(127));
        let many = format!("(fruix-x (a {}))", group.repeat(64));
        for (text, items) in [(long, MAX_CELLS - 3), (many, 64)] {
            let reader = std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    read(&text, |r| {
                        let (_, v) = r.raw("a")?.unwrap();
                        let copy = v.clone();
                        assert!(copy == v);
                        Ok(copy.len())
                    })
                })
                .unwrap();
            assert_eq!(reader.join().unwrap().unwrap(), items);
        }
    }

    #[test]
    fn values_echoed_in_messages_are_escaped_and_cut() {
        let text = format!("(fruix-x (a b{}))", "c".repeat(500));
        let (_, _, message) = invalid(read(&text, |r| r.string("a")));
        assert!(message.contains("…[") && message.len() < 250, "{message}");
        let (_, _, message) = invalid(read("(fruix-x (a #\\esc))", |r| r.string("a")));
        assert!(!message.contains('\u{1b}'), "{message:?}");
    }

    /// Regression: `(guest-hostname ...)` was reported as `guest-host-name`
    /// missing, at the record's first line.
    #[test]
    fn a_misspelt_field_is_named_at_its_line_with_the_known_one() {
        // A misspelt optional field is found at the end, with the suggestion.
        for (misspelt, known, required) in [
            ("guest-hostname", "guest-host-name", true),
            ("comit", "commit", false),
        ] {
            let text = format!("(fruix-x\n  (run-id \"r\")\n  ({misspelt} \"h\"))");
            let (field, line, message) = invalid(read(&text, |r| {
                r.string("run-id")?;
                if required {
                    r.string(known).map(Some)
                } else {
                    r.opt_string(known)
                }
            }));
            assert_eq!((field.as_str(), line), (misspelt, Some(3)));
            assert_eq!(message, format!("unknown field; did you mean `{known}`?"));
        }
    }

    /// Regression: the limits scan gave a 0-based byte offset as the
    /// column and lexpr a 1-based byte count, so one place had two columns,
    /// and neither was an editor's on a line with non-ASCII text.
    #[test]
    fn both_readers_give_one_place_the_same_column_in_characters_from_one() {
        let place = |text: &str| match read(text, |_| Ok(())) {
            Err(Error::Syntax {
                line,
                column,
                message,
                ..
            }) => ((line, column), message),
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        };
        // `é` is one character of two bytes: the offending `#` and `]` are
        // the 9th character of line 2 (its 11th byte).
        let (scanned, why) = place("(fruix-x\n(a \"\u{e9}\u{e9}\")#x1F)");
        assert!(why.contains("not supported"), "the scan refused it: {why}");
        let (parsed, why) = place("(fruix-x\n(a \"\u{e9}\u{e9}\")])");
        assert!(why.contains("mismatched"), "lexpr refused it: {why}");
        assert_eq!(scanned, (2, 9));
        assert_eq!(parsed, (2, 9));
        // At the very start of a line, both say column 1.
        let (scanned, _) = place("(fruix-x\n#x1F)");
        let (parsed, _) = place("(fruix-x\n])");
        assert_eq!((scanned, parsed), ((2, 1), (2, 1)));
    }
}
