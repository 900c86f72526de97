//! containerd list filters for snapshots: `field==value`, `field!=value`,
//! `field~=regexp` and bare `field` (present), comma-separated clauses AND-ed,
//! several filter strings OR-ed. Fields: `name`, `parent`, `kind`,
//! `labels.<key>` (key optionally quoted).

use std::collections::BTreeMap;

use regex::Regex;

use crate::error::{Error, Result};

#[derive(Debug)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
    Matches(Regex),
}

#[derive(Debug)]
struct Clause {
    field: Vec<String>,
    op: Op,
}

/// A parsed set of filters.
#[derive(Debug, Default)]
pub struct Filter {
    any_of: Vec<Vec<Clause>>,
}

/// The fields of a snapshot a filter looks at.
pub struct Fields<'a> {
    /// Snapshot key.
    pub name: &'a str,
    /// Parent key.
    pub parent: &'a str,
    /// `active`, `view` or `committed`.
    pub kind: &'a str,
    /// Labels.
    pub labels: &'a BTreeMap<String, String>,
}

impl Filter {
    /// Parses containerd filter strings; an empty list matches everything.
    pub fn parse(filters: &[String]) -> Result<Filter> {
        let mut any_of = Vec::new();
        for filter in filters.iter().filter(|f| !f.trim().is_empty()) {
            let clauses = split_outside_quotes(filter, ',')
                .iter()
                .map(|c| parse_clause(c.trim()))
                .collect::<Result<Vec<_>>>()?;
            any_of.push(clauses);
        }
        Ok(Filter { any_of })
    }

    /// True when `fields` passes.
    pub fn matches(&self, fields: &Fields<'_>) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|clauses| clauses.iter().all(|c| clause_matches(c, fields)))
    }
}

fn clause_matches(clause: &Clause, fields: &Fields<'_>) -> bool {
    let value: Option<&str> = match clause.field.as_slice() {
        [f] if f == "name" => Some(fields.name),
        [f] if f == "parent" => Some(fields.parent),
        [f] if f == "kind" => Some(fields.kind),
        [f, key] if f == "labels" => fields.labels.get(key).map(String::as_str),
        _ => None,
    };
    match (&clause.op, value) {
        (Op::Present, v) => v.is_some_and(|v| !v.is_empty()),
        (Op::Eq(want), Some(v)) => v == want,
        (Op::Ne(want), v) => v != Some(want.as_str()),
        (Op::Matches(re), Some(v)) => re.is_match(v),
        _ => false,
    }
}

fn parse_clause(text: &str) -> Result<Clause> {
    let bad = |why: &str| Error::InvalidArgument(format!("filter {text:?}: {why}"));
    let (field, op) = if let Some((f, v)) = split_op(text, "==") {
        (f, Op::Eq(unquote(v)))
    } else if let Some((f, v)) = split_op(text, "!=") {
        (f, Op::Ne(unquote(v)))
    } else if let Some((f, v)) = split_op(text, "~=") {
        let re = Regex::new(&unquote(v)).map_err(|source| Error::FilterRegex {
            filter: text.to_string(),
            source,
        })?;
        (f, Op::Matches(re))
    } else {
        (text, Op::Present)
    };
    let field: Vec<String> = match field.split_once('.') {
        Some((head, rest)) => vec![head.to_string(), unquote(rest)],
        None => vec![field.to_string()],
    };
    match field.first().map(String::as_str) {
        Some("name" | "parent" | "kind") if field.len() == 1 => {}
        Some("labels") if field.len() == 2 => {}
        _ => return Err(bad("unknown field (name, parent, kind, labels.<key>)")),
    }
    Ok(Clause { field, op })
}

fn split_op<'a>(text: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut quoted = false;
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            _ if !quoted && bytes[i..].starts_with(op.as_bytes()) => {
                return Some((&text[..i], &text[i + op.len()..]));
            }
            _ => {}
        }
    }
    None
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                parts.last_mut().expect("one part").push(c);
            }
            c if c == sep && !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    t.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_containerd_syntax() {
        let labels = BTreeMap::from([("containerd.io/gc.root".to_string(), "x".to_string())]);
        let snap = Fields {
            name: "default/3/sha256:aa",
            parent: "default/2/sha256:bb",
            kind: "committed",
            labels: &labels,
        };
        let cases: &[(&[&str], bool)] = &[
            (&[], true),
            (&["kind==committed"], true),
            (&["kind==active"], false),
            (&["kind==active", "kind==committed"], true),
            (&["kind==committed,parent==default/2/sha256:bb"], true),
            (&["kind==committed,parent!=default/2/sha256:bb"], false),
            (&[r#"labels."containerd.io/gc.root""#], true),
            (&[r#"labels."containerd.io/gc.root"==x"#], true),
            (&["labels.missing"], false),
            (&["name~=^default/"], true),
            (&["name~=^other/"], false),
        ];
        for (filters, want) in cases {
            let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
            let filter = Filter::parse(&filters).unwrap();
            assert_eq!(filter.matches(&snap), *want, "{filters:?}");
        }
    }

    #[test]
    fn unknown_fields_are_invalid_arguments() {
        let err = Filter::parse(&["size==3".to_string()]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn a_bad_regular_expression_is_an_invalid_argument_with_its_cause() {
        let err = Filter::parse(&["name~=(".to_string()]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let Error::FilterRegex { filter, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(filter, "name~=(");
        assert!(matches!(source, regex::Error::Syntax(_)), "{source:?}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
