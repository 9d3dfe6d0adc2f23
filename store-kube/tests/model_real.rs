//! Model-based test of the kube backend on a real control plane (etcd +
//! kube-apiserver), when one is provisioned (`cargo xtask envtest`, or
//! `KUBEBUILDER_ASSETS`): random calls from three replicas (each its own
//! client) on one store, checked against `store_conformance::model`, on a
//! control plane of the test's own, whose processes the faults hit: a hung
//! kube-apiserver (`SIGSTOP`, then `SIGCONT` after a quarter of a second to
//! two seconds), kube-apiserver killed (`SIGKILL`) and started again, etcd
//! killed and started again on its data, and a forced etcd compaction. Every
//! replica must converge after each, with no acknowledged write lost.
//! Reported as ignored where no control plane was found at build time (a
//! build failure under `STORE_KUBE_REQUIRE_REAL=1`).
//!
//! `STORE_MODEL_CASES` sets the number of cases (default 4) and
//! `PROPTEST_RNG_SEED` repeats a run; the summary line starts with `model:`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use store_conformance::model::{self, ModelCase, ModelHarness, Runner};
use store_core::Store;
use store_kube::KubeBackend;
use store_kube::resource::store_shard_crd;
use store_kube_testing::{Component, ControlPlane, TestCluster};

/// A fresh store (by name) per case, in one namespace of a control plane of
/// this test's own (the faults stop its processes).
struct RealModel {
    plane: Arc<ControlPlane>,
    cluster: TestCluster,
    namespace: String,
    cases: AtomicUsize,
}

/// The faults, in [`RealCase::inject`]'s numbering.
const FAULTS: [&str; 4] = ["api_hang", "api_restart", "etcd_restart", "etcd_compaction"];

impl RealModel {
    async fn start() -> Self {
        let plane = Arc::new(ControlPlane::start().await.expect("control plane"));
        let cluster = TestCluster::from_control_plane(Arc::clone(&plane));
        cluster
            .apply_crd(&store_shard_crd())
            .await
            .expect("CRD served");
        let namespace = cluster.create_namespace("model").await.expect("namespace");
        RealModel {
            plane,
            cluster,
            namespace,
            cases: AtomicUsize::new(0),
        }
    }
}

struct RealCase {
    plane: Arc<ControlPlane>,
    replicas: Vec<Store>,
}

impl ModelHarness for RealModel {
    type Case = RealCase;

    fn backend(&self) -> &str {
        "kube-real"
    }

    fn faults(&self) -> &[&'static str] {
        &FAULTS
    }

    async fn open(&self, replicas: usize) -> RealCase {
        let cluster = &self.cluster;
        let name = format!(
            "model-{}-{:08x}",
            self.cases.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let mut stores = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let backend = KubeBackend::builder(cluster.client().expect("client"), &name)
                .namespace(&self.namespace)
                .shards(2)
                .request_timeout(Duration::from_secs(5))
                .build()
                .await
                .expect("backend starts");
            stores.push(
                Store::builder()
                    .backend(backend)
                    .linked_hooks(false)
                    .timeout(Duration::from_secs(10))
                    .retry_backoff(Duration::from_millis(5), Duration::from_millis(500))
                    .open()
                    .await
                    .expect("store starts"),
            );
        }
        RealCase {
            plane: Arc::clone(&self.plane),
            replicas: stores,
        }
    }
}

impl ModelCase for RealCase {
    fn replicas(&self) -> &[Store] {
        &self.replicas
    }

    async fn inject(&self, fault: usize, _replica: usize, arg: u8) {
        let plane = &self.plane;
        match FAULTS.get(fault) {
            Some(&"api_hang") => {
                plane.pause(Component::KubeApiserver).expect("paused");
                let hung = Duration::from_millis(250 * (u64::from(arg % 8) + 1));
                let plane = Arc::clone(plane);
                tokio::spawn(async move {
                    tokio::time::sleep(hung).await;
                    // `heal` may have resumed it already; resuming twice is harmless.
                    let _ = plane.resume(Component::KubeApiserver);
                });
            }
            Some(&"api_restart") => plane
                .kill_and_restart(Component::KubeApiserver)
                .expect("kube-apiserver restarted"),
            Some(&"etcd_restart") => plane
                .kill_and_restart(Component::Etcd)
                .expect("etcd restarted"),
            Some(&"etcd_compaction") => {
                // Refused while etcd or the API server is down: nothing to do then.
                let _ = plane.compact_etcd().await;
            }
            _ => {}
        }
    }

    /// Resumes a hung server and waits until the API answers again.
    async fn heal(&self) {
        self.plane
            .resume(Component::KubeApiserver)
            .expect("resumed");
        self.plane
            .wait_until_ready()
            .await
            .expect("the control plane is ready again");
    }
}

#[test]
#[cfg_attr(
    not(real_control_plane),
    ignore = "no control plane found at build time: run `cargo xtask envtest`"
)]
fn kube_replicas_on_a_real_control_plane_agree_with_the_model() {
    Runner::new(RealModel::start).run(model::cases(4), 32);
}
