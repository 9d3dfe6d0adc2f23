//! On a cluster: one replica, until a signal.

use super::*;

pub(crate) async fn on_cluster() -> Result<(), BoxError> {
    let client = kube::Client::try_default().await?;
    let replica = std::env::var("HOSTNAME").unwrap_or_else(|_| STORE.to_owned());
    let store = open_store(client.clone(), None, &replica).await?;
    println!(
        "{replica}: store `{STORE}` ready; exempt namespaces: {}",
        list(&ExemptNamespaces::names(&store)?)
    );
    let namespaces: Api<Namespace> = Api::all(client);
    let sweeper = tokio::spawn(sweep_every(store.clone(), namespaces.clone(), SWEEP_EVERY));
    let reporter = tokio::spawn(report(store.clone(), replica));
    let context = Arc::new(Context {
        store: store.clone(),
        reconciled: watch::Sender::new(BTreeMap::new()),
    });
    run_controller(namespaces, context, true).await;
    sweeper.abort();
    reporter.abort();
    store.close().await?;
    Ok(())
}

/// Prints the exemptions whenever they change, whoever changed them.
pub(crate) async fn report(store: Store, replica: String) {
    let mut changes = store.subscribe().key(ExemptNamespaces::KEY);
    while changes.next().await.is_some() {
        if let Ok(names) = ExemptNamespaces::names(&store) {
            println!("{replica}: exempt namespaces: {}", list(&names));
        }
    }
}
