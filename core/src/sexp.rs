//! Strict reading and readable writing of Fruix's S-expression files.
//!
//! Fruix metadata files (`promotion.scm`, store object metadata, machines and
//! executors files) are records: `(HEAD (field value...) ...)`. [`Record`] reads
//! one with line numbers in every error, refusing unknown and duplicate fields.
//! [`Writer`] prints records one field per line so that Guile's `read`, the
//! Fruix reports and a human all read them alike.

use std::path::{Path, PathBuf};

use lexpr::datum::Ref;
use lexpr::Value;

use crate::error::{Error, Result};

/// Parses `text` (the contents of `path`) as exactly one S-expression record
/// whose head symbol is `head`, and calls `read` on it.
///
/// The datum is kept alive for the call so that field errors carry line numbers.
pub fn read_record<T>(
    path: &Path,
    text: &str,
    head: &str,
    read: impl FnOnce(&mut Record<'_>) -> Result<T>,
) -> Result<T> {
    let mut parser = lexpr::Parser::from_str(text);
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
        Err(e) => return Err(syntax_error(path, &e)),
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
        Err(e) => return Err(syntax_error(path, &e)),
    }
    let mut record = Record::new(path, datum.as_ref(), head, head)?;
    let value = read(&mut record)?;
    record.finish()?;
    Ok(value)
}

fn syntax_error(path: &Path, e: &lexpr::parse::Error) -> Error {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    Error::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message: e.to_string(),
    }
}

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
        let mut items = datum.list_iter().ok_or_else(|| {
            invalid(
                line,
                format!("expected a list ({head} ...), found {}", datum.value()),
            )
        })?;
        match items.next() {
            Some(h) if h.value().as_symbol() == Some(head) => {}
            Some(h) => {
                return Err(invalid(
                    line,
                    format!("expected ({head} ...), found ({} ...)", h.value()),
                ))
            }
            None => return Err(invalid(line, format!("expected ({head} ...), found ()"))),
        }
        let mut fields = Vec::new();
        for item in items {
            let item_line = item.span().start().line();
            let mut parts = item.list_iter().ok_or_else(|| {
                invalid(
                    item_line,
                    format!("expected a (field value...) list, found {}", item.value()),
                )
            })?;
            let field = parts
                .next()
                .and_then(|p| p.value().as_symbol().map(str::to_string))
                .ok_or_else(|| {
                    invalid(
                        item_line,
                        format!(
                            "expected a (field value...) list starting with a symbol, found {}",
                            item.value()
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

    /// Removes and returns every occurrence of `field`.
    fn take_all(&mut self, field: &str) -> Vec<Field<'a>> {
        let (taken, kept) = std::mem::take(&mut self.fields)
            .into_iter()
            .partition(|f| f.name == field);
        self.fields = kept;
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
        self.take(field)?
            .ok_or_else(|| self.error(field, None, "missing; this field is required"))
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

    fn convert<T>(
        &self,
        f: &Field<'a>,
        value: Ref<'a>,
        expected: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T> {
        convert(value.value()).ok_or_else(|| {
            self.error(
                &f.name,
                Some(f.line),
                format!("expected {expected}, found {}", value.value()),
            )
        })
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
                self.convert(&f, value, expected, convert).map(Some)
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
        self.convert(&f, value, expected, convert)
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

    /// A required field holding one integer.
    pub fn integer(&mut self, field: &str) -> Result<i64> {
        self.req_single(field, "an integer", Value::as_i64)
    }

    /// An optional field holding one integer.
    pub fn opt_integer(&mut self, field: &str) -> Result<Option<i64>> {
        self.opt_single(field, "an integer", Value::as_i64)
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
        match self.take(field)? {
            None => Ok(None),
            Some(f) => f
                .values
                .iter()
                .map(|v| self.convert(&f, *v, "a string", |v| v.as_str().map(str::to_string)))
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    /// A required nested record `(field (sub value) ...)`.
    pub fn record(&mut self, field: &str) -> Result<Record<'a>> {
        self.opt_record(field)?
            .ok_or_else(|| self.error(field, None, "missing; this field is required"))
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
    /// their own shapes.
    pub fn raw(&mut self, field: &str) -> Result<Option<(usize, Vec<Value>)>> {
        Ok(self
            .take(field)?
            .map(|f| (f.line, f.values.iter().map(|v| v.value().clone()).collect())))
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
        match self.fields.first() {
            Some(f) => Err(self.error(
                &f.name,
                Some(f.line),
                "unknown field; remove it or check its spelling",
            )),
            None => Ok(()),
        }
    }
}

/// Builds a `(name values...)` field value.
pub fn field(name: &str, values: impl IntoIterator<Item = Value>) -> Value {
    let mut items = vec![Value::symbol(name)];
    items.extend(values);
    Value::list(items)
}

/// Builds a `(name "string")` field value.
pub fn string_field(name: &str, value: &str) -> Value {
    field(name, [Value::string(value)])
}

/// Writes a record one field per line, in the layout of the Fruix reports.
///
/// ```
/// use fruix_core::sexp::{Writer, string_field};
/// let mut w = Writer::new("fruix-example");
/// w.field(string_field("run-id", "20260405T213444Z"));
/// assert_eq!(w.finish(), "(fruix-example\n  (run-id \"20260405T213444Z\"))\n");
/// ```
pub struct Writer {
    text: String,
}

impl Writer {
    /// Starts a record with head symbol `head`.
    pub fn new(head: &str) -> Self {
        Writer {
            text: format!("({head}"),
        }
    }

    /// Adds one field on its own line.
    pub fn field(&mut self, value: Value) -> &mut Self {
        self.text.push_str("\n  ");
        self.text
            .push_str(&lexpr::to_string(&value).expect("printing a value to a string cannot fail"));
        self
    }

    /// Adds a field whose children each take their own line: `(name\n    child...)`.
    pub fn list_field(
        &mut self,
        name: &str,
        children: impl IntoIterator<Item = Value>,
    ) -> &mut Self {
        self.text.push_str("\n  (");
        self.text.push_str(name);
        for child in children {
            self.text.push_str("\n    ");
            self.text.push_str(
                &lexpr::to_string(&child).expect("printing a value to a string cannot fail"),
            );
        }
        self.text.push(')');
        self
    }

    /// Closes the record and returns its text, ending in a newline.
    pub fn finish(mut self) -> String {
        self.text.push_str(")\n");
        self.text
    }
}
