//! The local view: the backend's state as of one revision, fed by the watch.
//!
//! Reads never leave the process. The view holds the backend's entries
//! themselves (one pointer a key: the key, value and version share one
//! allocation with the backend's cache and every other store's view), and
//! each value caches its decoded form for the first type asked for, so a
//! typed `get` costs a hash lookup and an `Arc` clone, not a JSON parse.

use std::any::Any;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::backend::{Entry, Payload, Revision, SharedKey};
use crate::error::Result;
use crate::key::Validator;
use crate::thin::Decoded;
use crate::value;

type Hashing = foldhash::fast::RandomState;

pub(crate) type KeyMap<V> = HashMap<SharedKey, V, Hashing>;

/// `payload`, already decoded as `value` (which is not validated: a read
/// through a key with a validator decodes it afresh).
pub(crate) fn with_decoded<T: Send + Sync + 'static>(payload: Payload, value: Arc<T>) -> Payload {
    let _ = payload.decoded().set(Box::new(Decoded {
        value,
        validator: None,
    }));
    payload
}

/// `payload` decoded as `T`, from its cache when `T` was decoded before
/// (with `validator`'s check, when one is asked for).
///
/// The cache is the value's own, shared by every store reading it: the first
/// type decoded wins it, and another type, or a validator the cached decode
/// did not pass, decodes afresh each time.
pub(crate) fn decode<T>(
    payload: &Payload,
    key: &str,
    validator: Option<Validator>,
    text: bool,
) -> Result<Arc<T>>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    if let Some(cached) = payload.decoded().get()
        && validator.is_none_or(|wanted| {
            cached
                .validator
                .is_some_and(|passed| std::ptr::fn_addr_eq(passed, wanted))
        })
        && (*cached.value).is::<T>()
        && let Ok(typed) = Arc::clone(&cached.value).downcast::<T>()
    {
        return Ok(typed);
    }
    let typed: Arc<T> = Arc::new(value::decode_stored(key, payload, text, validator)?);
    let _ = payload.decoded().set(Box::new(Decoded {
        value: Arc::clone(&typed) as Arc<dyn Any + Send + Sync>,
        validator,
    }));
    Ok(typed)
}

/// An entry of the view, hashed and compared by its key.
struct ByKey(Entry);

impl Borrow<str> for ByKey {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for ByKey {}

impl Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

/// Confirmed backend state as of `revision`.
#[derive(Default)]
pub(crate) struct View {
    entries: HashSet<ByKey, Hashing>,
    pub(crate) revision: Revision,
}

impl View {
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).map(|held| &held.0)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.entries.contains(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().map(|held| &held.0)
    }

    /// Removes `key`; returns its entry.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry> {
        self.entries.take(key).map(|held| held.0)
    }

    /// Stores an entry unless the view holds a newer version of its key;
    /// returns whether the view changed.
    pub(crate) fn put(&mut self, entry: &Entry) -> bool {
        if let Some(existing) = self.get(entry.key())
            && existing.version() > entry.version()
        {
            return false;
        }
        self.entries.replace(ByKey(entry.clone()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Version;

    #[test]
    fn the_view_keeps_the_entry_it_is_given_and_one_decode_per_type() {
        let mut view = View::default();
        let entry = Entry::new("k", "7", Version(1));
        assert!(view.put(&entry));
        let kept = view.get("k").expect("recorded");
        assert!(
            kept.ptr_eq(&entry),
            "the backend's entry is shared, not copied"
        );
        let first = decode::<u32>(kept.value(), "k", None, false).expect("decodes");
        let again = decode::<u32>(entry.value(), "k", None, false).expect("decodes");
        assert!(Arc::ptr_eq(&first, &again), "the decoded value is cached");
        // Another type decodes afresh and leaves the cached one in place.
        assert_eq!(
            *decode::<u64>(kept.value(), "k", None, false).expect("decodes"),
            7
        );
        let third = decode::<u32>(kept.value(), "k", None, false).expect("decodes");
        assert!(Arc::ptr_eq(&first, &third));
        // An older version changes nothing; a removal does.
        assert!(!view.put(&Entry::new("k", "8", Version(0))));
        assert_eq!(view.get("k").map(Entry::version), Some(Version(1)));
        assert!(view.remove("k").is_some());
        assert_eq!(view.len(), 0);
    }

    fn accept(_: &serde_json::Value) -> std::result::Result<(), crate::error::BoxError> {
        Ok(())
    }

    fn refuse(_: &serde_json::Value) -> std::result::Result<(), crate::error::BoxError> {
        Err("refused".into())
    }

    #[test]
    fn a_cached_decode_serves_only_reads_whose_validation_it_passed() {
        // Decoded unchecked first (say, by another store on the backend): a
        // read through a key with a validator still runs it.
        let entry = Entry::new("k", "7", Version(1));
        let unchecked = decode::<u32>(entry.value(), "k", None, false).expect("decodes");
        assert!(decode::<u32>(entry.value(), "k", Some(refuse), false).is_err());
        let checked = decode::<u32>(entry.value(), "k", Some(accept), false).expect("passes");
        assert!(!Arc::ptr_eq(&unchecked, &checked), "decoded afresh");
        // Decoded through a validator first: every read with it, or with none,
        // shares that decode.
        let entry = Entry::new("k", "7", Version(2));
        let first = decode::<u32>(entry.value(), "k", Some(accept), false).expect("passes");
        let again = decode::<u32>(entry.value(), "k", Some(accept), false).expect("passes");
        let plain = decode::<u32>(entry.value(), "k", None, false).expect("decodes");
        assert!(Arc::ptr_eq(&first, &again) && Arc::ptr_eq(&first, &plain));
        assert!(decode::<u32>(entry.value(), "k", Some(refuse), false).is_err());
    }
}
