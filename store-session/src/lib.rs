//! Session-scoped global, realm and local stores over any `store-core` backend.
//!
//! A session server (a simulation, a game server, a workflow engine, a
//! scripting host) keeps scratch state per session: shared by the whole
//! session (**global**), by one **realm**, or private to one target environment
//! (**local**). The state is isolated per scope, typed, and freed when the
//! session ends.
//!
//! ```
//! use std::collections::HashMap;
//! use store_session::Sessions;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> store_session::Result<()> {
//! let sessions = Sessions::new();
//! let session = sessions.open("session-1").await?;
//!
//! // localStore.use('counter', 0)
//! let local = session.local("env-alpha")?;
//! let counter = local.use_value("counter", 0_u64)?;
//! counter.update(|n| *n += 1)?;
//! assert_eq!(counter.get()?, 1);
//!
//! // Another environment of the same session has its own counter.
//! let other = session.local("env-bravo")?.use_value("counter", 0_u64)?;
//! assert_eq!(other.get()?, 0);
//!
//! // globalStore.use('scenarioState', {...}) is seen by every environment.
//! let state = session.global()?.use_value("phase", "execution".to_owned())?;
//! assert_eq!(session.global()?.use_value("phase", String::new())?.get()?, "execution");
//!
//! // Live values need no serde: a cache map is mutated in place.
//! let cache = local.use_with("apiCache", HashMap::<String, u32>::new)?;
//! cache.lock()?.insert("user_7".into(), 42);
//!
//! // A key used with another type is an error, never a wrong value.
//! assert!(local.use_value("counter", "zero").is_err());
//!
//! // Durable values (serde) go through the registry's backend.
//! let durable = session.global()?.durable().await?;
//! let steps = durable.use_value("steps", Vec::<String>::new()).await?;
//! steps.update(|s| s.push("deploy".into())).await?;
//! assert_eq!(steps.get()?.len(), 1);
//!
//! // Ending the session frees its data; old handles are now outdated.
//! let ended = session.end().await?;
//! assert_eq!(ended.durable_keys, 1);
//! assert!(matches!(counter.get(), Err(store_session::Error::Outdated { .. })));
//! assert!(state.get().is_err());
//! # Ok(()) }
//! ```
//!
//! # Scopes
//!
//! [`Session::global`], [`Session::realm`], [`Session::local`] and
//! [`Session::local_in`] return a [`Scope`]. Every scope offers the same calls:
//!
//! | call | returns |
//! |---|---|
//! | [`use_value(key, default)`](Scope::use_value) | a handle, storing `default` if the key is missing |
//! | [`use_with(key, \|\| init)`](Scope::use_with) | the same, building the default only when needed |
//! | [`use_default::<T>()`](Scope::use_default) | the type's own slot, starting at `T::default()` |
//! | [`use_typed::<T: StoreValue>()`](Scope::use_typed) | the value at `T::KEY` |
//! | [`remove`](Scope::remove), [`keys`](Scope::keys), [`clear`](Scope::clear) | on the scope's entries |
//!
//! A default is moved into the one scope that stores it, so a default value is
//! never shared between scopes.
//!
//! # Two tiers
//!
//! - **Live** (the calls on [`Scope`], returning [`Handle`]): any
//!   `Send + Sync + 'static` value (API clients, caches, maps), kept in memory
//!   in this process and mutated in place with no serialisation. A handle holds
//!   the entry itself, so [`Handle::update`] and [`Handle::lock`] on one entry
//!   cost the same whatever else the store holds. Calls are synchronous.
//!   [`Handle::update`] changes a copy and puts it in when the closure returns,
//!   so a closure that panics changes nothing; [`Handle::lock`] changes the
//!   value in place, for values too large to copy.
//! - **Durable** ([`Scope::durable`], returning [`DurableScope`] and
//!   [`DurableHandle`]): serde values kept through a [`store_core::Store`] on
//!   the registry's backend (memory by default, any backend such as the kube one
//!   through [`SessionsBuilder::backend`]), so they survive a restart of the
//!   process and can be shared between replicas. Updates use compare-and-set.
//!
//! # Lifecycle
//!
//! Sessions end explicitly ([`Session::end`], [`Sessions::end`]) or after an
//! idle time to live ([`SessionsBuilder::idle_ttl`]); dropping handles does not
//! end a session, so a crash or restart keeps its durable data. Ending frees the
//! session's live entries and removes its durable keys by listing only its own
//! prefix (see [`layout`]): the work is proportional to its own keys, never to
//! the number of sessions. Handles and scopes used afterwards fail with
//! [`Error::Outdated`].
//!
//! [`Session::reset`] starts a fresh, empty instance and returns the old one as
//! a [`Teardown`]: teardown code can still read it (writes fail with
//! `Outdated`) until [`Teardown::finish`] frees it.
//!
//! # Replicas
//!
//! Registries sharing a durable backend (replicas of a server on one kube
//! store, or registries on one [`MemoryBackend`](store_core::MemoryBackend))
//! hold one session per id: each session's generation is recorded on the
//! backend (see [`layout`]), and every registry follows those records through
//! the one watch its durable scopes share. Ending a session on one replica
//! removes its record; every other replica then ends it too: it is no longer
//! open there, its live entries are freed, its durable scopes closed, and its
//! handles and scopes fail with [`Error::Outdated`]. Resetting it on one
//! replica records the next generation; every other replica frees its instance
//! (handles fail with `Outdated`) and moves to the fresh one, while the
//! resetting replica's [`Teardown`] still reads the retired one.
//!
//! Other replicas hear of an end or a reset as soon as their watch delivers
//! it, not within the call: a write a replica makes before it has heard lands
//! in the ended life's keys, which no later life of the id reads (a session
//! opened afresh takes the backend's current revision as its first
//! generation), and that replica removes them when it hears of the end. The
//! cost is one record per open session and, per replica, one watch event per
//! end or reset, handled in time proportional to that session's own keys.
//!
//! A reset or an end reads the record first and moves it on only from the
//! generation the replica holds (a reset's write, and an end's removal, are
//! conditional on the record's version; an end then removes only the keys of
//! its own life, so a new life another replica opens at once keeps its own). A replica that has not yet heard of a reset or an end
//! elsewhere therefore never takes the record back, nor ends a new life of
//! the id: it waits until its watch delivers the news, then resets or ends
//! what is current, or fails with [`Error::SessionEnded`] if the session
//! ended. This costs one read of the record per reset and per end.
//! Idle expiry ([`SessionsBuilder::idle_ttl`]) counts uses on every replica: a
//! replica using a session writes the session's use mark now and then, and the
//! others count hearing of it as a use. A session in use on one replica (behind
//! a load balancer without sticky sessions, say) stays open on all; one nobody
//! uses ends on all. Give replicas the same time to live.
//!
//! # Limits and extras
//!
//! - Quotas per session on entries and durable bytes
//!   ([`SessionsBuilder::max_entries`], [`SessionsBuilder::max_durable_bytes`]):
//!   [`Error::QuotaExceeded`] names the key and the limit.
//! - Change notifications per key: [`Handle::changes`], [`DurableHandle::changes`].
//! - [`Session::snapshot`]: a JSON picture of a session for debugging.
//! - Metrics: every durable scope is a `store_core::Store`, and all of a
//!   registry's scopes export the store figures (`store_core::metrics`)
//!   under one `store` label, the registry's [root](SessionsBuilder::root)
//!   (`sessions` when it has none), so the series stay few however many
//!   sessions come and go.
//!
//! # The durable tier as a backend
//!
//! [`ScopedBackend`] is one prefix of an inner backend seen as a backend of its
//! own; each durable scope is a store on one. It passes `store-core`'s
//! conformance suite, so anything the suite promises for a backend holds for a
//! session's durable scope too. The durable scopes of a registry share one
//! watch of the backend ([`SharedWatch`]), which hands each change to the one
//! scope it belongs to: a write costs the same however many other sessions
//! have durable scopes open.

use std::sync::{Mutex, MutexGuard, PoisonError};

mod activity;
mod durable;
mod error;
mod fanout;
mod instance;
pub mod layout;
mod live;
mod quota;
mod registry;
mod scope;
mod scoped;
mod session;

pub use durable::{DurableGuard, DurableHandle, DurableScope, DurableValue};
pub use error::{Error, QuotaKind, Result};
pub use fanout::SharedWatch;
pub use layout::ScopeKind;
pub use live::{Changes, Handle, LiveGuard};
pub use quota::Usage;
pub use registry::{Sessions, SessionsBuilder};
pub use scope::Scope;
pub use scoped::ScopedBackend;
pub use session::{Ended, Session, Teardown};

/// Locks a mutex, carrying on past a panic elsewhere (the data is kept consistent by
/// every writer).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error of a call on a retired or freed instance.
pub(crate) fn outdated(key: &str) -> Error {
    Error::Outdated {
        key: key.to_owned(),
    }
}
