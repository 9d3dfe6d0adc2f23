//! Structural checks of a stored JSON value against a type's `schemars` schema,
//! for `#[store(schema)]` (feature `schema`).
//!
//! A lean subset of JSON Schema, enough for what `schemars` derives from Rust
//! types: `type`, `enum`, `const`, `properties` / `required` /
//! `additionalProperties`, `items` / `prefixItems` / `minItems` / `maxItems`,
//! numeric bounds, string lengths, `allOf` / `anyOf` / `oneOf` / `not`, and
//! local `$ref`s. `pattern`, `format` and conditional keywords are not checked.
//! Each type's schema is generated once and cached.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use schemars::JsonSchema;
use serde_json::{Map, Value};

use crate::error::BoxError;

/// How deep `$ref`s may nest before the schema is taken as cyclic for this value.
const MAX_DEPTH: usize = 256;

/// A stored value that does not fit its type's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    /// Where in the value, in the form decode errors use (`.`, `name`, `items[0].id`).
    pub path: String,
    /// What was expected there.
    pub message: String,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "does not fit the type's schema at `{}`: {}",
            self.path, self.message
        )
    }
}

impl std::error::Error for SchemaMismatch {}

/// Checks `raw` against `T`'s schema; the error names the path that does not fit.
pub fn validate<T: JsonSchema + 'static>(raw: &Value) -> Result<(), BoxError> {
    let schema = schema_of::<T>();
    check_value(&schema, raw).map_err(|e| Box::new(e) as BoxError)
}

/// Checks `value` against a root schema given as JSON.
pub(crate) fn check_value(root: &Value, value: &Value) -> Result<(), SchemaMismatch> {
    Checker { root }.check(root, value, &mut Vec::new(), 0)
}

fn schema_of<T: JsonSchema + 'static>() -> Arc<Value> {
    static SCHEMAS: OnceLock<Mutex<HashMap<TypeId, Arc<Value>>>> = OnceLock::new();
    let cache = SCHEMAS.get_or_init(Default::default);
    if let Some(found) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&TypeId::of::<T>())
    {
        return Arc::clone(found);
    }
    // Generated outside the lock: a schema may be slow to build.
    let schema = Arc::new(schemars::schema_for!(T).to_value());
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(TypeId::of::<T>())
        .or_insert(schema)
        .clone()
}

#[derive(Debug, Clone)]
enum Step {
    Field(String),
    Index(usize),
}

fn render(path: &[Step]) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, ty: &str) -> bool {
    match (ty, value) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

struct Checker<'r> {
    root: &'r Value,
}

impl Checker<'_> {
    fn fail(path: &[Step], message: String) -> Result<(), SchemaMismatch> {
        Err(SchemaMismatch {
            path: render(path),
            message,
        })
    }

    fn resolve(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &mut Vec<Step>,
        depth: usize,
    ) -> Result<(), SchemaMismatch> {
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Self::fail(path, "no value is allowed here".into()),
            Value::Object(schema) => schema,
            _ => return Ok(()),
        };
        if depth > MAX_DEPTH {
            return Self::fail(path, "the schema nests too deeply".into());
        }
        if let Some(Value::String(reference)) = schema.get("$ref") {
            match self.resolve(reference) {
                Some(target) => self.check(target, value, path, depth + 1)?,
                None => {
                    return Self::fail(
                        path,
                        format!("unresolvable schema reference `{reference}`"),
                    );
                }
            }
        }
        self.check_type(schema, value, path)?;
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            return Self::fail(
                path,
                format!(
                    "expected one of {}, found another {}",
                    Value::Array(allowed.clone()),
                    kind(value)
                ),
            );
        }
        if let Some(expected) = schema.get("const")
            && expected != value
        {
            return Self::fail(
                path,
                format!("expected {expected}, found another {}", kind(value)),
            );
        }
        match value {
            Value::Number(n) => Self::check_number(schema, n, path)?,
            Value::String(s) => Self::check_string(schema, s, path)?,
            Value::Array(items) => self.check_array(schema, items, path, depth)?,
            Value::Object(fields) => self.check_object(schema, fields, path, depth)?,
            Value::Null | Value::Bool(_) => {}
        }
        self.check_combinators(schema, value, path, depth)
    }

    fn check_type(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &[Step],
    ) -> Result<(), SchemaMismatch> {
        let wanted: Vec<&str> = match schema.get("type") {
            Some(Value::String(ty)) => vec![ty.as_str()],
            Some(Value::Array(tys)) => tys.iter().filter_map(Value::as_str).collect(),
            _ => return Ok(()),
        };
        if wanted.iter().any(|ty| has_type(value, ty)) {
            return Ok(());
        }
        Self::fail(
            path,
            format!("expected {}, found {}", wanted.join(" or "), kind(value)),
        )
    }

    fn check_number(
        schema: &Map<String, Value>,
        n: &serde_json::Number,
        path: &[Step],
    ) -> Result<(), SchemaMismatch> {
        let Some(x) = n.as_f64() else { return Ok(()) };
        let bound = |name: &str| schema.get(name).and_then(Value::as_f64);
        let out_of_range = bound("minimum").is_some_and(|min| x < min)
            || bound("maximum").is_some_and(|max| x > max)
            || bound("exclusiveMinimum").is_some_and(|min| x <= min)
            || bound("exclusiveMaximum").is_some_and(|max| x >= max);
        if out_of_range {
            let range = ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"]
                .iter()
                .filter_map(|name| bound(name).map(|b| format!("{name} {b}")))
                .collect::<Vec<_>>()
                .join(", ");
            return Self::fail(path, format!("the number is out of range ({range})"));
        }
        Ok(())
    }

    fn check_string(
        schema: &Map<String, Value>,
        s: &str,
        path: &[Step],
    ) -> Result<(), SchemaMismatch> {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            return Self::fail(
                path,
                format!("expected at least {min} characters, found {len}"),
            );
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            return Self::fail(
                path,
                format!("expected at most {max} characters, found {len}"),
            );
        }
        Ok(())
    }

    fn check_array(
        &self,
        schema: &Map<String, Value>,
        items: &[Value],
        path: &mut Vec<Step>,
        depth: usize,
    ) -> Result<(), SchemaMismatch> {
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            return Self::fail(path, format!("expected at least {min} items, found {len}"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            return Self::fail(path, format!("expected at most {max} items, found {len}"));
        }
        let prefix = match schema.get("prefixItems") {
            Some(Value::Array(prefix)) => prefix.as_slice(),
            _ => &[],
        };
        for (i, item) in items.iter().enumerate() {
            let item_schema = match prefix.get(i) {
                Some(s) => Some(s),
                None => schema.get("items"),
            };
            if let Some(item_schema) = item_schema {
                path.push(Step::Index(i));
                self.check(item_schema, item, path, depth + 1)?;
                path.pop();
            }
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &Map<String, Value>,
        fields: &Map<String, Value>,
        path: &mut Vec<Step>,
        depth: usize,
    ) -> Result<(), SchemaMismatch> {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    return Self::fail(path, format!("missing field `{name}`"));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        // Pattern properties are not checked; with them, extra fields are not judged either.
        let additional = if schema.contains_key("patternProperties") {
            None
        } else {
            schema.get("additionalProperties")
        };
        for (name, field) in fields {
            let field_schema = properties.and_then(|p| p.get(name)).or(additional);
            if let Some(field_schema) = field_schema {
                path.push(Step::Field(name.clone()));
                if field_schema == &Value::Bool(false) {
                    return Self::fail(path, format!("unknown field `{name}`"));
                }
                self.check(field_schema, field, path, depth + 1)?;
                path.pop();
            }
        }
        Ok(())
    }

    fn check_combinators(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &mut Vec<Step>,
        depth: usize,
    ) -> Result<(), SchemaMismatch> {
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for sub in all {
                self.check(sub, value, path, depth + 1)?;
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(Value::Array(alternatives)) = schema.get(keyword) else {
                continue;
            };
            let mut matched = 0;
            let mut nearest: Option<SchemaMismatch> = None;
            for alternative in alternatives {
                match self.check(alternative, value, &mut path.clone(), depth + 1) {
                    Ok(()) => matched += 1,
                    // The alternative that got deepest into the value is the likely intent.
                    Err(e) => {
                        if nearest.as_ref().is_none_or(|n| e.path.len() > n.path.len()) {
                            nearest = Some(e);
                        }
                    }
                }
            }
            if matched == 0
                && let Some(nearest) = nearest
            {
                return Err(nearest);
            }
            if exactly_one && matched > 1 {
                return Self::fail(
                    path,
                    format!("matches {matched} alternatives of `oneOf`, expected exactly one"),
                );
            }
        }
        if let Some(not) = schema.get("not")
            && self.check(not, value, &mut path.clone(), depth + 1).is_ok()
        {
            return Self::fail(path, "matches a schema it must not match".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(schemars::JsonSchema)]
    #[allow(dead_code, reason = "only its schema is used")]
    struct User {
        name: String,
        age: u8,
        tags: Vec<Tag>,
        nick: Option<String>,
    }

    #[derive(schemars::JsonSchema)]
    #[allow(dead_code, reason = "only its schema is used")]
    enum Tag {
        Plain,
        Scored { score: i32 },
    }

    fn check(value: Value) -> Result<(), SchemaMismatch> {
        check_value(&schemars::schema_for!(User).to_value(), &value)
    }

    #[test]
    fn a_value_that_fits_passes() {
        let ok = json!({"name": "a", "age": 3, "tags": ["Plain", {"Scored": {"score": -1}}], "nick": null});
        assert_eq!(check(ok), Ok(()));
    }

    #[test]
    fn a_mismatch_names_the_path() {
        let wrong_type = check(json!({"name": "a", "age": "old", "tags": []}));
        assert_eq!(wrong_type.map_err(|e| e.path).err().as_deref(), Some("age"));
        let out_of_range = check(json!({"name": "a", "age": 300, "tags": []}));
        assert_eq!(
            out_of_range.map_err(|e| e.path).err().as_deref(),
            Some("age")
        );
        let deep =
            check(json!({"name": "a", "age": 1, "tags": ["Plain", {"Scored": {"score": "x"}}]}));
        assert_eq!(
            deep.map_err(|e| e.path).err().as_deref(),
            Some("tags[1].Scored.score")
        );
        let missing = check(json!({"age": 1, "tags": []}));
        assert!(missing.is_err_and(|e| e.path == "." && e.message.contains("`name`")));
    }
}
