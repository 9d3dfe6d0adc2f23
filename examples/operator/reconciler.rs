//! The controller.

use super::*;

/// What every reconcile gets.
pub(crate) struct Context {
    pub(crate) store: Store,
    /// Each namespace's `resourceVersion` as last reconciled: shows how far this
    /// replica's controller got (the demonstration waits on it).
    pub(crate) reconciled: watch::Sender<BTreeMap<String, String>>,
}

pub(crate) fn is_exempt(namespace: &Namespace) -> bool {
    namespace.meta().deletion_timestamp.is_none()
        && namespace
            .labels()
            .get(EXEMPT_LABEL)
            .is_some_and(|value| value == "true")
}

/// Makes the recorded exemptions agree with one namespace. Writes only when
/// the local view disagrees (`update_if` declines otherwise, sending nothing),
/// so replicas that already agree stay quiet.
pub(crate) async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action> {
    let name = namespace.name_any();
    let wanted = is_exempt(&namespace).then(|| namespace.uid().unwrap_or_default());
    let written = context
        .store
        .update_if(ExemptNamespaces::key(), |current| {
            let recorded = current.and_then(|exempt| exempt.namespaces.get(&name));
            if recorded == wanted.as_ref() {
                return None;
            }
            let mut next = current.cloned().unwrap_or_default();
            match &wanted {
                Some(uid) => next.namespaces.insert(name.clone(), uid.clone()),
                None => next.namespaces.remove(&name),
            };
            Some(next)
        })
        .await?;
    if written.is_some() {
        tracing::info!(namespace = %name, exempt = wanted.is_some(), "recorded");
    }
    if let Some(version) = namespace.resource_version() {
        context.reconciled.send_modify(|seen| {
            seen.insert(name, version);
        });
    }
    Ok(Action::requeue(RESYNC))
}

pub(crate) fn error_policy(namespace: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller until its stream ends (on a signal, with `on_signal`).
pub(crate) async fn run_controller(
    namespaces: Api<Namespace>,
    context: Arc<Context>,
    on_signal: bool,
) {
    let mut controller = Controller::new(namespaces, watcher::Config::default());
    if on_signal {
        controller = controller.shutdown_on_signal();
    }
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(namespace = %object.name, "reconciled"),
                // Logged by `error_policy`, or a namespace deleted meanwhile.
                Err(
                    controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(..),
                ) => {}
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .await;
}

/// Drops entries whose namespace object is gone. The value is read before the
/// (fresh, not cached) LIST, so every entry read belongs to a namespace that
/// existed before the LIST: a uid missing from it is gone for good.
pub(crate) async fn sweep(store: &Store, namespaces: &Api<Namespace>) -> Result<usize> {
    let Some(recorded) = store.get(ExemptNamespaces::key())? else {
        return Ok(0);
    };
    if recorded.namespaces.is_empty() {
        return Ok(0);
    }
    let live: BTreeSet<String> = namespaces
        .list(&ListParams::default())
        .await
        .map_err(kube_error)?
        .items
        .iter()
        .filter_map(ResourceExt::uid)
        .collect();
    let gone: BTreeSet<(String, String)> = recorded
        .namespaces
        .iter()
        .filter(|(_, uid)| !live.contains(*uid))
        .map(|(name, uid)| (name.clone(), uid.clone()))
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    store
        .update(ExemptNamespaces::key(), |current| {
            let mut next = current.cloned().unwrap_or_default();
            next.namespaces
                .retain(|name, uid| !gone.contains(&(name.clone(), uid.clone())));
            next
        })
        .await?;
    Ok(gone.len())
}

pub(crate) async fn sweep_every(store: Store, namespaces: Api<Namespace>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweep(&store, &namespaces).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "dropped entries of deleted namespaces"),
            Err(Error::Closed) => return,
            Err(error) => tracing::warn!(%error, "sweep failed; trying again later"),
        }
    }
}
