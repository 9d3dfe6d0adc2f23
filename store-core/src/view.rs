//! The local view: the backend's state as of one revision, fed by the watch.
//!
//! Reads never leave the process. Each entry caches its decoded value for the
//! last type asked for, so a typed `get` costs a hash lookup and an `Arc`
//! clone, not a JSON parse.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use crate::backend::{Payload, Revision, Version};
use crate::error::Result;
use crate::key::Validator;
use crate::value;

pub(crate) type KeyMap<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// A value together with its decoded form, cached per type.
pub(crate) struct Cell {
    pub(crate) payload: Payload,
    decoded: OnceLock<(TypeId, Arc<dyn Any + Send + Sync>)>,
}

impl Cell {
    pub(crate) fn new(payload: Payload) -> Self {
        Cell {
            payload,
            decoded: OnceLock::new(),
        }
    }

    /// A cell whose value is already decoded as `T`.
    pub(crate) fn decoded<T: Send + Sync + 'static>(payload: Payload, value: Arc<T>) -> Self {
        let cell = Cell::new(payload);
        let _ = cell
            .decoded
            .set((TypeId::of::<T>(), value as Arc<dyn Any + Send + Sync>));
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
        if let Some((type_id, any)) = self.decoded.get()
            && *type_id == TypeId::of::<T>()
            && let Ok(typed) = Arc::clone(any).downcast::<T>()
        {
            return Ok(typed);
        }
        let typed: Arc<T> = Arc::new(value::decode_stored(key, &self.payload, text, validator)?);
        // The first type decoded wins the cache; another type decodes afresh each time.
        let _ = self.decoded.set((
            TypeId::of::<T>(),
            Arc::clone(&typed) as Arc<dyn Any + Send + Sync>,
        ));
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
    pub(crate) fn record(&mut self, key: &str, value: Option<&Payload>, version: Version) -> bool {
        match value {
            Some(payload) => {
                if let Some(existing) = self.entries.get_mut(key) {
                    if existing.version > version {
                        return false;
                    }
                    existing.version = version;
                    if existing.cell.payload != *payload {
                        existing.cell = Cell::new(payload.clone());
                    }
                } else {
                    self.entries.insert(
                        Arc::from(key),
                        ViewEntry {
                            cell: Cell::new(payload.clone()),
                            version,
                        },
                    );
                }
                true
            }
            None => self.entries.remove(key).is_some(),
        }
    }
}
