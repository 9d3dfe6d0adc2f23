//! A CRD's structural schema applied to objects as kube-apiserver applies it:
//! unknown fields are pruned, `null`s of non-nullable fields dropped,
//! defaults filled in, then the object is validated (types, `required`,
//! `enum`, bounds on numbers, strings, arrays and maps). Failures become
//! one 422 with a cause per field. Not covered: `pattern`, `format`,
//! `oneOf`/`anyOf`/`allOf`/`not` and CEL rules.
//!
//! At the root, `apiVersion`, `kind` and `metadata` are the server's and
//! are neither pruned nor validated here.
//!
//! As kube-apiserver 1.20 does, an empty string in a non-nullable `string`
//! field is refused as if it were `null`.

use serde_json::{Map, Value, json};

const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// One field that breaks the schema, as a Kubernetes field error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation {
    pub(crate) field: String,
    pub(crate) reason: &'static str,
    /// The field error's text after the field path, e.g. `Required value`.
    pub(crate) detail: String,
}

/// Prunes and drops nulls in `object` (in place), and fills defaults when
/// `defaults` is set (not for applied configurations: the server's defaults
/// belong to no field manager).
pub(crate) fn normalize(schema: &Value, object: &mut Value, defaults: bool) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let keep: Vec<String> = map
        .keys()
        .filter(|key| !ROOT_FIELDS.contains(&key.as_str()))
        .cloned()
        .collect();
    let mut rest: Map<String, Value> = keep
        .iter()
        .filter_map(|key| map.remove(key).map(|value| (key.clone(), value)))
        .collect();
    let mut rest_value = Value::Object(std::mem::take(&mut rest));
    normalize_value(schema, &mut rest_value, defaults);
    if let Value::Object(rest) = rest_value {
        map.extend(rest);
    }
}

fn normalize_value(schema: &Value, value: &mut Value, defaults: bool) {
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = preserves_unknown(schema);
            let allowed_extra =
                preserve || additional.is_some_and(|a| a.is_object() || a == &Value::Bool(true));
            map.retain(|key, child| {
                let child_schema = properties
                    .and_then(|p| p.get(key))
                    .or_else(|| additional.filter(|a| a.is_object()));
                match child_schema {
                    // A null where null is not allowed is dropped, unless a default replaces it.
                    Some(child_schema) if child.is_null() && !nullable(child_schema) => {
                        defaults && child_schema.get("default").is_some()
                    }
                    Some(_) => true,
                    None => allowed_extra,
                }
            });
            if let Some(properties) = properties.filter(|_| defaults) {
                for (key, child_schema) in properties {
                    let missing = map
                        .get(key)
                        .is_none_or(|child| child.is_null() && !nullable(child_schema));
                    if missing && let Some(default) = child_schema.get("default") {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            for (key, child) in map.iter_mut() {
                let child_schema = properties
                    .and_then(|p| p.get(key))
                    .or_else(|| additional.filter(|a| a.is_object()));
                if let Some(child_schema) = child_schema {
                    normalize_value(child_schema, child, defaults);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items.retain(|item| !item.is_null() || nullable(item_schema));
                for item in items.iter_mut() {
                    normalize_value(item_schema, item, defaults);
                }
            }
        }
        _ => {}
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

/// The fields of `object` that break `schema`.
pub(crate) fn validate(schema: &Value, object: &Value) -> Vec<Violation> {
    let mut violations = Vec::new();
    let Some(map) = object.as_object() else {
        return violations;
    };
    let rest: Map<String, Value> = map
        .iter()
        .filter(|(key, _)| !ROOT_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let mut root_schema = schema.clone();
    if let Some(required) = root_schema
        .get_mut("required")
        .and_then(Value::as_array_mut)
    {
        required.retain(|field| field.as_str().is_none_or(|f| !ROOT_FIELDS.contains(&f)));
    }
    validate_value(&root_schema, &Value::Object(rest), "", &mut violations);
    violations
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(number: &serde_json::Number) -> bool {
    number.is_i64() || number.is_u64() || number.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// How kube-apiserver prints a value in `Invalid value: ...`.
fn repr(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

fn invalid(out: &mut Vec<Violation>, path: &str, value: &Value, message: String) {
    out.push(Violation {
        field: path.to_owned(),
        reason: "FieldValueInvalid",
        detail: format!("Invalid value: {}: {message}", repr(value)),
    });
}

fn validate_value(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let shown = if path.is_empty() { "body" } else { path };
    // kube-apiserver 1.20's validator takes a Go zero value for `null`, so an
    // empty string in a non-nullable string field is refused as `null`, on
    // every write (create, update, every patch kind, apply).
    if value.is_null()
        || (value.as_str() == Some("")
            && !nullable(schema)
            && schema.get("type").and_then(Value::as_str) == Some("string"))
    {
        if !nullable(schema)
            && let Some(expected) = schema.get("type").and_then(Value::as_str)
        {
            let message = format!("{shown} in body must be of type {expected}: \"null\"");
            invalid(out, path, &json!("null"), message);
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            let actual = type_name(value);
            let message = format!("{shown} in body must be of type integer,string: \"{actual}\"");
            invalid(out, path, &json!(actual), message);
            return;
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let fits = actual == expected || (expected == "number" && actual == "integer");
        if !fits {
            let message = format!("{shown} in body must be of type {expected}: \"{actual}\"");
            invalid(out, path, &json!(actual), message);
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        {
            let values: Vec<String> = allowed
                .iter()
                .map(|v| match v {
                    Value::String(s) => format!("{s:?}"),
                    other => format!("\"{other}\""),
                })
                .collect();
            out.push(Violation {
                field: path.to_owned(),
                reason: "FieldValueNotSupported",
                detail: format!(
                    "Unsupported value: {}: supported values: {}",
                    repr(value),
                    values.join(", ")
                ),
            });
        }
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let limit = |key: &str| schema.get(key).and_then(Value::as_u64);
    let flag = |key: &str| schema.get(key).and_then(Value::as_bool) == Some(true);
    match value {
        Value::Number(number) => {
            let n = number.as_f64().unwrap_or(0.0);
            if let Some(max) = bound("maximum") {
                if flag("exclusiveMaximum") && n >= max {
                    invalid(
                        out,
                        path,
                        value,
                        format!("{shown} in body should be less than {max}"),
                    );
                } else if n > max {
                    invalid(
                        out,
                        path,
                        value,
                        format!("{shown} in body should be less than or equal to {max}"),
                    );
                }
            }
            if let Some(min) = bound("minimum") {
                if flag("exclusiveMinimum") && n <= min {
                    invalid(
                        out,
                        path,
                        value,
                        format!("{shown} in body should be greater than {min}"),
                    );
                } else if n < min {
                    invalid(
                        out,
                        path,
                        value,
                        format!("{shown} in body should be greater than or equal to {min}"),
                    );
                }
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(max) = limit("maxLength").filter(|max| length > *max) {
                invalid(
                    out,
                    path,
                    value,
                    format!("{shown} in body should be at most {max} chars long"),
                );
            }
            if let Some(min) = limit("minLength").filter(|min| length < *min) {
                invalid(
                    out,
                    path,
                    value,
                    format!("{shown} in body should be at least {min} chars long"),
                );
            }
        }
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(max) = limit("maxItems").filter(|max| count > *max) {
                invalid(
                    out,
                    path,
                    value,
                    format!("{shown} in body should have at most {max} items"),
                );
            }
            if let Some(min) = limit("minItems").filter(|min| count < *min) {
                invalid(
                    out,
                    path,
                    value,
                    format!("{shown} in body should have at least {min} items"),
                );
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    validate_value(item_schema, item, &format!("{path}[{index}]"), out);
                }
            }
        }
        Value::Object(map) => {
            let count = map.len() as u64;
            if let Some(max) = limit("maxProperties").filter(|max| count > *max) {
                invalid(
                    out,
                    path,
                    value,
                    format!("{shown} in body should have at most {max} properties"),
                );
            }
            if let Some(min) = limit("minProperties").filter(|min| count < *min) {
                invalid(
                    out,
                    path,
                    value,
                    format!("{shown} in body should have at least {min} properties"),
                );
            }
            for field in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(field) = field.as_str()
                    && !map.contains_key(field)
                {
                    out.push(Violation {
                        field: child_path(path, field),
                        reason: "FieldValueRequired",
                        detail: "Required value".to_owned(),
                    });
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                if let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) {
                    validate_value(child_schema, child, &child_path(path, key), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": { "type": "integer", "minimum": 0, "maximum": 10 },
                        "color": { "type": "string", "enum": ["red", "blue"], "nullable": true },
                        "mode": { "type": "string", "default": "auto" },
                        "tags": { "type": "object", "additionalProperties": { "type": "string" } },
                        "free": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                    },
                },
            },
        })
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_filled() {
        let mut object = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": { "name": "a", "anything": 1 },
            "spec": { "size": 1, "unknown": true, "mode": null, "free": { "kept": 1 }, "tags": { "a": "b" } },
            "extra": 1,
        });
        normalize(&schema(), &mut object, true);
        assert_eq!(
            object,
            json!({
                "apiVersion": "x/v1", "kind": "X", "metadata": { "name": "a", "anything": 1 },
                "spec": { "size": 1, "mode": "auto", "free": { "kept": 1 }, "tags": { "a": "b" } },
            })
        );
        assert!(validate(&schema(), &object).is_empty());
    }

    #[test]
    fn violations_name_each_field_like_the_api_server() {
        let object = json!({ "spec": { "size": "big", "color": "green", "tags": { "a": 1 } } });
        let violations = validate(&schema(), &object);
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["spec.color", "spec.size", "spec.tags.a"]);
        assert_eq!(
            violations[1].detail,
            "Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
        );
        assert!(
            violations[0]
                .detail
                .starts_with("Unsupported value: \"green\"")
        );
        let missing = validate(&schema(), &json!({ "spec": {} }));
        assert_eq!(missing[0].field, "spec.size");
        assert_eq!(missing[0].detail, "Required value");
        // kube-apiserver 1.20.2 answers exactly this for `""` in a map of strings.
        let empty = validate(
            &schema(),
            &json!({ "spec": { "size": 1, "tags": { "a": "" } } }),
        );
        assert_eq!(empty[0].field, "spec.tags.a");
        assert_eq!(
            empty[0].detail,
            "Invalid value: \"null\": spec.tags.a in body must be of type string: \"null\""
        );
        let nullable = json!({ "spec": { "size": 1, "color": "" } });
        assert!(
            validate(&schema(), &nullable)
                .iter()
                .all(|v| !v.detail.contains("type string")),
            "a nullable string may be empty"
        );
        let bounded = validate(&schema(), &json!({ "spec": { "size": 11 } }));
        assert_eq!(
            bounded[0].detail,
            "Invalid value: 11: spec.size in body should be less than or equal to 10"
        );
    }
}
