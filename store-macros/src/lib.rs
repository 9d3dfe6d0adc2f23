//! Procedural macros for `store-core`: `#[derive(StoreValue)]` gives a type
//! its home in the store, `#[on_ready]` registers a start-up hook.
//!
//! Use them through `store-core` with its `derive` feature
//! (`store_core::{StoreValue, on_ready}`), not from this crate directly.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use store_core::{Store, StoreValue, on_ready};
//!
//! #[derive(Serialize, Deserialize, StoreValue, Debug, PartialEq)]
//! #[store(key = "settings")]
//! struct Settings {
//!     verbose: bool,
//! }
//!
//! #[on_ready(store = "quick-start")]
//! async fn seed(store: &Store) -> store_core::Result<()> {
//!     store.set_and_wait(Settings::key(), &Settings { verbose: true }).await?;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> store_core::Result<()> {
//! let store = Store::builder().name("quick-start").open().await?;
//! store.ready().await?;
//! assert_eq!(store.get(Settings::key())?.as_deref(), Some(&Settings { verbose: true }));
//! # Ok(()) }
//! ```
//!
//! # How keys are checked at compile time
//!
//! This crate cannot depend on `store-core` (which re-exports it), so it
//! mirrors the few key rules of `store_core::key::check` (not empty, at most
//! 1024 bytes, no control characters) and the key-family pattern syntax, and
//! reports a broken key at the literal with a precise message. To keep the
//! mirror honest, the generated code also evaluates
//! `store_core::key::check` on the key in a `const` item: should the rules
//! ever drift apart, the runtime's verdict still fails the build.
//!
//! # Why `inventory` for `#[on_ready]`
//!
//! `store-core` collects linked hooks with `inventory`, so `#[on_ready]`
//! submits a `LinkedHook` to it. `inventory` registers entries from static
//! constructors on Linux, macOS, Windows, the BSDs and wasm, and needs nothing
//! but a plain `static` at the use site. `linkme`'s distributed slices cost
//! nothing at start-up, but they depend on per-platform linker-section
//! tricks that some targets (wasm among them) do not support; a few hooks
//! registered once per process do not need that saving.

mod key_rules;
mod on_ready;
mod store_value;

use proc_macro::TokenStream;

/// Gives a type its key in the store: implements `store_core::StoreValue`.
///
/// The type must also implement `serde::Serialize` and `serde::Deserialize`.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use store_core::StoreValue;
///
/// #[derive(Serialize, Deserialize, StoreValue)]
/// #[store(key = "exempt-namespaces")]
/// struct ExemptNamespaces(Vec<String>);
///
/// assert_eq!(ExemptNamespaces::key().as_str(), "exempt-namespaces");
/// ```
///
/// # `key = "..."`
///
/// The key the type is stored under. It is checked at compile time with the
/// rules of `store_core::key`: not empty, at most 1024 bytes, no control
/// characters. Everything else (`/`, `~`, spaces, URLs, non-ASCII text) is
/// allowed. Read and write through `T::key()`.
///
/// **Default:** without `key`, the key is the type's name in kebab case:
/// `UserSettings` is stored under `user-settings`, `HTTPConfig` under
/// `http-config`, `snake_case` under `snake-case`.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use store_core::StoreValue;
/// #[derive(Serialize, Deserialize, StoreValue)]
/// struct UserSettings {
///     theme: String,
/// }
///
/// assert_eq!(UserSettings::KEY, "user-settings");
/// ```
///
/// An empty key, or `key` without a value, is an error (leave `key` out for
/// the default):
///
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # use store_core::StoreValue;
/// #[derive(Serialize, Deserialize, StoreValue)]
/// #[store(key = "")]
/// struct Settings;
/// ```
///
/// So is a key the store would refuse:
///
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # use store_core::StoreValue;
/// #[derive(Serialize, Deserialize, StoreValue)]
/// #[store(key = "line\nbreak")]
/// struct Settings;
/// ```
///
/// # Key families: `key = "user/{id}"`
///
/// A key with `{placeholders}` names a family of keys, one per set of
/// placeholder values. Placeholders are identifiers, separated by literal
/// text; at most four. The derive adds two associated functions (with the
/// type's visibility):
///
/// - `key_for(id: impl KeyArg, ...) -> store_core::Result<Key<Self>>`, one
///   argument per placeholder in order; it fails when a value is empty or
///   contains the text that follows its placeholder (the key could not be
///   parsed back);
/// - `parse_key::<A>(&str) -> Option<A>`, where `A` is a tuple of `FromStr`
///   types, a `String` (one placeholder) or a `Vec<String>`.
///
/// Both build on `T::family()` (a `store_core::KeyFamily<T>`).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use store_core::StoreValue;
/// #[derive(Serialize, Deserialize, StoreValue)]
/// #[store(key = "tenant/{tenant}/job/{job}")]
/// struct Job {
///     retries: u32,
/// }
///
/// let key = Job::key_for("acme", 42).unwrap();
/// assert_eq!(key.as_str(), "tenant/acme/job/42");
/// assert_eq!(Job::parse_key::<(String, u64)>("tenant/acme/job/42"), Some(("acme".into(), 42)));
/// assert_eq!(Job::parse_key::<(String, u64)>("tenant/acme/other/42"), None);
/// ```
///
/// An unclosed or non-identifier placeholder is a compile error:
///
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # use store_core::StoreValue;
/// #[derive(Serialize, Deserialize, StoreValue)]
/// #[store(key = "user/{id")]
/// struct User;
/// ```
///
/// # `schema`
///
/// Checks every value read through the type's keys against the type's
/// `schemars` schema before it is decoded, so a value written by another
/// replica or an older version that no longer fits fails with
/// `store_core::Error::Decode` naming the key and the path (`age`,
/// `tags[1].score`). The type must implement `schemars::JsonSchema`, and
/// `store-core` needs its `schema` feature.
///
/// The check is structural and lean rather than a full JSON-schema
/// validator: types, `enum`/`const`, required and unknown fields, items,
/// numeric ranges (so `u8` rejects `300`), string lengths, `anyOf`/`oneOf`/
/// `allOf`/`not` and `$ref`s; `pattern` and `format` are not checked. Each
/// type's schema is generated once and cached.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use store_core::StoreValue;
/// #[derive(Serialize, Deserialize, schemars::JsonSchema, StoreValue)]
/// #[store(key = "profile", schema)]
/// struct Profile {
///     age: u8,
/// }
///
/// assert!(Profile::validate(&serde_json::json!({ "age": 300 })).is_err());
/// ```
///
/// # `crate = "..."`
///
/// The path of the runtime crate, for when `store-core` is renamed or
/// re-exported: generated code names `<path>::__private::...` instead of
/// `::store_core::__private::...`.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// mod runtime {
///     pub use store_core::*;
/// }
///
/// #[derive(Serialize, Deserialize, store_core::StoreValue)]
/// #[store(crate = "runtime", key = "counter")]
/// struct Counter(u64);
/// ```
///
/// # Misuse
///
/// Unknown options get a hint, and every problem is reported in one pass:
///
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # use store_core::StoreValue;
/// #[derive(Serialize, Deserialize, StoreValue)]
/// #[store(keys = "settings")] // did you mean `key`?
/// struct Settings;
/// ```
///
/// Unions are not store values:
///
/// ```compile_fail
/// # use store_core::StoreValue;
/// #[derive(StoreValue)]
/// union Bits { a: u32, b: f32 }
/// ```
///
/// # Generated code
///
/// For `#[store(key = "user/{id}")] pub struct User { .. }`, roughly:
///
/// ```text
/// const _: () = {
///     #[automatically_derived]
///     impl ::store_core::__private::StoreValue for User {
///         const KEY: &'static str = "user/{id}";
///         // with `schema`:
///         // fn validate(raw: &Value) -> Result<(), BoxError> { validate_schema::<Self>(raw) }
///     }
///
///     #[automatically_derived]
///     impl User {
///         pub fn key_for(id: impl KeyArg) -> Result<Key<Self>> { Self::family().key((id,)) }
///         pub fn parse_key<A: FromKeyArgs>(key: &str) -> Option<A> { Self::family().parse(key) }
///     }
///
///     // The runtime's own key check, evaluated at compile time.
///     const _: () = if check_key("user/x").is_err() { panic!(..) };
///     // A bound check spanned on `User`, saying to derive `Serialize`/`Deserialize`.
/// };
/// ```
///
/// Generic types get `where Self: Serialize + DeserializeOwned + Send + Sync + 'static`.
#[proc_macro_derive(StoreValue, attributes(store))]
pub fn derive_store_value(input: TokenStream) -> TokenStream {
    store_value::derive(input.into()).into()
}

/// Runs an async function once on each store's start-up, after the initial
/// sync and before `Store::ready` resolves.
///
/// The function must look like `async fn name(store: &Store) -> Result<(), E>`
/// with `E: Into<BoxError>` (any `std::error::Error + Send + Sync`, `String`,
/// `store_core::Error`, ...). It is registered at link time, from any module
/// of any linked crate, and emitted unchanged, so tests can still call it
/// directly. A hook that fails stops start-up with
/// `store_core::Error::Hook { hook, .. }`, `hook` being the function's name.
///
/// ```
/// use store_core::{Store, on_ready};
///
/// #[on_ready(store = "jobs", order = -10)]
/// async fn migrate(store: &Store) -> Result<(), store_core::Error> {
///     store.set_and_wait("schema-version", &2).await?;
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> store_core::Result<()> {
/// let store = Store::builder().name("jobs").open().await?;
/// store.ready().await?;
/// assert_eq!(store.get::<u32>("schema-version")?.as_deref(), Some(&2));
/// # Ok(()) }
/// ```
///
/// # `store = "..."`
///
/// Run only on the store with this name (`StoreBuilder::name`). Without it
/// the hook runs on every store whose builder did not turn linked hooks off
/// with `StoreBuilder::linked_hooks(false)`.
///
/// # `order = N`
///
/// Position among hooks, an `i32`, lower first; `0` by default. Linked hooks
/// with the same order run by name, then builder hooks in the order added.
///
/// # `crate = "..."`
///
/// The path of the runtime crate, as for `#[derive(StoreValue)]`.
///
/// # Misuse
///
/// The function must be `async`:
///
/// ```compile_fail
/// # use store_core::{Store, on_ready};
/// #[on_ready]
/// fn seed(store: &Store) -> store_core::Result<()> { Ok(()) }
/// ```
///
/// It must return a `Result`:
///
/// ```compile_fail
/// # use store_core::{Store, on_ready};
/// #[on_ready]
/// async fn seed(store: &Store) {}
/// ```
///
/// Options are checked, with a hint:
///
/// ```compile_fail
/// # use store_core::{Store, on_ready};
/// #[on_ready(stor = "jobs")] // did you mean `store`?
/// async fn seed(store: &Store) -> store_core::Result<()> { Ok(()) }
/// ```
///
/// Methods are not hooks: write a free function.
///
/// # Generated code
///
/// ```text
/// async fn migrate(store: &Store) -> Result<(), store_core::Error> { .. } // unchanged
///
/// const _: () = {
///     fn run<'a>(store: &'a Store) -> HookFuture<'a> {
///         Box::pin(async move { migrate(store).await.map_err(Into::into) })
///     }
///     ::store_core::__private::inventory::submit! {
///         LinkedHook { name: "migrate", store: Some("jobs"), order: -10, run }
///     }
/// };
/// ```
#[proc_macro_attribute]
pub fn on_ready(args: TokenStream, item: TokenStream) -> TokenStream {
    on_ready::on_ready(args.into(), item.into()).into()
}
