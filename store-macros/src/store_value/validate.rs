//! Checks on `#[store(...)]` beyond its syntax: the key rules, family
//! patterns, the default key and the item's shape.

use syn::{Data, DeriveInput, LitStr};

use crate::key_rules::{self, Segment};

/// Most placeholders a family may have: `store_core`'s key arguments are tuples up to four.
pub(crate) const MAX_PLACEHOLDERS: usize = 4;

/// What a key literal declares.
pub(crate) enum KeySpec {
    /// A single key.
    Plain(String),
    /// A key family with these placeholders, in order.
    Family {
        pattern: String,
        placeholders: Vec<String>,
        /// The pattern's text with placeholders filled, for the runtime's `const` key check.
        literal_text: String,
    },
}

impl KeySpec {
    /// The text the runtime's `const` key check is run on.
    pub(crate) fn checked_text(&self) -> &str {
        match self {
            KeySpec::Plain(key) => key,
            KeySpec::Family { literal_text, .. } => literal_text,
        }
    }

    /// The key or pattern as written.
    pub(crate) fn text(&self) -> &str {
        match self {
            KeySpec::Plain(key) => key,
            KeySpec::Family { pattern, .. } => pattern,
        }
    }
}

/// Checks a `key = "..."` literal against the runtime's rules.
pub(crate) fn key(lit: &LitStr) -> darling::Result<KeySpec> {
    let text = lit.value();
    let error = |message: String| darling::Error::custom(message).with_span(lit);
    if text.is_empty() {
        return Err(error(
            "the key must not be empty; write a key such as `#[store(key = \"settings\")]`, or leave `key` out to use the default key derived from the type name"
                .to_owned(),
        ));
    }
    if !key_rules::is_pattern(&text) {
        key_rules::check(&text).map_err(error)?;
        return Ok(KeySpec::Plain(text));
    }
    let segments = key_rules::parse_pattern(&text).map_err(error)?;
    let placeholders: Vec<String> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Placeholder(name) => Some((*name).to_owned()),
            Segment::Literal(_) => None,
        })
        .collect();
    if placeholders.len() > MAX_PLACEHOLDERS {
        return Err(error(format!(
            "a key family has at most {MAX_PLACEHOLDERS} placeholders, this one has {}",
            placeholders.len()
        )));
    }
    let literal_text = key_rules::literal_text(&segments);
    Ok(KeySpec::Family {
        pattern: text,
        placeholders,
        literal_text,
    })
}

/// The key of a type without `key = "..."`: its name in kebab case
/// (`UserSettings` becomes `user-settings`, `HTTPConfig` becomes `http-config`).
pub(crate) fn default_key(ident: &syn::Ident) -> String {
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
            continue;
        }
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary =
                prev.is_lowercase() || prev.is_numeric() || (prev.is_uppercase() && next_is_lower);
            if boundary && !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.extend(c.to_lowercase());
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Unions cannot be serialized by serde's derive, so they cannot be store values.
pub(crate) fn shape(input: &DeriveInput) -> darling::Result<()> {
    match &input.data {
        Data::Union(data) => Err(darling::Error::custom(
            "`StoreValue` cannot be derived for a union; use a struct or an enum",
        )
        .with_span(&data.union_token)),
        Data::Struct(_) | Data::Enum(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_is_the_kebab_cased_type_name() {
        let cases = [
            ("Settings", "settings"),
            ("UserSettings", "user-settings"),
            ("HTTPConfig", "http-config"),
            ("V2Token", "v2-token"),
            ("Token2", "token2"),
            ("snake_case_type", "snake-case-type"),
            ("Über", "über"),
        ];
        for (ident, key) in cases {
            let ident = syn::Ident::new(ident, proc_macro2::Span::call_site());
            assert_eq!(default_key(&ident), key);
        }
    }

    #[test]
    fn a_key_literal_is_a_plain_key_or_a_family() {
        let spec = key(&syn::parse_quote!("user/{id}")).ok();
        assert!(matches!(
            spec,
            Some(KeySpec::Family { ref placeholders, ref literal_text, .. })
                if placeholders == &["id"] && literal_text == "user/x"
        ));
        assert!(matches!(
            key(&syn::parse_quote!("settings")),
            Ok(KeySpec::Plain(_))
        ));
        assert!(key(&syn::parse_quote!("")).is_err());
        assert!(key(&syn::parse_quote!("{a}/{b}/{c}/{d}/{e}")).is_err());
    }
}
