//! The local view: the backend's state as of one revision, fed by the watch.
//!
//! Reads never leave the process. Each entry caches its decoded value for the
//! last type asked for, so a typed `get` costs a hash lookup and an `Arc`
//! clone, not a JSON parse.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use once_cell::race::OnceBox;

use serde::de::DeserializeOwned;

use crate::backend::{Payload, Revision, SharedKey, Version};
use crate::error::Result;
use crate::key::Validator;
use crate::value;

pub(crate) type KeyMap<V> = HashMap<SharedKey, V, foldhash::fast::RandomState>;

/// A value together with its decoded form, cached for the first type asked
/// for (the `Arc` knows its type: a downcast checks it). The slot is one
/// pointer, boxed only once something is decoded: a view of many keys few
/// of which are read typed pays 8 bytes a key for it.
pub(crate) struct Cell {
    pub(crate) payload: Payload,
    decoded: OnceBox<Arc<dyn Any + Send + Sync>>,
}

impl Cell {
    pub(crate) fn new(payload: Payload) -> Self {
        Cell {
            payload,
            decoded: OnceBox::new(),
        }
    }

    /// A cell whose value is already decoded as `T`.
    pub(crate) fn decoded<T: Send + Sync + 'static>(payload: Payload, value: Arc<T>) -> Self {
        let cell = Cell::new(payload);
        let _ = cell
            .decoded
            .set(Box::new(value as Arc<dyn Any + Send + Sync>));
        cell
    }

    /// The value decoded as `T`, from the cache when `T` was decoded before.
    pub(crate) fn decode<T>(
        &self,
        key: &str,
        validator: Option<Validator>,
        text: bool,
    ) -> Result<Arc<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if let Some(any) = self.decoded.get()
            && (**any).is::<T>()
            && let Ok(typed) = Arc::clone(any).downcast::<T>()
        {
            return Ok(typed);
        }
        let typed: Arc<T> = Arc::new(value::decode_stored(key, &self.payload, text, validator)?);
        // The first type decoded wins the cache; another type decodes afresh each time.
        let _ = self
            .decoded
            .set(Box::new(Arc::clone(&typed) as Arc<dyn Any + Send + Sync>));
        Ok(typed)
    }
}

pub(crate) struct ViewEntry {
    pub(crate) cell: Cell,
    pub(crate) version: Version,
}

/// Confirmed backend state as of `revision`.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) entries: KeyMap<ViewEntry>,
    pub(crate) revision: Revision,
}

impl View {
    /// Applies one change; returns whether the view changed.
    pub(crate) fn record(
        &mut self,
        key: &SharedKey,
        value: Option<&Payload>,
        version: Version,
    ) -> bool {
        match value {
            Some(payload) => {
                if let Some(existing) = self.entries.get_mut(&**key) {
                    if existing.version > version {
                        return false;
                    }
                    existing.version = version;
                    if existing.cell.payload != *payload {
                        existing.cell = Cell::new(payload.clone());
                    }
                } else {
                    self.entries.insert(
                        key.clone(),
                        ViewEntry {
                            cell: Cell::new(payload.clone()),
                            version,
                        },
                    );
                }
                true
            }
            None => self.entries.remove(&**key).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_keeps_the_key_it_is_given_and_one_decode_per_type() {
        let mut view = View::default();
        let key = SharedKey::from("k");
        assert!(view.record(&key, Some(&Payload::from("7")), Version(1)));
        let (kept, entry) = view.entries.get_key_value("k").expect("recorded");
        assert!(
            SharedKey::ptr_eq(kept, &key),
            "the backend's key is shared, not copied"
        );
        let first = entry.cell.decode::<u32>("k", None, false).expect("decodes");
        let again = entry.cell.decode::<u32>("k", None, false).expect("decodes");
        assert!(Arc::ptr_eq(&first, &again), "the decoded value is cached");
        // Another type decodes afresh and leaves the cached one in place.
        assert_eq!(
            *entry.cell.decode::<u64>("k", None, false).expect("decodes"),
            7
        );
        let third = entry.cell.decode::<u32>("k", None, false).expect("decodes");
        assert!(Arc::ptr_eq(&first, &third));
        // An older version changes nothing; a removal does.
        assert!(!view.record(&key, Some(&Payload::from("8")), Version(0)));
        assert!(view.record(&key, None, Version(2)));
        assert!(view.entries.is_empty());
    }
}
