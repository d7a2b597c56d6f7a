//! Positions in a topology's text, so that every problem can point at what it is about.
//!
//! [`parse`] reads RON text that already parsed (it is lenient, and never fails) into a tree of
//! [`Node`]s that keep where each value, field name and map key starts and ends. A problem found
//! after decoding names a [`Step`] path (`channels` → `"c9"`), and [`Node::find`] turns it into the
//! start of the value it is about. [`enclosing_component`] answers which component a syntax error
//! sits in, for text that did not parse.

/// One value in a topology's text; offsets are in bytes from the start of the text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    /// Where the value starts (its name, quote, bracket or first character).
    pub start: usize,
    /// Just past the value's end.
    pub end: usize,
    /// What the value is.
    pub kind: NodeKind,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum NodeKind {
    /// `Name(...)` or `(...)`: a struct, tuple, enum variant or option, with its named fields and
    /// its unnamed items. `name_end` is just past the name (or the start when there is none).
    Struct { name: Option<String>, name_end: usize, fields: Vec<Field>, items: Vec<Node> },
    /// `[...]`.
    List(Vec<Node>),
    /// `{...}`: keys and values.
    Map(Vec<(Node, Node)>),
    /// A string (its value, escapes undone).
    Str(String),
    /// Anything else: a number, a boolean, a unit variant, a char.
    Atom,
}

/// A named field of a struct: `name: value`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Field {
    /// The field's name.
    pub name: String,
    /// Where the name starts.
    pub name_start: usize,
    /// The field's value.
    pub value: Node,
}

/// What a decoder's error position is about, to show it from the right start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Anchor {
    /// A field name (unknown or given twice): reported just past the name.
    FieldName,
    /// An enum variant name (unknown): reported just past the name.
    VariantName,
    /// A struct missing a field: reported at its closing bracket.
    StructClose,
    /// A value of the wrong type or out of range: reported at its start or just past it.
    Value,
}

/// One step of a path from a component to the value a problem is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The value of a named field: `capacity`.
    Field(&'static str),
    /// The value under a map key: `mapping` → `"ERROR"`.
    Key(String),
    /// A map key itself.
    KeyOf(String),
    /// The *n*th item (0-based) of a list.
    Index(usize),
    /// The list item that is this string: `channels` → `"c9"`.
    Item(String),
    /// The field named by one of the first two words of a message (`"bind address ..."` → `bind`),
    /// if the value has such a field.
    Mentioned(String),
}

impl Node {
    /// The named field `name`, looking through wrappers such as `Some(...)`.
    fn field(&self, name: &str) -> Option<&Field> {
        match &self.kind {
            NodeKind::Struct { fields, items, .. } => {
                fields.iter().find(|f| f.name == name).or_else(|| match items.as_slice() {
                    [only] if fields.is_empty() => only.field(name),
                    _ => None,
                })
            }
            _ => None,
        }
    }

    /// The list items, looking through wrappers such as `Some(...)`.
    fn list(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::List(items) => Some(items),
            NodeKind::Struct { fields, items, .. } if fields.is_empty() && items.len() == 1 => items[0].list(),
            _ => None,
        }
    }

    /// The map entries, looking through wrappers such as `Some(...)`.
    fn map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            NodeKind::Struct { fields, items, .. } if fields.is_empty() && items.len() == 1 => items[0].map(),
            _ => None,
        }
    }

    /// The string value, if the node is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under map key `key` (the last one, as a map decoder keeps the last).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.map()?.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// The map entries, if the node is a map.
    pub fn entries(&self) -> &[(Node, Node)] {
        self.map().unwrap_or_default()
    }

    /// The value of named field `name`, if any.
    pub fn field_value(&self, name: &str) -> Option<&Node> {
        self.field(name).map(|f| &f.value)
    }

    /// Where `path` leads: the start of the value it names, or of the deepest value on the way
    /// that exists (a field left to its default is not in the text).
    pub fn find(&self, path: &[Step]) -> usize {
        let mut node = self;
        for step in path {
            let next = match step {
                Step::Field(name) => node.field_value(name),
                Step::Key(key) => node.get(key),
                Step::KeyOf(key) => {
                    node.map().and_then(|m| m.iter().rev().find(|(k, _)| k.as_str() == Some(key))).map(|(k, _)| k)
                }
                Step::Index(i) => node.list().and_then(|l| l.get(*i)),
                Step::Item(item) => node.list().and_then(|l| l.iter().find(|n| n.as_str() == Some(item))),
                Step::Mentioned(message) => {
                    // `"tls cert: ..."` leads to `tls`, then to its `cert` when it has one.
                    let mut found: Option<&Node> = None;
                    for w in message
                        .split_whitespace()
                        .take(2)
                        .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_'))
                    {
                        if let Some(n) = found.unwrap_or(node).field_value(w) {
                            found = Some(n);
                        }
                    }
                    found
                }
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.start
    }

    /// Where an error that a decoder reported at byte `offset` is best shown: from the start of
    /// the field name, variant name, value or struct the error is about (see [`Anchor`]).
    pub fn anchor(&self, offset: usize, what: Anchor) -> usize {
        let mut best = None;
        self.visit(&mut |n| {
            let found = match (&n.kind, what) {
                (NodeKind::Struct { fields, .. }, Anchor::FieldName) => {
                    fields.iter().find(|f| f.name_start + f.name.len() == offset).map(|f| f.name_start)
                }
                (NodeKind::Struct { name: Some(_), name_end, .. }, Anchor::VariantName) if *name_end == offset => {
                    Some(n.start)
                }
                (NodeKind::Struct { .. }, Anchor::StructClose) if n.end == offset + 1 => Some(n.start),
                (NodeKind::Struct { .. }, _) => None,
                (_, Anchor::VariantName | Anchor::Value) if n.end == offset => Some(n.start),
                _ => None,
            };
            // Later (deeper) nodes win.
            best = found.or(best);
        });
        best.unwrap_or(offset)
    }

    fn visit(&self, f: &mut dyn FnMut(&Node)) {
        f(self);
        match &self.kind {
            NodeKind::Struct { fields, items, .. } => {
                fields.iter().for_each(|field| field.value.visit(f));
                items.iter().for_each(|n| n.visit(f));
            }
            NodeKind::List(items) => items.iter().for_each(|n| n.visit(f)),
            NodeKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                k.visit(f);
                v.visit(f);
            }),
            NodeKind::Str(_) | NodeKind::Atom => {}
        }
    }
}

/// Reads RON `text` into a tree; lenient: text that does not parse gives a partial tree.
pub(super) fn parse(text: &str) -> Node {
    let mut r = Reader { text, pos: 0 };
    r.skip_blank();
    r.value()
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    /// Skips white space, comments and `#![enable(...)]` attributes.
    fn skip_blank(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("//") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if trimmed.starts_with("/*") {
                self.pos += block_comment_len(trimmed);
            } else if trimmed.starts_with("#!") {
                self.pos += trimmed.find(']').map_or(trimmed.len(), |i| i + 1);
            } else {
                return;
            }
        }
    }

    fn ident(&mut self) -> Option<String> {
        let rest = self.rest();
        let rest_raw = rest.strip_prefix("r#").filter(|r| r.starts_with(is_ident_start));
        let body = rest_raw.unwrap_or(rest);
        if !body.starts_with(is_ident_start) {
            return None;
        }
        let len = body.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(body.len());
        let name = body[..len].to_string();
        self.pos += len + if rest_raw.is_some() { 2 } else { 0 };
        Some(name)
    }

    fn value(&mut self) -> Node {
        let start = self.pos;
        let rest = self.rest();
        let kind = if rest.starts_with('"') || rest.starts_with("b\"") {
            if rest.starts_with('b') {
                self.bump();
            }
            NodeKind::Str(self.string())
        } else if rest.starts_with("r\"") || rest.starts_with("r#\"") || rest.starts_with("r##") {
            NodeKind::Str(self.raw_string())
        } else if rest.starts_with('\'') {
            self.char_literal();
            NodeKind::Atom
        } else if rest.starts_with('[') {
            self.bump();
            NodeKind::List(self.items(']'))
        } else if rest.starts_with('{') {
            self.bump();
            NodeKind::Map(self.entries())
        } else if rest.starts_with('(') {
            self.structure(None, start)
        } else if let Some(name) = self.ident() {
            let name_end = self.pos;
            let after = self.pos;
            self.skip_blank();
            if self.peek() == Some('(') {
                self.structure(Some(name), name_end)
            } else {
                self.pos = after;
                NodeKind::Atom
            }
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || ",:)]}([{\"".contains(c))
                .unwrap_or(rest.len())
                .max(rest.chars().next().map_or(0, char::len_utf8));
            self.pos += len;
            NodeKind::Atom
        };
        Node { start, end: self.pos, kind }
    }

    /// At `(`: named fields and unnamed items up to the matching `)`.
    fn structure(&mut self, name: Option<String>, name_end: usize) -> NodeKind {
        self.bump();
        let mut fields = Vec::new();
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => break,
                Some(')') => {
                    self.bump();
                    break;
                }
                Some(',') => {
                    self.bump();
                    continue;
                }
                Some(']' | '}') => break,
                _ => {}
            }
            let before = self.pos;
            if let Some(field) = self.ident() {
                self.skip_blank();
                if self.peek() == Some(':') {
                    self.bump();
                    self.skip_blank();
                    let value = self.value();
                    fields.push(Field { name: field, name_start: before, value });
                    continue;
                }
                self.pos = before;
            }
            items.push(self.value());
            if self.pos == before {
                self.bump();
            }
        }
        NodeKind::Struct { name, name_end, fields, items }
    }

    /// After `[`: values up to `close`.
    fn items(&mut self, close: char) -> Vec<Node> {
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => break,
                Some(c) if c == close => {
                    self.bump();
                    break;
                }
                Some(',') => {
                    self.bump();
                    continue;
                }
                Some(')' | ']' | '}') => break,
                _ => {}
            }
            let before = self.pos;
            items.push(self.value());
            if self.pos == before {
                self.bump();
            }
        }
        items
    }

    /// After `{`: `key: value` entries up to `}`.
    fn entries(&mut self) -> Vec<(Node, Node)> {
        let mut entries = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => break,
                Some('}') => {
                    self.bump();
                    break;
                }
                Some(',') => {
                    self.bump();
                    continue;
                }
                Some(')' | ']') => break,
                _ => {}
            }
            let before = self.pos;
            let key = self.value();
            self.skip_blank();
            if self.peek() == Some(':') {
                self.bump();
                self.skip_blank();
                entries.push((key, self.value()));
            } else if self.pos == before {
                self.bump();
            }
        }
        entries
    }

    /// At `"`: the string's value, escapes undone.
    fn string(&mut self) -> String {
        self.bump();
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.bump();
            match c {
                '"' => break,
                '\\' => {
                    let e = self.peek();
                    self.bump();
                    match e {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some('r') => out.push('\r'),
                        Some('0') => out.push('\0'),
                        Some('u') if self.peek() == Some('{') => {
                            let hex: String = self.rest()[1..].chars().take_while(|c| *c != '}').collect();
                            self.pos += hex.len() + 2;
                            out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                        }
                        Some(other) => out.push(other),
                        None => break,
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    /// At `r"` or `r#..#"`: the raw string's value.
    fn raw_string(&mut self) -> String {
        self.bump();
        let hashes = self.rest().chars().take_while(|c| *c == '#').count();
        self.pos += hashes;
        if self.peek() != Some('"') {
            return String::new();
        }
        self.bump();
        let close = format!("\"{}", "#".repeat(hashes));
        let rest = self.rest();
        let len = rest.find(&close).unwrap_or(rest.len());
        let value = rest[..len].to_string();
        self.pos += (len + close.len()).min(rest.len());
        value
    }

    fn char_literal(&mut self) {
        self.bump();
        if self.peek() == Some('\\') {
            self.bump();
        }
        self.bump();
        let rest = self.rest();
        self.pos += rest.find('\'').map_or(0, |i| i + 1);
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

/// Length of the (nested) block comment at the start of `text`.
fn block_comment_len(text: &str) -> usize {
    let mut depth = 0usize;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    text.len()
}

/// The sections of a topology that hold named components, and what each component is called.
pub(super) const SECTIONS: [(&str, &str); 4] =
    [("sources", "source"), ("channels", "channel"), ("sinks", "sink"), ("sink_groups", "sink group")];

/// The component that byte `offset` of `text` sits in, as `source "r1"`, or `monitoring`; none
/// at the top level. Works on text that does not parse: it reads tokens up to `offset` and keeps
/// the brackets open there.
pub(super) fn enclosing_component(text: &str, offset: usize) -> Option<String> {
    struct Open {
        field: Option<String>,
        key: Option<String>,
        section: Option<&'static str>,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut r = Reader { text, pos: 0 };
    let mut last_ident: Option<String> = None;
    loop {
        r.skip_blank();
        if r.pos >= offset.min(text.len()) {
            break;
        }
        let rest = r.rest();
        let depth = stack.len();
        if rest.starts_with('"') || rest.starts_with("r\"") || rest.starts_with("r#\"") {
            let s = if rest.starts_with('r') { r.raw_string() } else { r.string() };
            if let Some(top) = stack.last_mut() {
                if top.section.is_some() && depth >= 2 {
                    top.key = Some(s);
                }
            }
            last_ident = None;
            continue;
        }
        if let Some(id) = r.ident() {
            last_ident = Some(id);
            continue;
        }
        let c = r.peek().expect("not at the end");
        r.bump();
        match c {
            ':' => {
                if let (Some(id), Some(top)) = (last_ident.take(), stack.last_mut()) {
                    top.field = Some(id);
                }
            }
            '(' | '[' | '{' => {
                let section = match (c, stack.as_slice()) {
                    ('{', [root]) => {
                        SECTIONS.iter().find(|(s, _)| root.field.as_deref() == Some(s)).map(|(_, kind)| *kind)
                    }
                    _ => None,
                };
                stack.push(Open { field: None, key: None, section });
                last_ident = None;
            }
            ')' | ']' | '}' => {
                stack.pop();
                last_ident = None;
            }
            '\'' => {
                r.pos -= 1;
                r.char_literal();
            }
            _ => last_ident = None,
        }
    }
    match stack.as_slice() {
        [_, map, ..] if map.section.is_some() => {
            map.key.as_ref().map(|k| format!("{} \"{k}\"", map.section.expect("checked")))
        }
        [root, _, ..] if root.field.as_deref() == Some("monitoring") => Some("monitoring".into()),
        _ => None,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn position_of(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Byte offset of 1-based `line` and `col` (in characters) in `text`; the end when past it.
pub(super) fn offset_of(text: &str, (line, col): (usize, usize)) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset + l.char_indices().nth(col.saturating_sub(1)).map_or(l.len(), |(j, _)| j);
        }
        offset += l.len();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"Topology(
    agent: "edge-1", // a comment (with brackets]
    sources: {
        "r1": (
            kind: Netcat(bind: "127.0.0.1:44444"),
            channels: ["c1", "c2"],
            selector: Multiplexing(header: "level", mapping: { "ERROR": ["c2"] }, default: ["c1"]),
            interceptors: [Timestamp(), RegexFilter(regex: r"\d+ (ERROR|WARN)")],
        ),
    },
    /* block /* nested */ comment */
    monitoring: Some(Http(bind: "x")),
)"#;

    fn pos(path: &[Step]) -> (usize, usize) {
        let root = parse(TEXT);
        position_of(TEXT, root.find(path))
    }

    #[test]
    fn paths_lead_to_fields_items_and_keys() {
        let r1 = |rest: &[Step]| {
            let mut p = vec![Step::Field("sources"), Step::Key("r1".into())];
            p.extend_from_slice(rest);
            pos(&p)
        };
        assert_eq!(r1(&[]), (4, 15));
        assert_eq!(r1(&[Step::Field("kind"), Step::Field("bind")]), (5, 32));
        assert_eq!(r1(&[Step::Field("channels"), Step::Item("c2".into())]), (6, 30));
        assert_eq!(r1(&[Step::Field("selector"), Step::Field("default"), Step::Item("c1".into())]), (7, 93));
        assert_eq!(r1(&[Step::Field("selector"), Step::Field("mapping"), Step::Key("ERROR".into())]), (7, 73));
        assert_eq!(r1(&[Step::Field("selector"), Step::Field("mapping"), Step::KeyOf("ERROR".into())]), (7, 64));
        assert_eq!(
            r1(&[Step::Field("interceptors"), Step::Index(1), Step::Mentioned("RegexFilter regex: bad".into())]),
            (8, 60)
        );
        // A field left to its default: the deepest value that exists.
        assert_eq!(r1(&[Step::Field("batch_size")]), (4, 15));
        assert_eq!(r1(&[Step::Field("interceptors"), Step::Index(0), Step::Mentioned("Host x".into())]), (8, 28));
        assert_eq!(pos(&[Step::Field("monitoring"), Step::Field("bind")]), (12, 33));
    }

    #[test]
    fn strings_and_raw_strings_are_read() {
        let root = parse(TEXT);
        let regex = root.find(&[
            Step::Field("sources"),
            Step::Key("r1".into()),
            Step::Field("interceptors"),
            Step::Index(1),
            Step::Field("regex"),
        ]);
        let node = parse(&TEXT[regex..]);
        assert_eq!(node.as_str(), Some(r"\d+ (ERROR|WARN)"));
        assert_eq!(parse(r#""a\"b\u{41}""#).as_str(), Some("a\"bA"));
    }

    #[test]
    fn anchors_move_decoder_positions_to_starts() {
        let text = r#"(kind: Memory(capacity: 1, foo: 2), channels: [], linger: "5 parsecs")"#;
        let root = parse(text);
        // An unknown field, reported just past its name.
        assert_eq!(root.anchor(30, Anchor::FieldName), 27);
        // An unknown variant, reported just past its name.
        assert_eq!(root.anchor(13, Anchor::VariantName), 7);
        // A bad value, reported just past it (here also the closing bracket of the component).
        assert_eq!(root.anchor(69, Anchor::Value), 58);
        // A bad value reported at its start stays there.
        assert_eq!(root.anchor(24, Anchor::Value), 24);
        // A missing field, reported at the closing bracket of its struct.
        assert_eq!(root.anchor(69, Anchor::StructClose), 0);
        assert_eq!(root.anchor(33, Anchor::StructClose), 7);
    }

    #[test]
    fn syntax_errors_are_placed_in_their_component() {
        let text = "Topology(\n agent: \"a\",\n sources: {\n  \"r1\": (kind: Netcat(bind: \"x\"),, channels: []),\n },\n sinks: { \"k1\": (kind: Null() channel: \"c1\") },\n nope: 1,\n)";
        let at = |needle: &str| enclosing_component(text, text.find(needle).unwrap());
        assert_eq!(at(", channels").as_deref(), Some("source \"r1\""));
        assert_eq!(at("channel: \"c1\"").as_deref(), Some("sink \"k1\""));
        assert_eq!(at("nope"), None);
        assert_eq!(at("agent"), None);
        let m = "Topology(agent: \"a\", monitoring: Some(Http(bind: 1 2)))";
        assert_eq!(enclosing_component(m, m.find("2)").unwrap()).as_deref(), Some("monitoring"));
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(position_of("ab\ncd", 4), (2, 2));
        assert_eq!(position_of("é\nx—y", 7), (2, 3));
        assert_eq!(offset_of("é\nx—y", (2, 3)), 7);
        assert_eq!(offset_of("ab\ncd", (2, 2)), 4);
    }
}
