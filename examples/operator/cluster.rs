//! On a cluster: one replica, until a signal.

use super::*;

/// Runs one replica: the webhook server on `listen` from the moment it
/// starts (answering `503` until the store is ready), the controller once
/// the store is ready. The serving certificate comes from `tls_dir`
/// (`tls.crt`, `tls.key`, `ca.crt`); without one a certificate for the
/// Service's names is generated, which kube-apiserver trusts only if the
/// webhook configurations carry its CA.
pub(crate) async fn on_cluster(listen: SocketAddr, tls_dir: Option<&Path>) -> Result<(), BoxError> {
    let client = kube::Client::try_default().await?;
    let replica = std::env::var("HOSTNAME").unwrap_or_else(|_| STORE.to_owned());
    let certificates = match tls_dir {
        Some(dir) => Certificates::read(
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
            &dir.join("ca.crt"),
        )?,
        None => {
            tracing::warn!("no --tls-dir: serving a generated certificate");
            Certificates::generate(&service_names())?
        }
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let webhook = Webhook::new(&replica);
    let server = webhook.serve(listener, certificates.server_config()?);
    tracing::info!(%listen, "webhook server listening");
    let store = store_builder(client.clone(), None, &replica).await?.start();
    webhook.serve_when_ready(store.clone()).await??;
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
    webhook.not_ready();
    server.abort();
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
