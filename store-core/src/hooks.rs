//! On-ready hooks: code that runs once per store after the initial sync,
//! before [`Store::ready`](crate::Store::ready) resolves and before any change
//! reaches a subscriber.
//!
//! Hooks come from two places: `#[on_ready]` functions, registered at link time
//! through [`inventory`] (so a hook declared in any module of any linked crate is
//! found without a central list), and closures given to
//! [`StoreBuilder::on_ready`](crate::StoreBuilder::on_ready). They run one after
//! another, ordered by `order` (lower first); linked hooks with the same order
//! run by name, then builder hooks in the order they were added. A hook that
//! fails stops start-up with `Error::Hook` naming it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::Instrument;

use crate::Store;
use crate::error::{BoxError, Error, Result};

/// The future a hook returns.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

/// A hook registered at link time by `#[on_ready]`. Not meant to be built by hand.
#[derive(Debug)]
pub struct LinkedHook {
    /// The hook's name, reported when it fails.
    pub name: &'static str,
    /// Run only on the store with this name; on every store when `None`.
    pub store: Option<&'static str>,
    /// Position among hooks: lower runs first.
    pub order: i32,
    /// Runs the hook.
    pub run: for<'a> fn(&'a Store) -> HookFuture<'a>,
}

inventory::collect!(LinkedHook);

type ClosureHook = Arc<dyn Fn(Store) -> HookFuture<'static> + Send + Sync>;

/// A hook as the start-up sequence runs it.
#[derive(Clone)]
pub(crate) struct Hook {
    pub(crate) name: String,
    pub(crate) order: i32,
    run: HookRun,
}

#[derive(Clone)]
enum HookRun {
    Linked(for<'a> fn(&'a Store) -> HookFuture<'a>),
    Closure(ClosureHook),
}

impl Hook {
    pub(crate) fn closure<F, Fut, E>(name: String, order: i32, f: F) -> Self
    where
        F: Fn(Store) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let run: ClosureHook = Arc::new(move |store| {
            let fut = f(store);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        Hook {
            name,
            order,
            run: HookRun::Closure(run),
        }
    }

    async fn run(&self, store: &Store) -> Result<()> {
        let outcome = match &self.run {
            HookRun::Linked(f) => f(store).await,
            HookRun::Closure(f) => f(store.clone()).await,
        };
        outcome.map_err(|source| Error::Hook {
            hook: self.name.clone(),
            source: Arc::from(source),
        })
    }
}

/// The hooks for a store named `store_name`: linked ones (if wanted) and the
/// builder's, in run order.
pub(crate) fn plan(store_name: &str, linked: bool, mut added: Vec<Hook>) -> Vec<Hook> {
    let mut hooks: Vec<Hook> = if linked {
        let mut found: Vec<&LinkedHook> = inventory::iter::<LinkedHook>
            .into_iter()
            .filter(|h| h.store.is_none_or(|s| s == store_name))
            .collect();
        found.sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(b.name)));
        found
            .into_iter()
            .map(|h| Hook {
                name: h.name.to_owned(),
                order: h.order,
                run: HookRun::Linked(h.run),
            })
            .collect()
    } else {
        Vec::new()
    };
    hooks.append(&mut added);
    // Stable: equal orders keep linked-before-builder and insertion order.
    hooks.sort_by_key(|h| h.order);
    hooks
}

/// Runs hooks in order, stopping at the first failure.
pub(crate) async fn run_all(hooks: &[Hook], store: &Store) -> Result<()> {
    for hook in hooks {
        let span = tracing::info_span!("on_ready", hook = %hook.name, store = %store.name());
        hook.run(store).instrument(span).await?;
    }
    Ok(())
}
