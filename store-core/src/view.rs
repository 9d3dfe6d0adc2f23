//! The local view: the backend's state as of one revision, fed by the watch.
//!
//! Reads never leave the process. The view holds the backend's entries
//! themselves (one pointer a key: the key, value and version share one
//! allocation with the backend's cache and every other store's view), and
//! each value caches its decoded form for the first type asked for, so a
//! typed `get` costs a lookup and an `Arc` clone, not a JSON parse.
//!
//! Where the backend keeps its whole state as a shared, immutable
//! [`Index`](crate::backend::Index) (store-kube does), the view holds that
//! index instead of a table of its own: every store on the backend then
//! shares one index, and a view only keeps the changes it applied since its
//! index (while it catches up through the backend's history).

use std::any::Any;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::backend::{Change, Entry, Payload, Revision, SharedIndex, SharedKey};
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
    held: Held,
    pub(crate) revision: Revision,
}

/// Where a view's entries are.
enum Held {
    /// In a table of the view's own.
    Own(HashSet<ByKey, Hashing>),
    /// In the backend's shared index, with the changes the view applied
    /// since (from watch events that carried no newer index: a store catching
    /// up through the backend's history); `None` for a removed key.
    Shared {
        index: SharedIndex,
        since: KeyMap<Option<Entry>>,
        len: usize,
    },
}

impl Default for Held {
    fn default() -> Self {
        Held::Own(HashSet::default())
    }
}

impl View {
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        match &self.held {
            Held::Own(entries) => entries.get(key).map(|held| &held.0),
            Held::Shared { index, since, .. } => match since.get(key) {
                Some(changed) => changed.as_ref(),
                None => index.get(key),
            },
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        match &self.held {
            Held::Own(entries) => entries.len(),
            Held::Shared { len, .. } => *len,
        }
    }

    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        match &self.held {
            Held::Own(entries) => Box::new(entries.iter().map(|held| &held.0)),
            Held::Shared { index, since, .. } => Box::new(
                index
                    .entries()
                    .filter(|entry| !since.contains_key(entry.key()))
                    .chain(since.values().flatten()),
            ),
        }
    }

    /// Whether applying `change` would change the view: a put unless the view
    /// holds a newer version of its key, a removal of a key the view holds.
    pub(crate) fn would_change(&self, change: &Change) -> bool {
        changes(self.get(change.key()), change)
    }

    /// Applies `change` where it [would change](Self::would_change) the view;
    /// returns whether it did.
    pub(crate) fn apply(&mut self, change: &Change) -> bool {
        let held = self.get(change.key());
        if !changes(held, change) {
            return false;
        }
        let existed = held.is_some();
        match &mut self.held {
            Held::Own(entries) => match change {
                Change::Put(entry) => {
                    entries.replace(ByKey(entry.clone()));
                }
                Change::Removed(key) => {
                    entries.remove(&**key);
                }
            },
            Held::Shared { since, len, .. } => {
                let now = entry_of(change);
                match (existed, now.is_some()) {
                    (false, true) => *len += 1,
                    (true, false) => *len -= 1,
                    _ => {}
                }
                since.insert(SharedKey::from(change.key()), now);
            }
        }
        true
    }

    /// Holds `index`, the backend's whole state, in place of what it held.
    pub(crate) fn adopt(&mut self, index: SharedIndex) {
        self.held = Held::Shared {
            len: index.len(),
            index,
            since: KeyMap::default(),
        };
    }
}

/// Whether `change` changes a view holding `held` for its key.
fn changes(held: Option<&Entry>, change: &Change) -> bool {
    match change {
        Change::Put(entry) => held.is_none_or(|held| held.version() <= entry.version()),
        Change::Removed(_) => held.is_some(),
    }
}

fn entry_of(change: &Change) -> Option<Entry> {
    match change {
        Change::Put(entry) => Some(entry.clone()),
        Change::Removed(_) => None,
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
        assert!(view.apply(&Change::Put(entry.clone())));
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
        assert!(!view.apply(&Change::Put(Entry::new("k", "8", Version(0)))));
        assert_eq!(view.get("k").map(Entry::version), Some(Version(1)));
        assert!(view.apply(&Change::Removed("k".into())));
        assert!(!view.apply(&Change::Removed("k".into())));
        assert_eq!(view.len(), 0);
    }

    fn index(entries: &[&Entry]) -> SharedIndex {
        let by_key: std::collections::BTreeMap<String, Entry> = entries
            .iter()
            .map(|entry| (entry.key().to_owned(), (*entry).clone()))
            .collect();
        SharedIndex::new(by_key)
    }

    fn keys(view: &View) -> Vec<&str> {
        let mut keys: Vec<&str> = view.iter().map(Entry::key).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn a_view_on_a_shared_index_applies_changes_beside_it_until_the_next_index() {
        let a = Entry::new("a", "1", Version(1));
        let b = Entry::new("b", "2", Version(2));
        let mut view = View::default();
        view.apply(&Change::Put(Entry::new("old", "0", Version(1))));
        view.adopt(index(&[&a, &b]));
        assert!(view.get("a").is_some_and(|held| held.ptr_eq(&a)), "shared");
        assert_eq!((view.len(), keys(&view)), (2, vec!["a", "b"]));
        assert!(!view.contains("old"), "the index replaces what was held");
        // Changes from events without an index: the view holds them itself.
        let b3 = Entry::new("b", "3", Version(3));
        let c = Entry::new("c", "4", Version(4));
        assert!(view.apply(&Change::Put(b3.clone())));
        assert!(view.apply(&Change::Put(c.clone())));
        assert!(view.apply(&Change::Removed("a".into())));
        assert!(!view.apply(&Change::Removed("a".into())), "already gone");
        assert!(!view.apply(&Change::Put(b.clone())), "older than held");
        assert!(view.get("b").is_some_and(|held| held.ptr_eq(&b3)));
        assert_eq!((view.len(), keys(&view)), (2, vec!["b", "c"]));
        // A put of a key removed since, and a removal of one added since.
        assert!(view.apply(&Change::Put(Entry::new("a", "5", Version(5)))));
        assert!(view.apply(&Change::Removed("c".into())));
        assert_eq!((view.len(), keys(&view)), (2, vec!["a", "b"]));
        // What a change would do is told without doing it.
        let d = Change::Put(Entry::new("d", "6", Version(6)));
        assert!(view.would_change(&d) && !view.contains("d"));
        // The next index is the backend's whole state: nothing applied since stays.
        view.adopt(index(&[&c]));
        assert_eq!((view.len(), keys(&view)), (1, vec!["c"]));
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
