//! What store-kube's test files share.

use store_kube_testing::FakeApiServer;

/// A fake API server serving both store kinds.
pub(crate) async fn fake_server() -> FakeApiServer {
    FakeApiServer::builder()
        .crds(store_kube::resource::crds())
        .start()
        .await
        .expect("fake API server starts")
}
