//! The key rules of `store_core::key`, mirrored so a bad key literal is
//! reported at the literal. Generated code also asserts each key with
//! `store_core::key::check` in a `const`, so the two cannot drift unnoticed.

/// `store_core::key::MAX_KEY_LEN`.
pub(crate) const MAX_KEY_LEN: usize = 1024;

/// Why a key breaks the rules, phrased for a compile error.
pub(crate) fn check(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key must not be empty".to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the key is {} bytes long; keys are at most {MAX_KEY_LEN} bytes",
            key.len()
        ));
    }
    if let Some((at, c)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "the key contains the control character `{}` at byte {at}; keys must not contain control characters",
            c.escape_default()
        ));
    }
    Ok(())
}

/// One piece of a key-family pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'p> {
    Literal(&'p str),
    Placeholder(&'p str),
}

/// Whether the key has placeholders and so names a family.
pub(crate) fn is_pattern(key: &str) -> bool {
    key.contains(['{', '}'])
}

/// Splits a pattern such as `user/{id}` the way `store_core::key::check_pattern` does.
pub(crate) fn parse_pattern(pattern: &str) -> Result<Vec<Segment<'_>>, String> {
    let mut segments = Vec::new();
    let mut rest = pattern;
    let mut offset = 0;
    while !rest.is_empty() {
        let Some(i) = rest.find(['{', '}']) else {
            segments.push(Segment::Literal(rest));
            break;
        };
        if rest.as_bytes()[i] == b'}' {
            return Err(format!(
                "unmatched `}}` at byte {}; placeholders look like `{{name}}`",
                offset + i
            ));
        }
        if i > 0 {
            segments.push(Segment::Literal(&rest[..i]));
        }
        let after = &rest[i + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!(
                "placeholder opened at byte {} is never closed; add a `}}`",
                offset + i
            ));
        };
        let name = &after[..close];
        if !is_identifier(name) {
            return Err(format!(
                "placeholder `{{{name}}}` is not a valid identifier; name it like a variable, e.g. `{{id}}`"
            ));
        }
        if let Some(Segment::Placeholder(prev)) = segments.last() {
            return Err(format!(
                "placeholders `{{{prev}}}` and `{{{name}}}` must be separated by literal text, e.g. `{{{prev}}}/{{{name}}}`"
            ));
        }
        segments.push(Segment::Placeholder(name));
        let consumed = i + 1 + close + 1;
        rest = &rest[consumed..];
        offset += consumed;
    }
    check(&literal_text(&segments))
        .map_err(|reason| format!("the pattern's text is not a valid key: {reason}"))?;
    Ok(segments)
}

/// The pattern with each placeholder replaced by `x`: the text the runtime's
/// key check sees for the shortest key of the family.
pub(crate) fn literal_text(segments: &[Segment<'_>]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => *l,
            Segment::Placeholder(_) => "x",
        })
        .collect()
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    name != "_" && chars.all(|c| c == '_' || c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_runtime_rules() {
        for ok in ["https://onReady", "a/b~c", "größe", "..", "a b", "a\u{a0}"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a\nb", "a\u{7f}", "a\u{85}"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(check(&"x".repeat(MAX_KEY_LEN)).is_ok());
        assert!(check(&"x".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn patterns_split_into_literals_and_placeholders() {
        assert_eq!(
            parse_pattern("t/{tenant}/j/{job}"),
            Ok(vec![
                Segment::Literal("t/"),
                Segment::Placeholder("tenant"),
                Segment::Literal("/j/"),
                Segment::Placeholder("job"),
            ])
        );
        for bad in ["a/{id", "a/{1x}", "{a}{b}", "a}", "{_}", "{}"] {
            assert!(parse_pattern(bad).is_err(), "{bad}");
        }
    }
}
