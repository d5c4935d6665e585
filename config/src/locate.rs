//! Maps a key path (`services.web.listeners[1].listen`) to a line in the
//! config text, using toml_edit's spans.

use std::ops::Range;

use toml_edit::{Document, Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

pub struct Locator<'a> {
    text: &'a str,
    doc: Option<Document<&'a str>>,
}

impl<'a> Locator<'a> {
    /// Parses `text` with toml_edit for its spans. Only for text that
    /// `toml` has parsed: toml_edit 0.23 panics on some malformed documents
    /// (`==\n[...`, found by fuzzing), in its error recovery.
    pub fn new(text: &'a str) -> Self {
        Locator {
            text,
            doc: Document::parse(text).ok(),
        }
    }

    /// Finds lines by offset only (no key paths): for text not known to
    /// be TOML yet.
    pub fn lines_only(text: &'a str) -> Self {
        Locator { text, doc: None }
    }

    /// The line of the deepest part of `path` found in the document.
    pub fn line(&self, path: &[Seg]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best: Option<usize> = None;
        for seg in path {
            let Some((next, span)) = node.child(seg) else {
                break;
            };
            if let Some(span) = span {
                best = Some(span.start);
            }
            node = next;
        }
        best.map(|offset| self.line_of(offset))
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    pub fn line_of_offset(&self, offset: usize) -> usize {
        self.line_of(offset)
    }
}

/// A place in the document: tables, inline tables and arrays all nest.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn child(self, seg: &Seg) -> Option<(Node<'a>, Option<Range<usize>>)> {
        match (self, seg) {
            (Node::Item(Item::Table(t)), _) => Node::Table(t).child(seg),
            (Node::Item(Item::Value(v)), _) => Node::Value(v).child(seg),
            (Node::Table(t), Seg::Key(k)) => {
                let item = t.get(k)?;
                let span = t.key(k).and_then(|key| key.span()).or_else(|| item.span());
                Some((Node::Item(item), span))
            }
            (Node::Value(Value::InlineTable(t)), Seg::Key(k)) => {
                let v = t.get(k)?;
                let span = t.key(k).and_then(|key| key.span()).or_else(|| v.span());
                Some((Node::Value(v), span))
            }
            (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => {
                let t = a.get(*i)?;
                Some((Node::Table(t), t.span()))
            }
            (Node::Value(Value::Array(a)), Seg::Index(i)) => {
                let v = a.get(*i)?;
                Some((Node::Value(v), v.span()))
            }
            _ => None,
        }
    }
}
