//! Keys: the rules, typed key constants and key families.
//!
//! # Which keys are valid
//!
//! A key is any UTF-8 string that
//!
//! - is not empty,
//! - is at most [`MAX_KEY_LEN`] bytes long (UTF-8 encoded), and
//! - contains no control character (U+0000 to U+001F, U+007F, U+0080 to U+009F).
//!
//! Everything else is allowed and kept byte for byte, including `/`, `~`,
//! `..`, spaces, URLs such as `https://onReady` and non-ASCII text: backends
//! escape keys for their own storage, so no key can reach outside its store.
//! Keys are checked at the call ([`Store::set`](crate::Store::set) and friends
//! return [`InvalidKey`](crate::Error::InvalidKey)), never later in a
//! background flush. The check is a `const fn`, so a [`Key`] constant with a
//! bad key fails to compile.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;

/// Why a key is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is the empty string.
    #[error("a key must not be empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("a key must be at most {max} bytes long, this one is {len}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit, [`MAX_KEY_LEN`].
        max: usize,
    },
    /// The key holds a control character.
    #[error("a key must not contain control characters (found one at byte {at})")]
    ControlCharacter {
        /// Byte offset of the offending character.
        at: usize,
    },
    /// A key family was given the wrong number of arguments.
    #[error("the key family takes {expected} arguments, {got} were given")]
    ArgumentCount {
        /// Placeholders in the pattern.
        expected: usize,
        /// Arguments given.
        got: usize,
    },
    /// A key-family argument is empty, or holds (or ends in the start of) the
    /// text that follows its placeholder, so the key could not be parsed back.
    #[error("key-family argument {index} is empty or holds the separator that follows it")]
    AmbiguousArgument {
        /// Zero-based position of the argument.
        index: usize,
    },
    /// The key family's pattern is malformed (see [`check_pattern`]).
    #[error("the key family's pattern is malformed")]
    MalformedPattern,
}

/// Checks `key` against the rules above.
///
/// A `const fn`, so the same rules hold at compile time for [`Key::new`] and
/// in the macros' generated code.
pub const fn check(key: &str) -> Result<(), KeyError> {
    let bytes = key.as_bytes();
    if bytes.is_empty() {
        return Err(KeyError::Empty);
    }
    if bytes.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong {
            len: bytes.len(),
            max: MAX_KEY_LEN,
        });
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // C0 controls and DEL are single bytes; C1 controls (U+0080..=U+009F)
        // are encoded as 0xC2 followed by 0x80..=0x9F.
        if b < 0x20 || b == 0x7F || (b == 0xC2 && i + 1 < bytes.len() && bytes[i + 1] < 0xA0) {
            return Err(KeyError::ControlCharacter { at: i });
        }
        i += 1;
    }
    Ok(())
}

/// Checks `key`, returning the store's error type.
pub fn validate(key: &str) -> Result<()> {
    check(key).map_err(|reason| Error::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// A typed key: a key name bound to the type stored under it.
///
/// `Key` constants make the key and its type travel together, so a read
/// cannot ask for another type by mistake:
///
/// ```
/// use store_core::{Key, Store};
///
/// const RETRIES: Key<u32> = Key::new("retries");
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> store_core::Result<()> {
/// let store = Store::memory().await?;
/// store.set(RETRIES, &3)?;
/// assert_eq!(store.get(RETRIES)?.as_deref(), Some(&3));
/// # Ok(()) }
/// ```
///
/// A constant with an invalid key does not compile:
///
/// ```compile_fail
/// const BAD: store_core::Key<u32> = store_core::Key::new("");
/// let _ = BAD;
/// ```
pub struct Key<T: ?Sized> {
    name: Cow<'static, str>,
    validator: Option<Validator>,
    ty: PhantomData<fn() -> T>,
}

/// An extra check run on a stored value before it is decoded through a typed
/// key (see [`StoreValue::validate`](crate::StoreValue::validate)).
pub type Validator = fn(&serde_json::Value) -> std::result::Result<(), crate::error::BoxError>;

impl<T: ?Sized> Key<T> {
    /// A key constant. Panics at compile time (in a `const`) or at run time when
    /// `name` breaks the [key rules](self).
    pub const fn new(name: &'static str) -> Self {
        if check(name).is_err() {
            panic!("invalid store key: see store_core::key for the rules");
        }
        Key {
            name: Cow::Borrowed(name),
            validator: None,
            ty: PhantomData,
        }
    }

    /// The same key, running `validator` on every value read through it.
    pub const fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = Some(validator);
        self
    }

    /// A key built at run time, checked against the [key rules](self).
    pub fn try_from_string(name: String) -> Result<Self> {
        validate(&name)?;
        Ok(Key {
            name: Cow::Owned(name),
            validator: None,
            ty: PhantomData,
        })
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl<T: ?Sized> Clone for Key<T> {
    fn clone(&self) -> Self {
        Key {
            name: self.name.clone(),
            validator: self.validator,
            ty: PhantomData,
        }
    }
}

impl<T: ?Sized> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key<{}>({:?})", std::any::type_name::<T>(), self.name)
    }
}

impl<T: ?Sized> fmt::Display for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<T: ?Sized> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<T: ?Sized> Eq for Key<T> {}

/// Anything a store call accepts as a key for values of type `T`.
///
/// Strings work for every `T`; a [`Key<T>`] only for its own `T`, which is
/// how `store.get(KEY)` knows the type without a turbofish.
pub trait AsKey<T: ?Sized> {
    /// The key as a string.
    fn as_key(&self) -> &str;

    /// The check to run on values read through this key, if any.
    fn validator(&self) -> Option<Validator> {
        None
    }
}

impl<T: ?Sized> AsKey<T> for &str {
    fn as_key(&self) -> &str {
        self
    }
}

impl<T: ?Sized> AsKey<T> for String {
    fn as_key(&self) -> &str {
        self
    }
}

impl<T: ?Sized> AsKey<T> for &String {
    fn as_key(&self) -> &str {
        self
    }
}

impl<T: ?Sized> AsKey<T> for Key<T> {
    fn as_key(&self) -> &str {
        &self.name
    }

    fn validator(&self) -> Option<Validator> {
        self.validator
    }
}

impl<T: ?Sized> AsKey<T> for &Key<T> {
    fn as_key(&self) -> &str {
        &self.name
    }

    fn validator(&self) -> Option<Validator> {
        self.validator
    }
}

/// Any key, whatever type it is bound to: what calls that never decode a value
/// (such as [`Store::remove`](crate::Store::remove)) accept.
pub trait AnyKey {
    /// The key as a string.
    fn key_name(&self) -> &str;
}

impl AnyKey for &str {
    fn key_name(&self) -> &str {
        self
    }
}

impl AnyKey for String {
    fn key_name(&self) -> &str {
        self
    }
}

impl AnyKey for &String {
    fn key_name(&self) -> &str {
        self
    }
}

impl<T: ?Sized> AnyKey for Key<T> {
    fn key_name(&self) -> &str {
        &self.name
    }
}

impl<T: ?Sized> AnyKey for &Key<T> {
    fn key_name(&self) -> &str {
        &self.name
    }
}

/// One piece of a parsed key-family pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'p> {
    Literal(&'p str),
    Placeholder(&'p str),
}

/// Why a key-family pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// A `{` without its `}`.
    #[error("placeholder opened at byte {at} is never closed")]
    Unclosed {
        /// Byte offset of the `{`.
        at: usize,
    },
    /// A placeholder whose name is not a Rust identifier.
    #[error("placeholder `{{{name}}}` is not a valid identifier")]
    BadName {
        /// The name found between the braces.
        name: String,
    },
    /// Two placeholders with nothing between them cannot be told apart when parsing.
    #[error("placeholders `{{{first}}}` and `{{{second}}}` must be separated by literal text")]
    Adjacent {
        /// The first placeholder.
        first: String,
        /// The one right after it.
        second: String,
    },
    /// A `}` with no `{` before it.
    #[error("unmatched `}}` at byte {at}")]
    UnmatchedClose {
        /// Byte offset of the `}`.
        at: usize,
    },
    /// The pattern's literal text breaks the key rules.
    #[error("pattern text is not a valid key: {0}")]
    Key(KeyError),
}

fn parse_pattern(pattern: &str) -> std::result::Result<Vec<Segment<'_>>, PatternError> {
    let mut segments = Vec::new();
    let mut rest = pattern;
    let mut offset = 0;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                segments.push(Segment::Literal(rest));
                break;
            }
            Some(i) if rest.as_bytes()[i] == b'}' => {
                return Err(PatternError::UnmatchedClose { at: offset + i });
            }
            Some(i) => {
                if i > 0 {
                    segments.push(Segment::Literal(&rest[..i]));
                }
                let after = &rest[i + 1..];
                let close = after
                    .find('}')
                    .ok_or(PatternError::Unclosed { at: offset + i })?;
                let name = &after[..close];
                if !is_identifier(name) {
                    return Err(PatternError::BadName {
                        name: name.to_owned(),
                    });
                }
                if let Some(Segment::Placeholder(prev)) = segments.last() {
                    return Err(PatternError::Adjacent {
                        first: (*prev).to_owned(),
                        second: name.to_owned(),
                    });
                }
                segments.push(Segment::Placeholder(name));
                let consumed = i + 1 + close + 1;
                rest = &rest[consumed..];
                offset += consumed;
            }
        }
    }
    let literal: String = segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => *l,
            Segment::Placeholder(_) => "x",
        })
        .collect();
    check(&literal).map_err(PatternError::Key)?;
    Ok(segments)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    name != "_" && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Checks a key-family pattern such as `user/{id}`; the macros use the same
/// function to reject bad patterns at compile time.
pub fn check_pattern(pattern: &str) -> std::result::Result<Vec<String>, PatternError> {
    Ok(parse_pattern(pattern)?
        .into_iter()
        .filter_map(|s| match s {
            Segment::Placeholder(name) => Some(name.to_owned()),
            Segment::Literal(_) => None,
        })
        .collect())
}

/// A family of keys sharing one pattern, such as `user/{id}` or
/// `tenant/{tenant}/job/{job}`, all holding values of type `T`.
///
/// Arguments fill the placeholders in order; [`parse`](KeyFamily::parse)
/// reverses it. An argument may not contain the literal text that follows its
/// placeholder (it would make the key ambiguous), so `key` and `parse` always
/// round-trip.
///
/// ```
/// use store_core::KeyFamily;
///
/// static JOBS: KeyFamily<u64> = KeyFamily::new("tenant/{tenant}/job/{job}");
///
/// let key = JOBS.key(("acme", 42)).unwrap();
/// assert_eq!(key.as_str(), "tenant/acme/job/42");
/// assert_eq!(JOBS.parse::<(String, u32)>("tenant/acme/job/42"), Some(("acme".to_owned(), 42)));
/// assert_eq!(JOBS.parse::<(String, u32)>("tenant/acme/other/42"), None);
/// ```
pub struct KeyFamily<T: ?Sized> {
    pattern: &'static str,
    validator: Option<Validator>,
    ty: PhantomData<fn() -> T>,
}

impl<T: ?Sized> fmt::Debug for KeyFamily<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyFamily<{}>({:?})",
            std::any::type_name::<T>(),
            self.pattern
        )
    }
}

impl<T: ?Sized> KeyFamily<T> {
    /// A family with the given pattern. The pattern is checked when a key is
    /// made or parsed (and at compile time by `#[derive(StoreValue)]`).
    pub const fn new(pattern: &'static str) -> Self {
        KeyFamily {
            pattern,
            validator: None,
            ty: PhantomData,
        }
    }

    /// The same family, running `validator` on every value read through its keys.
    pub const fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = Some(validator);
        self
    }

    /// The pattern, such as `user/{id}`.
    pub fn pattern(&self) -> &'static str {
        self.pattern
    }

    /// The placeholder names in order.
    pub fn placeholders(&self) -> std::result::Result<Vec<String>, PatternError> {
        check_pattern(self.pattern)
    }

    /// The key for these arguments (one per placeholder, in order).
    pub fn key(&self, args: impl KeyArgs) -> Result<Key<T>> {
        let invalid = |reason| Error::InvalidKey {
            key: self.pattern.to_owned(),
            reason,
        };
        let segments = parse_pattern(self.pattern).map_err(|e| match e {
            PatternError::Key(reason) => invalid(reason),
            _ => invalid(KeyError::MalformedPattern),
        })?;
        let values = args.to_args();
        let wanted = segments
            .iter()
            .filter(|s| matches!(s, Segment::Placeholder(_)))
            .count();
        if values.len() != wanted {
            return Err(invalid(KeyError::ArgumentCount {
                expected: wanted,
                got: values.len(),
            }));
        }
        let mut key = String::with_capacity(self.pattern.len() + 16);
        let mut values = values.into_iter().enumerate();
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Literal(text) => key.push_str(text),
                Segment::Placeholder(_) => {
                    let (index, value) = values.next().unwrap_or_default();
                    let next_literal = match segments.get(i + 1) {
                        Some(Segment::Literal(text)) => Some(*text),
                        _ => None,
                    };
                    // Parsing ends this argument at the first occurrence of the
                    // next literal, so that must be the one right after it: an
                    // argument holding the literal, or ending in a part of it that
                    // starts it again (`a/job` before `/job/`), is ambiguous.
                    let ambiguous = next_literal
                        .is_some_and(|l| format!("{value}{l}").find(l) != Some(value.len()));
                    if value.is_empty() || ambiguous {
                        return Err(Error::InvalidKey {
                            key: format!("{key}{value}"),
                            reason: KeyError::AmbiguousArgument { index },
                        });
                    }
                    key.push_str(&value);
                }
            }
        }
        let mut key = Key::try_from_string(key)?;
        key.validator = self.validator;
        Ok(key)
    }

    /// Parses a key of this family back into its arguments; `None` when the key
    /// is not of this family or an argument does not parse.
    pub fn parse<A: FromKeyArgs>(&self, key: &str) -> Option<A> {
        let segments = parse_pattern(self.pattern).ok()?;
        let mut rest = key;
        let mut values = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Literal(text) => rest = rest.strip_prefix(text)?,
                Segment::Placeholder(_) => {
                    let end = match segments.get(i + 1) {
                        Some(Segment::Literal(text)) => rest.find(text)?,
                        _ => rest.len(),
                    };
                    if end == 0 {
                        return None;
                    }
                    values.push(&rest[..end]);
                    rest = &rest[end..];
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        A::from_args(&values)
    }

    /// Whether `key` belongs to this family.
    pub fn matches(&self, key: &str) -> bool {
        self.parse::<Vec<String>>(key).is_some()
    }
}

/// Arguments for [`KeyFamily::key`]: one [`KeyArg`] or a tuple of them.
pub trait KeyArgs {
    /// The arguments rendered as text, in placeholder order.
    fn to_args(&self) -> Vec<String>;
}

/// A value that can fill one placeholder of a key family: strings, integers,
/// `char`, `bool`. Implement it for your own `Display` identifier types.
pub trait KeyArg: fmt::Display {}

macro_rules! key_arg {
    ($($ty:ty),+) => {$(
        impl KeyArg for $ty {}
        impl KeyArgs for $ty {
            fn to_args(&self) -> Vec<String> {
                vec![self.to_string()]
            }
        }
    )+};
}

key_arg!(
    str, String, char, bool, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl<T: KeyArg + ?Sized> KeyArg for &T {}

impl<T: KeyArgs + ?Sized> KeyArgs for &T {
    fn to_args(&self) -> Vec<String> {
        (**self).to_args()
    }
}

macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: KeyArg),+> KeyArgs for ($($name,)+) {
            #[allow(non_snake_case, reason = "tuple fields named after their type parameters")]
            fn to_args(&self) -> Vec<String> {
                let ($($name,)+) = self;
                vec![$($name.to_string()),+]
            }
        }

        impl<$($name: FromStr),+> FromKeyArgs for ($($name,)+) {
            #[allow(non_snake_case, reason = "tuple fields named after their type parameters")]
            fn from_args(args: &[&str]) -> Option<Self> {
                let mut it = args.iter();
                $(let $name = it.next()?.parse().ok()?;)+
                if it.next().is_some() {
                    return None;
                }
                Some(($($name,)+))
            }
        }
    };
}

tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);

/// What [`KeyFamily::parse`] can produce: a tuple of `FromStr` values, or a
/// `Vec<String>` of every argument.
pub trait FromKeyArgs: Sized {
    /// Builds the value from the placeholder texts, `None` if they do not fit.
    fn from_args(args: &[&str]) -> Option<Self>;
}

impl FromKeyArgs for Vec<String> {
    fn from_args(args: &[&str]) -> Option<Self> {
        Some(args.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl FromKeyArgs for String {
    fn from_args(args: &[&str]) -> Option<Self> {
        match args {
            [one] => Some((*one).to_owned()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_common_in_the_replaced_systems_are_valid() {
        for key in [
            "https://onReady",
            "a/b~c",
            "größe",
            "日本語",
            "..",
            "a b",
            "~1",
        ] {
            assert_eq!(check(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn empty_long_and_control_keys_are_rejected() {
        assert_eq!(check(""), Err(KeyError::Empty));
        assert!(matches!(
            check(&"x".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong { .. })
        ));
        assert_eq!(check(&"x".repeat(MAX_KEY_LEN)), Ok(()));
        assert_eq!(check("a\nb"), Err(KeyError::ControlCharacter { at: 1 }));
        assert_eq!(check("a\u{7f}"), Err(KeyError::ControlCharacter { at: 1 }));
        assert_eq!(check("a\u{85}"), Err(KeyError::ControlCharacter { at: 1 }));
        // U+00A0 (no-break space) shares the 0xC2 lead byte but is not a control.
        assert_eq!(check("a\u{a0}"), Ok(()));
    }

    #[test]
    fn a_family_formats_and_parses() {
        let users: KeyFamily<u8> = KeyFamily::new("user/{id}");
        assert_eq!(
            users.key(7).map(|k| k.as_str().to_owned()).ok(),
            Some("user/7".into())
        );
        assert_eq!(users.parse::<(u32,)>("user/7"), Some((7,)));
        assert_eq!(users.parse::<String>("user/bob"), Some("bob".into()));
        assert_eq!(users.parse::<String>("user/"), None);
        assert_eq!(users.parse::<String>("users/bob"), None);
        assert!(
            users.matches("user/a/b"),
            "the last placeholder takes the rest"
        );
    }

    #[test]
    fn a_family_argument_holding_the_next_separator_is_rejected() {
        let family: KeyFamily<u8> = KeyFamily::new("{a}/{b}");
        assert!(family.key(("x/y", "z")).is_err());
        assert_eq!(
            family.key(("x", "y/z")).map(|k| k.to_string()).ok(),
            Some("x/y/z".into())
        );
        assert!(family.key(("", "z")).is_err());
        assert!(family.key("only-one").is_err());
    }

    #[test]
    fn an_argument_ending_in_the_start_of_a_self_overlapping_separator_is_rejected() {
        let family: KeyFamily<u8> = KeyFamily::new("tenant/{tenant}/job/{job}");
        // `tenant/a/job/job/42` would parse back as ("a", "job/42").
        assert!(family.key(("a/job", "42")).is_err());
        let key = family.key(("a/jo", "42")).map(|k| k.to_string());
        assert_eq!(key.as_deref().ok(), Some("tenant/a/jo/job/42"));
        assert_eq!(
            family.parse::<(String, u32)>("tenant/a/jo/job/42"),
            Some(("a/jo".into(), 42))
        );
    }

    #[test]
    fn malformed_patterns_are_reported() {
        assert_eq!(
            check_pattern("a/{id"),
            Err(PatternError::Unclosed { at: 2 })
        );
        assert!(matches!(
            check_pattern("a/{1x}"),
            Err(PatternError::BadName { .. })
        ));
        assert!(matches!(
            check_pattern("{a}{b}"),
            Err(PatternError::Adjacent { .. })
        ));
        assert!(matches!(
            check_pattern("a}"),
            Err(PatternError::UnmatchedClose { at: 1 })
        ));
        assert_eq!(
            check_pattern("t/{tenant}/j/{job}"),
            Ok(vec!["tenant".into(), "job".into()])
        );
    }
}
