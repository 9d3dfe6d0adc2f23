//! Label and field selectors, parsed with kube-apiserver's grammar.
//!
//! Labels: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! `k>n`, `k<n`, comma-separated, all of which must hold. Fields: `f=v`,
//! `f==v`, `f!=v` over the fields the resource supports (custom resources:
//! `metadata.name` and `metadata.namespace`).

use serde_json::{Map, Value};

/// A parsed `labelSelector`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

#[derive(Debug, Clone)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl LabelSelector {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut lexer = Lexer::new(text);
        let mut requirements = Vec::new();
        if lexer.at_end() {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(parse_requirement(&mut lexer)?);
            if lexer.at_end() {
                break;
            }
            lexer.expect(',')?;
        }
        Ok(Self { requirements })
    }

    /// Whether an object with these labels is selected.
    pub(crate) fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
        };
        self.requirements
            .iter()
            .all(|requirement| match requirement {
                LabelRequirement::Exists(key) => get(key).is_some(),
                LabelRequirement::NotExists(key) => get(key).is_none(),
                LabelRequirement::In(key, values) => {
                    get(key).is_some_and(|v| values.iter().any(|x| x == v))
                }
                LabelRequirement::NotIn(key, values) => {
                    get(key).is_none_or(|v| values.iter().all(|x| x != v))
                }
                LabelRequirement::GreaterThan(key, bound) => get(key)
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *bound),
                LabelRequirement::LessThan(key, bound) => get(key)
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *bound),
            })
    }
}

fn parse_requirement(lexer: &mut Lexer<'_>) -> Result<LabelRequirement, String> {
    if lexer.eat('!') {
        let key = lexer.word();
        validate_key(&key)?;
        return Ok(LabelRequirement::NotExists(key));
    }
    let key = lexer.word();
    validate_key(&key)?;
    lexer.skip_spaces();
    if lexer.at_end() || lexer.peek() == Some(',') {
        return Ok(LabelRequirement::Exists(key));
    }
    if lexer.eat_str("==") || lexer.eat('=') {
        let value = lexer.word();
        validate_value(&value)?;
        return Ok(LabelRequirement::In(key, vec![value]));
    }
    if lexer.eat_str("!=") {
        let value = lexer.word();
        validate_value(&value)?;
        return Ok(LabelRequirement::NotIn(key, vec![value]));
    }
    if lexer.eat('>') || lexer.eat('<') {
        let greater = lexer.previous == Some('>');
        let value = lexer.word();
        let bound = value
            .parse::<i64>()
            .map_err(|_| format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer, got {value:?}"))?;
        return Ok(if greater {
            LabelRequirement::GreaterThan(key, bound)
        } else {
            LabelRequirement::LessThan(key, bound)
        });
    }
    let operator = lexer.word();
    let negated = match operator.as_str() {
        "in" => false,
        "notin" => true,
        other => {
            return Err(format!(
                "unable to parse requirement: found '{other}', expected: in, notin, =, ==, !=, gt, lt"
            ));
        }
    };
    lexer.skip_spaces();
    lexer.expect('(')?;
    let mut values = Vec::new();
    loop {
        let value = lexer.word();
        validate_value(&value)?;
        values.push(value);
        lexer.skip_spaces();
        if lexer.eat(')') {
            break;
        }
        lexer.expect(',')?;
    }
    Ok(if negated {
        LabelRequirement::NotIn(key, values)
    } else {
        LabelRequirement::In(key, values)
    })
}

/// Label keys: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_` and `.`.
fn validate_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(format!(
                    "unable to parse requirement: invalid label key {key:?}"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_token(name) {
        return Err(format!(
            "unable to parse requirement: invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_token(value) {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn is_label_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    token.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A cursor over a selector's text.
struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    previous: Option<char>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        let mut lexer = Self {
            chars: text.chars().peekable(),
            previous: None,
        };
        lexer.skip_spaces();
        lexer
    }

    fn skip_spaces(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_spaces();
        self.chars.peek().is_none()
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn eat(&mut self, expected: char) -> bool {
        self.skip_spaces();
        if self.chars.peek() == Some(&expected) {
            self.previous = self.chars.next();
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, expected: &str) -> bool {
        self.skip_spaces();
        let mut probe = self.chars.clone();
        for wanted in expected.chars() {
            if probe.next() != Some(wanted) {
                return false;
            }
        }
        self.chars = probe;
        true
    }

    fn expect(&mut self, expected: char) -> Result<(), String> {
        if self.eat(expected) {
            Ok(())
        } else {
            let found = self
                .peek()
                .map_or_else(|| "end of string".to_owned(), |c| format!("'{c}'"));
            Err(format!(
                "unable to parse requirement: found {found}, expected '{expected}'"
            ))
        }
    }

    /// The next run of characters that are not operators, separators or spaces.
    fn word(&mut self) -> String {
        self.skip_spaces();
        let mut word = String::new();
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() || matches!(c, ',' | '=' | '!' | '(' | ')' | '<' | '>') {
                break;
            }
            word.push(c);
            self.chars.next();
        }
        word
    }
}

/// A parsed `fieldSelector`: equality tests on supported fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses `text`, accepting only the fields in `supported`.
    pub(crate) fn parse(text: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in split_unescaped(text, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, equal) = if let Some((f, v)) = split_once_unescaped(term, "!=") {
                (f, v, false)
            } else if let Some((f, v)) = split_once_unescaped(term, "==") {
                (f, v, true)
            } else if let Some((f, v)) = split_once_unescaped(term, "=") {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), unescape(value.trim()), equal));
        }
        Ok(Self { terms })
    }

    /// Whether `object` is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, value, equal)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = object
                .pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }
}

fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
            if let Some(last) = parts.last_mut() {
                last.push('\\');
                last.push(c);
            }
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn split_once_unescaped<'a>(text: &'a str, operator: &str) -> Option<(&'a str, &'a str)> {
    let mut start = 0;
    while let Some(found) = text[start..].find(operator) {
        let at = start + found;
        let backslashes = text[..at].chars().rev().take_while(|&c| c == '\\').count();
        if backslashes % 2 == 0 {
            return Some((&text[..at], &text[at + operator.len()..]));
        }
        start = at + operator.len();
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_label_operator_selects_like_the_api_server() {
        let l = labels(json!({ "app": "web", "tier": "front", "n": "5" }));
        let yes = |s: &str| LabelSelector::parse(s).expect(s).matches(Some(&l));
        assert!(yes("app=web"));
        assert!(yes("app==web"));
        assert!(yes("app!=db"));
        assert!(yes("missing!=x"));
        assert!(yes("app in (web, db)"));
        assert!(yes("app notin (db)"));
        assert!(yes("missing notin (db)"));
        assert!(yes("app"));
        assert!(yes("!missing"));
        assert!(yes("n>4,n<6"));
        assert!(yes("app=web,tier=front"));
        assert!(yes(""));
        assert!(!yes("app=db"));
        assert!(!yes("!app"));
        assert!(!yes("app in (db)"));
        assert!(!yes("app,missing"));
    }

    #[test]
    fn malformed_label_selectors_are_errors_not_panics() {
        for bad in [
            "app in (web",
            "app===x",
            "=x",
            "app in",
            "a b",
            "app=-x-",
            "app notin web",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_accept_only_supported_fields() {
        let object = json!({ "metadata": { "name": "a", "namespace": "ns" } });
        let supported = ["metadata.name", "metadata.namespace"];
        let selector =
            FieldSelector::parse("metadata.name=a,metadata.namespace!=other", &supported)
                .expect("parse");
        assert!(selector.matches(&object));
        assert!(FieldSelector::parse("spec.x=1", &supported).is_err());
        assert!(FieldSelector::parse("metadata.name", &supported).is_err());
    }
}
