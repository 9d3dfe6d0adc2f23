//! The durable tier (session scopes on one shared store) on the kube backend,
//! on the in-process fake API server, against `store-core`'s conformance suite,
//! every scope fed by one shared watch as in a registry.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::ScopedHarness;
use store_core::backend::{Applied, Batch, Entry, Listing, WatchStream};
use store_core::{Backend, Capabilities, Result, Revision};
use store_kube::KubeBackend;
use store_kube_testing::FakeApiServer;

/// The kube backend together with the fake API server it talks to, so the
/// server lives as long as the harness.
struct OnFakeServer {
    backend: KubeBackend,
    _server: Arc<FakeApiServer>,
}

impl Backend for OnFakeServer {
    fn name(&self) -> &'static str {
        self.backend.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send {
        self.backend.read(key)
    }
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send {
        self.backend.list(prefix)
    }
    fn apply(&self, batch: Batch) -> impl Future<Output = Result<Applied>> + Send {
        self.backend.apply(batch)
    }
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send {
        self.backend.watch(from)
    }
}

async fn harness() -> ScopedHarness<OnFakeServer> {
    let server = FakeApiServer::start()
        .await
        .expect("fake API server starts");
    server
        .apply_crd(&store_kube::resource::store_shard_crd())
        .expect("CRD applies");
    let backend = KubeBackend::builder(server.client().expect("client"), "sessions")
        .namespace("default")
        .shards(2)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("backend starts");
    ScopedHarness::shared(OnFakeServer {
        backend,
        _server: Arc::new(server),
    })
}

store_conformance::conformance_tests!(harness);
