//! Typed values: the [`StoreValue`] trait and the JSON encoding every backend stores.

use std::any::type_name;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Payload;
use crate::error::{Error, Result};
use crate::key::Key;

/// A type with a home in the store: its key (or key-family pattern) travels
/// with the type.
///
/// Derive it with `#[derive(StoreValue)]` (the `derive` feature) and
/// `#[store(key = "...")]`; then `T::key()` names where it lives:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use store_core::{Key, PlainKey, Store, StoreValue};
///
/// #[derive(Serialize, Deserialize)]
/// struct Settings { verbose: bool }
///
/// impl StoreValue for Settings {
///     const KEY: &'static str = "settings";
/// }
/// // One key, not a family: `Settings::key()` is available.
/// impl PlainKey for Settings {}
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> store_core::Result<()> {
/// let store = Store::memory().await?;
/// store.set(Settings::key(), &Settings { verbose: true })?;
/// assert!(store.get(Settings::key())?.is_some_and(|s| s.verbose));
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a store value",
    label = "this type has no key in the store",
    note = "add `#[derive(Serialize, Deserialize, StoreValue)]` and `#[store(key = \"...\")]` to `{Self}` (feature `derive` of `store-core`), or use a `Key<{Self}>` constant with `Store::get`/`Store::set`"
)]
pub trait StoreValue: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The key, or a key-family pattern with `{placeholders}` such as `user/{id}`.
    const KEY: &'static str;

    /// Extra checks on a decoded value (for example a JSON-schema check);
    /// an error here is reported as [`Error::Decode`] naming the key.
    fn validate(_raw: &serde_json::Value) -> Result<(), crate::error::BoxError> {
        Ok(())
    }

    /// The typed key for a type with a plain (non-family) key; reads through it
    /// run [`validate`](StoreValue::validate).
    ///
    /// Only for a [`PlainKey`] type: a key-family type has no single key, so
    /// `T::key()` on it does not compile (use `T::family().key(..)`):
    ///
    /// ```compile_fail
    /// # use serde::{Deserialize, Serialize};
    /// # use store_core::StoreValue;
    /// #[derive(Serialize, Deserialize)]
    /// struct Admissions(u64);
    /// impl StoreValue for Admissions {
    ///     const KEY: &'static str = "ns/{namespace}/admissions";
    /// }
    /// let key = Admissions::key(); // error: `Admissions` has no single key
    /// ```
    fn key() -> Key<Self>
    where
        Self: PlainKey,
    {
        Key::new(Self::KEY).with_validator(Self::validate)
    }

    /// The key family for a type whose key has placeholders; keys made from it
    /// run [`validate`](StoreValue::validate) on reads.
    fn family() -> crate::key::KeyFamily<Self> {
        crate::key::KeyFamily::new(Self::KEY).with_validator(Self::validate)
    }
}

/// A [`StoreValue`] whose [`KEY`](StoreValue::KEY) is one key, not a
/// key-family pattern: what makes [`StoreValue::key`] available.
///
/// `#[derive(StoreValue)]` implements it for a key without `{placeholders}`;
/// a hand-written `StoreValue` impl with a plain key adds `impl PlainKey for
/// T {}`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no single key",
    label = "`{Self}::key()` needs a type with one key (`PlainKey`)",
    note = "a key-family type names one member with `{Self}::family().key(..)` (or the derived `{Self}::key_for(..)`); a type with one key implements `PlainKey`: `#[derive(StoreValue)]` does it, a hand-written `StoreValue` impl adds an empty `impl PlainKey for {Self}`"
)]
pub trait PlainKey: StoreValue {}

/// Encodes a value for `key` as JSON text, refusing it with
/// [`Error::ValueTooLarge`] as soon as the text passes `limit` bytes: a huge
/// value is never encoded whole just to be refused.
///
/// Serialises into a per-thread scratch buffer that keeps its capacity, so a
/// write costs one allocation (the shared text) instead of a growing `String`
/// copied into it and freed.
pub(crate) fn encode<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    limit: Option<usize>,
) -> Result<Payload> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// A buffer grown past this is not kept, so one huge value doesn't pin memory.
    const KEEP: usize = 64 * 1024;
    let limit = limit.unwrap_or(usize::MAX);
    let too_large = |size: usize| Error::ValueTooLarge {
        key: key.to_owned(),
        size,
        limit,
    };
    let encoded = SCRATCH.with(|scratch| {
        // A value whose `Serialize` itself writes to a store re-enters here.
        let mut fresh = Vec::new();
        let mut borrowed = scratch.try_borrow_mut();
        let buffer = match &mut borrowed {
            Ok(buffer) => &mut **buffer,
            Err(_) => &mut fresh,
        };
        buffer.clear();
        let mut writer = Bounded { buffer, limit };
        let written = serde_json::to_writer(&mut writer, value);
        let size = writer.buffer.len();
        let payload = match written {
            Ok(()) => Ok(match std::str::from_utf8(writer.buffer) {
                Ok(text) => Payload::from(text),
                // serde_json writes only valid UTF-8; never reached.
                Err(_) => Payload::from(String::from_utf8_lossy(writer.buffer).as_ref()),
            }),
            Err(e) if e.is_io() && size > limit => Err(too_large(size)),
            Err(e) => Err(Error::Encode {
                key: key.to_owned(),
                source: Arc::new(e),
            }),
        };
        if writer.buffer.capacity() > KEEP {
            *writer.buffer = Vec::new();
        }
        payload
    })?;
    Ok(encoded)
}

/// A buffer that refuses to grow past `limit` bytes, so encoding stops there.
struct Bounded<'a> {
    buffer: &'a mut Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > self.limit {
            return Err(std::io::Error::other("value over the size limit"));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a type's extra validation (see [`StoreValue::validate`]) on a stored value
/// about to be decoded as `type_name`.
pub(crate) fn validate_with(
    key: &str,
    type_name: &'static str,
    payload: &Payload,
    validate: crate::key::Validator,
) -> Result<()> {
    let raw: serde_json::Value = decode(key, payload)?;
    validate(&raw).map_err(|e| {
        #[cfg(feature = "schema")]
        let path = e
            .downcast_ref::<crate::schema::SchemaMismatch>()
            .map_or_else(|| ".".to_owned(), |m| m.path.clone());
        #[cfg(not(feature = "schema"))]
        let path = ".".to_owned();
        Error::Decode {
            key: key.to_owned(),
            type_name,
            path,
            source: Arc::from(e),
        }
    })
}

/// Decodes a value read from the store, running the type's validation first.
///
/// With `text` (the backend keeps values as text, see
/// [`Capabilities::text_values`](crate::Capabilities::text_values)) a value that
/// is a JSON string and does not decode as `T` is decoded from the JSON its text
/// holds; the error reported is the one for that JSON, or the first one when
/// the text is not JSON.
pub(crate) fn decode_stored<T: DeserializeOwned>(
    key: &str,
    payload: &Payload,
    text: bool,
    validate: Option<crate::key::Validator>,
) -> Result<T> {
    let checked = |payload: &Payload| {
        if let Some(validate) = validate {
            validate_with(key, type_name::<T>(), payload, validate)?;
        }
        decode::<T>(key, payload)
    };
    let first = checked(payload);
    if !text || first.is_ok() {
        return first;
    }
    let Ok(inner) = serde_json::from_str::<String>(payload.as_str()) else {
        return first;
    };
    if serde_json::from_str::<serde::de::IgnoredAny>(&inner).is_err() {
        return first;
    }
    checked(&Payload::from(inner))
}

/// Decodes JSON text stored at `key` into `T`, naming the path where it failed.
///
/// The error never quotes the stored value (values may be secrets and errors
/// get logged): what the deserializer said about the value is redacted.
pub fn decode<T: DeserializeOwned>(key: &str, payload: &Payload) -> Result<T> {
    let failed = |path: String, source: serde_json::Error| Error::Decode {
        key: key.to_owned(),
        type_name: type_name::<T>(),
        path,
        source: Arc::new(Redacted::of(&source)),
    };
    let mut de = serde_json::Deserializer::from_str(payload.as_str());
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| failed(e.path().to_string(), e.into_inner()))?;
    de.end().map_err(|e| failed(".".to_owned(), e))?;
    Ok(value)
}

/// What the deserializer said, with the parts of the stored value it quoted
/// taken out: `invalid type: string "hunter2", expected u32` becomes
/// `invalid type: string (redacted), expected u32`. What was expected, the
/// line and the column stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redacted(String);

impl Redacted {
    fn of(error: &serde_json::Error) -> Self {
        let message = error.to_string();
        // serde quotes data as "text" or `text`, and only before ", expected".
        let (data, expected) = match message.find(", expected") {
            Some(at) => message.split_at(at),
            None => (message.as_str(), ""),
        };
        let mut out = String::with_capacity(message.len());
        let mut rest = data;
        while let Some(open) = rest.find(['"', '`']) {
            let quote = &rest[open..=open];
            out.push_str(&rest[..open]);
            match rest[open + 1..].rfind(quote) {
                Some(close) => {
                    out.push_str("(redacted)");
                    rest = &rest[open + 1 + close + 1..];
                }
                None => {
                    out.push_str("(redacted)");
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out.push_str(expected);
        Redacted(out)
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "only decoded")]
    struct User {
        name: String,
        age: u8,
    }

    #[test]
    fn a_decode_error_never_quotes_the_stored_value() {
        for (text, gone) in [
            (r#""hunter2""#, "hunter2"),
            ("123456789", "123456789"),
            (r#""sec\"ret""#, "sec"),
            (r#"{"name":"a","age":"topsecret"}"#, "topsecret"),
        ] {
            let err = decode::<u8>("k", &Payload::from(text))
                .and_then(|_| decode::<User>("k", &Payload::from(text)).map(|_| 0))
                .expect_err("does not decode");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(gone), "{shown}");
            assert!(shown.contains("expected"), "{shown}");
        }
    }

    #[test]
    fn a_decode_error_names_the_key_the_type_and_the_path() {
        let err = decode::<User>("user/1", &Payload::from(r#"{"name":"a","age":"old"}"#))
            .expect_err("age is a string");
        match err {
            Error::Decode {
                key,
                type_name,
                path,
                ..
            } => {
                assert_eq!(key, "user/1");
                assert!(type_name.ends_with("User"));
                assert_eq!(path, "age");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn trailing_garbage_is_a_decode_error() {
        assert!(decode::<u32>("k", &Payload::from("1 2")).is_err());
        assert!(decode::<u32>("k", &Payload::from("not json")).is_err());
        assert_eq!(decode::<u32>("k", &Payload::from(" 7 ")).ok(), Some(7));
    }
}
