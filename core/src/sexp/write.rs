//! Writing records: field values and [`Writer`], which prints a record one
//! field per line, in the layout Guile's `read`, the Fruix reports and a
//! human all read alike.

use lexpr::Value;

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
