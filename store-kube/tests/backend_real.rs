//! The kube backend on a real control plane (etcd + kube-apiserver), when one
//! is provisioned (`cargo xtask envtest`): the whole conformance suite, and
//! Pepr's layout. Skips with a notice otherwise, unless
//! `STORE_KUBE_REQUIRE_REAL=1` makes a missing control plane a failure.
#![cfg(feature = "testing")]

use std::time::Duration;

use store_kube::KubeBackend;
use store_kube::resource::store_shard_crd;
use store_kube::testing::TestCluster;

struct RealHarness {
    client: kube::Client,
    namespace: String,
}

impl store_core::conformance::Harness for RealHarness {
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
async fn the_conformance_suite_passes_on_a_real_control_plane() {
    let Some(cluster) = TestCluster::real().await.expect("control plane") else {
        return;
    };
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
    store_core::conformance::run_all(&harness).await;
}
