//! The YAML `fruix matrix export` writes (GitHub Actions, GitLab CI): block
//! style, every string double-quoted with JSON's escapes (which are YAML's),
//! so no value is read as anything else (`on`, `yes`, `1.0`, `*x`), and keys
//! in the order people read pipelines in.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// `value` as block-style YAML, every string double-quoted.
pub(crate) fn yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) => object(map, 0, &mut out),
        other => {
            let _ = writeln!(out, "{}", scalar(other));
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        // JSON's escapes are YAML's double-quoted escapes.
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        // YAML 1.1 booleans, which some readers still take `on:` for.
        && !["on", "off", "yes", "no", "y", "n", "true", "false", "null"]
            .contains(&k.to_ascii_lowercase().as_str());
    if plain {
        k.to_string()
    } else {
        Value::from(k).to_string()
    }
}

/// Keys in the order people read pipelines in (others after them, sorted).
const KEY_ORDER: [&str; 26] = [
    "name",
    "cell",
    "job",
    "on",
    "stages",
    "jobs",
    "stage",
    "needs",
    "if",
    "when",
    "runs-on",
    "tags",
    "resource_group",
    "timeout-minutes",
    "timeout",
    "strategy",
    "fail-fast",
    "max-parallel",
    "matrix",
    "uses",
    "env",
    "with",
    "script",
    "run",
    "steps",
    "artifacts",
];

fn object(map: &Map<String, Value>, indent: usize, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(k, _)| {
        let rank = KEY_ORDER.iter().position(|o| o == k);
        (rank.unwrap_or(KEY_ORDER.len()), *k)
    });
    for (k, v) in entries {
        let pad = " ".repeat(indent);
        if is_block(v) {
            let _ = writeln!(out, "{pad}{}:", key(k));
            block(v, indent + 2, out);
        } else {
            let _ = writeln!(out, "{pad}{}: {}", key(k), scalar(v));
        }
    }
}

fn block(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(map) => object(map, indent, out),
        Value::Array(items) => {
            let pad = " ".repeat(indent);
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the others below it.
                        let mut first = String::new();
                        object(map, indent + 2, &mut first);
                        let _ = write!(out, "{pad}- {}", &first[indent + 2..]);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}-");
                        block(item, indent + 2, out);
                    }
                    other => {
                        let _ = writeln!(out, "{pad}- {}", scalar(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{}{}", " ".repeat(indent), scalar(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_quotes_every_string_and_nests_in_blocks() {
        let v = json!({
            "on": {"push": null},
            "a b": ["x", {"k": 1, "l": ["y"]}, []],
            "s": "it's \"quoted\"\n",
            "e": {},
        });
        assert_eq!(
            yaml(&v),
            "\"on\":\n  push: null\n\"a b\":\n  - \"x\"\n  - k: 1\n    l:\n      - \"y\"\n  - []\ne: {}\ns: \"it's \\\"quoted\\\"\\n\"\n"
        );
    }
}
