//! Which control characters metadata strings may hold: none, except for
//! the newlines and tabs of commands and scripts.
//!
//! A newline in a path adds a line to a file fruix writes (`.references`),
//! and an ANSI escape sequence rewrites the terminal that shows a value, so
//! the characters U+0000–U+001F and U+007F–U+009F are refused in every
//! string, symbol and character a [`Record`](super::Record) hands out.

use lexpr::Value;

use crate::escape;

/// The control characters a string may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Controls {
    /// None at all.
    Refused,
    /// Newline and tab only (commands and scripts).
    NewlineAndTab,
}

impl Controls {
    /// The first character of `s` this refuses.
    pub(super) fn first_refused(self, s: &str) -> Option<char> {
        s.chars().find(|c| {
            c.is_control() && !(self == Controls::NewlineAndTab && matches!(c, '\n' | '\t'))
        })
    }

    pub(super) fn message(self, c: char) -> String {
        let allowed = match self {
            Controls::Refused => "no control character",
            Controls::NewlineAndTab => "no control character but newline and tab",
        };
        format!(
            "contains the control character `{}` (U+{:04X}); this field allows {allowed}: remove it",
            escape::text(c.encode_utf8(&mut [0; 4])),
            u32::from(c)
        )
    }
}

/// The first control character in a string, symbol or character anywhere
/// inside `value` (walked with a stack: lists may be long).
pub(super) fn first_control_inside(value: &Value) -> Option<char> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        let found = match v {
            Value::String(s) | Value::Symbol(s) | Value::Keyword(s) => {
                Controls::Refused.first_refused(s)
            }
            Value::Char(c) => Some(*c).filter(|c| c.is_control()),
            Value::Cons(cell) => {
                stack.push(cell.cdr());
                stack.push(cell.car());
                None
            }
            Value::Vector(items) => {
                stack.extend(items.iter());
                None
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::error::{Error, Result};
    use crate::sexp::tests::read;
    use crate::sexp::Record;
    use crate::testing::invalid_metadata as invalid;

    /// Issue 10, class 8: strings with control characters forged output
    /// and metadata lines.
    #[test]
    fn control_characters_are_refused_in_every_accessor() {
        type ReadField = fn(&mut Record<'_>) -> Result<()>;
        let cases: [(&str, ReadField); 6] = [
            ("(a \"x\ny\")", |r| r.string("a").map(drop)),
            ("(a \"x\\ty\")", |r| r.opt_string("a").map(drop)),
            ("(a \"ok\" \"x\\x1b;[31m\")", |r| r.strings("a").map(drop)),
            ("(a \"x\u{7f}y\")", |r| r.name("a").map(drop)),
            ("(a (b \"x\u{9b}y\"))", |r| {
                r.record("a").and_then(|mut c| c.string("b")).map(drop)
            }),
            ("(a (\"p\\r\" \"4000\"))", |r| r.raw("a").map(drop)),
        ];
        for (field, read_field) in cases {
            let text = format!("(fruix-x\n {field})");
            let (name, line, message) = invalid(read(&text, read_field));
            assert!(name == "a" || name == "a.b", "{field}: {name}");
            assert_eq!(line, Some(2), "{field}");
            assert!(message.contains("control character `\\"), "{message}");
        }
        // Outside strings, the pre-scan refuses control characters already.
        assert!(matches!(
            read("(fruix-x (a\u{1}b 1))", |_| Ok(())),
            Err(Error::Syntax { .. })
        ));
    }

    #[test]
    fn multiline_strings_allow_only_newline_and_tab() {
        let script = read("(fruix-x (c \"sh\" \"-c\" \"a\n\tb\"))", |r| {
            r.multiline_strings("c")
        });
        assert_eq!(script.unwrap().unwrap()[2], "a\n\tb");
        let (_, _, message) = invalid(read("(fruix-x (c \"a\\x1b;\"))", |r| {
            r.multiline_strings("c")
        }));
        assert!(message.contains("but newline and tab"), "{message}");
    }
}
