//! The kube backend on a real control plane (etcd + kube-apiserver), when one
//! is provisioned (`cargo xtask envtest`): the whole conformance suite, and
//! Pepr's layout. Reported as ignored where none was found at build time
//! (a build failure under `STORE_KUBE_REQUIRE_REAL=1`).

use std::time::Duration;

use store_kube::KubeBackend;
use store_kube::resource::store_shard_crd;
use store_kube_testing::TestCluster;

struct RealHarness {
    client: kube::Client,
    namespace: String,
}

impl store_conformance::Harness for RealHarness {
    type Backend = KubeBackend;

    async fn open(&self, scope: &str) -> KubeBackend {
        KubeBackend::builder(self.client.clone(), scope)
            .namespace(&self.namespace)
            .shards(3)
            .request_timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("backend starts")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(real_control_plane),
    ignore = "no control plane found at build time: run `cargo xtask envtest`"
)]
async fn the_conformance_suite_passes_on_a_real_control_plane() {
    let cluster = TestCluster::real().await.expect("control plane");
    cluster
        .apply_crd(&store_shard_crd())
        .await
        .expect("CRD served");
    let namespace = cluster
        .create_namespace("conformance")
        .await
        .expect("namespace");
    let harness = RealHarness {
        client: cluster.client().expect("client"),
        namespace,
    };
    store_conformance::run_all(&harness).await;
}
