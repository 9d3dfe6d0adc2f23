//! [`Scope`]: one of a session's global, realm or local stores, with its live
//! tier (the methods here) and its durable tier ([`Scope::durable`]).

use std::any::type_name;
use std::sync::Arc;

use store_core::PlainKey;

use crate::durable::DurableScope;
use crate::error::Result;
use crate::instance::Instance;
use crate::layout::ScopeKind;
use crate::live::{Handle, LiveScope, json_of};

/// One store of a session: global, one realm, or one target environment.
///
/// The methods on `Scope` are the **live tier**: any `Send + Sync + 'static`
/// value, held in memory and mutated in place with no serialisation. For serde
/// values kept on the registry's backend, use [`Scope::durable`].
///
/// A scope is bound to the session instance it came from; after the session
/// ends or is reset its calls fail with [`Error::Outdated`](crate::Error::Outdated).
#[derive(Clone)]
pub struct Scope {
    instance: Arc<Instance>,
    kind: ScopeKind,
    live: Arc<LiveScope>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("session", &self.instance.session)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Scope {
    pub(crate) fn new(instance: Arc<Instance>, kind: ScopeKind) -> Self {
        let live = instance.live_scope(&kind);
        Scope {
            instance,
            kind,
            live,
        }
    }

    /// Which part of the session this scope covers.
    pub fn kind(&self) -> &ScopeKind {
        &self.kind
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        &self.instance.session
    }

    /// A handle on the live value at `key`, storing `default` first if the key is
    /// missing. The default is moved into this scope alone: no other scope ever
    /// sees it.
    ///
    /// Fails with [`Error::TypeMismatch`](crate::Error::TypeMismatch) when the key
    /// holds another type, and [`Error::QuotaExceeded`](crate::Error::QuotaExceeded)
    /// when a new entry would pass the session's entry quota.
    pub fn use_value<T: Send + Sync + 'static>(&self, key: &str, default: T) -> Result<Handle<T>> {
        self.use_with(key, move || default)
    }

    /// Like [`use_value`](Self::use_value), building the default with `init` only
    /// when the key is missing.
    pub fn use_with<T, F>(&self, key: &str, init: F) -> Result<Handle<T>>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        self.live.use_with(&self.instance, key, init, None)
    }

    /// The type's own slot in this scope, keyed by its type name and starting at
    /// `T::default()` (like an extensions map).
    pub fn use_default<T: Default + Send + Sync + 'static>(&self) -> Result<Handle<T>> {
        self.use_with(type_name::<T>(), T::default)
    }

    /// The value of a [`StoreValue`](store_core::StoreValue) type at its own key (`T::KEY`), starting at
    /// `T::default()`. Shown as JSON in [`Session::snapshot`](crate::Session::snapshot).
    /// Only for a type with one key ([`PlainKey`]): a key-family type's
    /// pattern is not a key.
    pub fn use_typed<T: PlainKey + Default>(&self) -> Result<Handle<T>> {
        self.live
            .use_with(&self.instance, T::KEY, T::default, Some(json_of::<T>))
    }

    /// Removes the live entry at `key`; handles on it become outdated. Returns
    /// whether there was one.
    pub fn remove(&self, key: &str) -> Result<bool> {
        self.instance.check_write(key)?;
        Ok(self.live.remove(&self.instance, key))
    }

    /// The keys of the live entries, sorted.
    pub fn keys(&self) -> Result<Vec<String>> {
        self.instance.check_read("")?;
        Ok(self.live.keys())
    }

    /// Removes every live entry; their handles become outdated. Returns how many
    /// there were.
    pub fn clear(&self) -> Result<usize> {
        self.instance.check_write("")?;
        Ok(self.live.clear(&self.instance))
    }

    /// The **durable tier** of this scope: serde values kept through a
    /// [`store_core::Store`] on the registry's backend, under this scope's prefix.
    /// Opened on first use (one listing of the prefix).
    pub async fn durable(&self) -> Result<DurableScope> {
        let state = self.instance.durable_scope(&self.kind).await?;
        Ok(DurableScope::new(Arc::clone(&self.instance), state))
    }
}
