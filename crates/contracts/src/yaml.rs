//! YAML and JSON front end: text → `serde_json::Value` with path-named problems, and an index from
//! JSON pointers to the line where each key or item was written.
//!
//! Two parsers are involved on purpose. serde_norway (a maintained fork of the archived serde_yaml,
//! with the same YAML 1.2 behaviour and its alias-expansion limit against "billion laughs") builds
//! the value. yaml-rust2's event parser, which reports a position for every event, builds the line
//! index; it never expands aliases, so a hostile document cannot make the index large.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::parse::Problem;

/// Which syntax a document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// JSON (RFC 8259).
    Json,
    /// YAML 1.2.
    Yaml,
}

/// Parses `text` into a JSON value. Problems carry a line when the parser reports one.
pub fn to_json(
    text: &str,
    syntax: Syntax,
    max_depth: usize,
) -> Result<serde_json::Value, Vec<Problem>> {
    match syntax {
        Syntax::Json => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| vec![Problem::at_line("", e.line(), format!("invalid JSON: {e}"))])?;
            // The walk that names where the nesting is too deep builds a path per node; most
            // documents are shallow, so it runs only when the plain walk finds a problem.
            if !too_deep(&value, 0, max_depth) {
                return Ok(value);
            }
            let mut problems = Vec::new();
            check_depth(&value, "", 0, max_depth, &mut problems);
            Err(problems)
        }
        Syntax::Yaml => {
            if let Some(problem) = shape_problem(text, max_depth + 1) {
                return Err(vec![problem]);
            }
            let value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
                let line = e.location().map(|l| l.line());
                let mut msg = e.to_string();
                if msg.contains("repetition limit") || msg.contains("recursion limit") {
                    msg = format!("document expands beyond the alias or nesting limit: {msg}");
                }
                vec![Problem::at_line(
                    "",
                    line.unwrap_or(0),
                    format!("invalid YAML: {msg}"),
                )]
            })?;
            let mut problems = Vec::new();
            let json = convert(value, String::new(), 0, max_depth, &mut problems);
            if problems.is_empty() {
                Ok(json)
            } else {
                Err(problems)
            }
        }
    }
}

/// A problem with the document's shape that serde_norway would take too long to find, if it has
/// one; checked with yaml-rust2's event parser, in one linear pass, before serde_norway reads it.
///
/// * Nesting: a collection that opens more than `levels` deep (the top-level collection is one
///   level). serde_norway's parser (libyaml) looks at every open flow collection for each token
///   it reads, so a document of 200,000 nested `{a: ` took it minutes to refuse; this pass stops
///   at the first collection too deep and never holds more than `levels` open.
/// * Aliases: a document whose aliases expand it to more nodes than twice its length in bytes
///   (a document without aliases has at most about one node per byte). serde_norway expands
///   aliases before anything checks the result: 5,000 aliases of a 1,000-item list, 40 KB of
///   text, took over two seconds to refuse.
///
/// Syntax errors are left to serde_norway, whose messages name them.
fn shape_problem(text: &str, levels: usize) -> Option<Problem> {
    let budget = text.len().saturating_mul(2).saturating_add(1024);
    let mut parser = Parser::new_from_str(text);
    // Per open collection: its anchor and the node count when it opened.
    let mut open: Vec<(usize, usize)> = Vec::new();
    // Nodes of each anchored node, expanded, by anchor id.
    let mut sizes: HashMap<usize, usize> = HashMap::new();
    let mut nodes = 0usize;
    let too_many = |line: usize| {
        Some(Problem::at_line(
            "",
            line,
            format!(
                "invalid YAML: its aliases expand the document to more than {budget} nodes \
                 (twice its length in bytes)"
            ),
        ))
    };
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            // yaml-rust2's scanner runs ahead of the events and stops at 255 open flow
            // collections on its own.
            Err(e) if e.info().contains("recursion limit") => {
                return Some(Problem::at_line(
                    "",
                    e.marker().line().max(1),
                    format!("nesting deeper than {} levels", levels.saturating_sub(1)),
                ));
            }
            Err(_) => return None,
        };
        let line = mark.line().max(1);
        match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= levels {
                    return Some(Problem::at_line(
                        "",
                        line,
                        format!("nesting deeper than {} levels", levels.saturating_sub(1)),
                    ));
                }
                open.push((anchor, nodes));
                nodes += 1;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, at_start)) = open.pop()
                    && anchor > 0
                {
                    sizes.insert(anchor, nodes - at_start);
                }
            }
            Event::Scalar(_, _, anchor, _) => {
                nodes += 1;
                if anchor > 0 {
                    sizes.insert(anchor, 1);
                }
            }
            Event::Alias(anchor) => {
                nodes = nodes.saturating_add(sizes.get(&anchor).copied().unwrap_or(1));
            }
            Event::StreamEnd => return None,
            _ => {}
        }
        if nodes > budget {
            return too_many(line);
        }
    }
}

/// The problems of a value nested deeper than `max` (none for most documents).
pub(crate) fn depth_problems(value: &serde_json::Value, max: usize) -> Vec<Problem> {
    let mut problems = Vec::new();
    if too_deep(value, 0, max) {
        check_depth(value, "", 0, max, &mut problems);
    }
    problems
}

fn too_deep(v: &serde_json::Value, depth: usize, max: usize) -> bool {
    if depth > max {
        return true;
    }
    match v {
        serde_json::Value::Object(m) => m.values().any(|v| too_deep(v, depth + 1, max)),
        serde_json::Value::Array(a) => a.iter().any(|v| too_deep(v, depth + 1, max)),
        _ => false,
    }
}

fn check_depth(
    v: &serde_json::Value,
    path: &str,
    depth: usize,
    max: usize,
    problems: &mut Vec<Problem>,
) {
    if depth > max {
        problems.push(Problem::new(
            path,
            format!("nesting deeper than {max} levels"),
        ));
        return;
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                check_depth(
                    v,
                    &format!("{path}/{}", escape(k)),
                    depth + 1,
                    max,
                    problems,
                );
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                check_depth(v, &format!("{path}/{i}"), depth + 1, max, problems);
            }
        }
        _ => {}
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn convert(
    v: serde_norway::Value,
    path: String,
    depth: usize,
    max: usize,
    problems: &mut Vec<Problem>,
) -> serde_json::Value {
    use serde_json::Value as J;
    use serde_norway::Value as Y;
    if depth > max {
        problems.push(Problem::new(
            &path,
            format!("nesting deeper than {max} levels"),
        ));
        return J::Null;
    }
    match v {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(num) => J::Number(num),
                    None => {
                        problems.push(Problem::new(
                            &path,
                            format!(
                                "`{n}` is not a finite number (NaN and infinities are refused)"
                            ),
                        ));
                        J::Null
                    }
                }
            }
        }
        Y::String(s) => J::String(s),
        Y::Sequence(items) => J::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, format!("{path}/{i}"), depth + 1, max, problems))
                .collect(),
        ),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        problems.push(Problem::new(
                            &path,
                            format!("mapping key {other:?} is not a string"),
                        ));
                        continue;
                    }
                };
                let child = format!("{path}/{}", escape(&key));
                let value = convert(v, child, depth + 1, max, problems);
                out.insert(key, value);
            }
            J::Object(out)
        }
        Y::Tagged(t) => {
            problems.push(Problem::new(
                &path,
                format!("YAML tag `{}` is not supported here", t.tag),
            ));
            J::Null
        }
    }
}

/// JSON pointer → 1-based line where that key (or sequence item) was written.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Builds the index; a document the event parser rejects yields an empty index.
    pub fn build(text: &str) -> LineIndex {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return LineIndex::default();
        }
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of `pointer`, or of its nearest ancestor that has one.
    pub fn line_of(&self, pointer: &str) -> Option<usize> {
        let mut p = pointer;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

enum Frame {
    /// Inside a mapping: the pending key, if the next scalar is a value.
    Map { path: String, key: Option<String> },
    /// Inside a sequence: the next index.
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl IndexBuilder {
    /// Path of the node that starts now, advancing the parent's cursor. `None` when the node is a
    /// mapping key rather than a value.
    fn next_value_path(&mut self, line: usize, key_text: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}/{next}");
                *next += 1;
                self.lines.entry(p.clone()).or_insert(line);
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(format!("{path}/{}", escape(&k))),
                None => {
                    // This node is a key. Only scalar keys name a path.
                    if let Some(text) = key_text {
                        let p = format!("{path}/{}", escape(text));
                        self.lines.entry(p).or_insert(line);
                        *key = Some(text.to_owned());
                    } else {
                        *key = Some(String::new());
                    }
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // yaml-rust2 markers count lines from 1.
        let line = mark.line().max(1);
        match ev {
            Event::Scalar(text, ..) => {
                let _ = self.next_value_path(line, Some(&text));
            }
            Event::Alias(_) => {
                let _ = self.next_value_path(line, Some(""));
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.next_value_path(line, None) {
                    self.lines.entry(path.clone()).or_insert(line);
                    self.stack.push(Frame::Map { path, key: None });
                } else {
                    // A complex key: track it so its events are consumed, under a dummy path.
                    self.stack.push(Frame::Map {
                        path: "\u{0}".to_owned(),
                        key: None,
                    });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.next_value_path(line, None) {
                    self.lines.entry(path.clone()).or_insert(line);
                    self.stack.push(Frame::Seq { path, next: 0 });
                } else {
                    self.stack.push(Frame::Seq {
                        path: "\u{0}".to_owned(),
                        next: 0,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_points_at_key_lines() {
        let text = "a: 1\nb:\n  c: [x, y]\n  d:\n    - e: 2\n    - f\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("/a"), Some(1));
        assert_eq!(idx.line_of("/b/c"), Some(3));
        assert_eq!(idx.line_of("/b/d/0/e"), Some(5));
        assert_eq!(idx.line_of("/b/d/1"), Some(6));
        assert_eq!(idx.line_of("/b/c/7/zzz"), Some(3));
    }
}
