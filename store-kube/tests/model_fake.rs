//! Model-based test of the kube backend on the fake API server: random calls
//! from three replicas (each its own client and backend) on one store, with
//! dropped watches, 409/429/500 answers, hung requests, latency and API
//! restarts between them, checked against `store_conformance::model`. One promise the
//! model checks is also replayed step by step: a write conditional on absence
//! is not refused on the word of a lagging watch.
//!
//! `STORE_MODEL_CASES` sets the number of cases (default 12) and
//! `PROPTEST_RNG_SEED` repeats a run; the summary line starts with `model:`.

use std::time::Duration;

use store_conformance::model::{self, ModelCase, ModelHarness, Runner};
use store_core::Store;
use store_kube::KubeBackend;
use store_kube::resource::store_shard_crd;
use store_kube_testing::{FakeApiServer, Fault};

/// Faults, in `inject`'s numbering.
const FAULTS: &[&str] = &[
    "watch_drop",
    "status_409",
    "status_429",
    "status_500",
    "latency",
    "restart",
    "hang",
];

/// One request may take this long before the backend retries it; a hung
/// request outlasts it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A fresh fake API server per case, so no fault outlives its case.
struct KubeFakeModel;

struct KubeFakeCase {
    server: FakeApiServer,
    replicas: Vec<Store>,
}

impl ModelHarness for KubeFakeModel {
    type Case = KubeFakeCase;

    fn backend(&self) -> &str {
        "kube-fake"
    }

    fn faults(&self) -> &[&'static str] {
        FAULTS
    }

    async fn open(&self, replicas: usize) -> KubeFakeCase {
        let server = FakeApiServer::start()
            .await
            .expect("fake API server starts");
        server.apply_crd(&store_shard_crd()).expect("CRD applies");
        let mut stores = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let backend = KubeBackend::builder(server.client().expect("client"), "model")
                .namespace("default")
                .shards(2)
                .request_timeout(REQUEST_TIMEOUT)
                .build()
                .await
                .expect("backend starts");
            stores.push(open_store(backend).await);
        }
        KubeFakeCase {
            server,
            replicas: stores,
        }
    }
}

async fn open_store(backend: KubeBackend) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        // Three 429s (a second each) outlast it: some calls time out.
        .timeout(Duration::from_millis(2500))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
        .open()
        .await
        .expect("store starts")
}

impl ModelCase for KubeFakeCase {
    fn replicas(&self) -> &[Store] {
        &self.replicas
    }

    async fn inject(&self, fault: usize, _replica: usize, arg: u8) {
        let count = 1 + usize::from(arg % 3);
        match fault {
            0 => self.server.drop_watches(),
            1 => self.server.fail_next(count, Fault::Conflict),
            2 => self.server.fail_next(
                count,
                Fault::TooManyRequests {
                    retry_after: Duration::from_secs(1),
                },
            ),
            3 => self.server.fail_next(count, Fault::InternalError),
            4 => self
                .server
                .set_latency(Duration::from_millis(1 + u64::from(arg % 30))),
            5 => self.server.restart().await.expect("the API restarts"),
            _ => self
                .server
                .fail_next(1, Fault::Hang(REQUEST_TIMEOUT + Duration::from_secs(1))),
        }
    }

    async fn heal(&self) {
        self.server.clear_faults();
    }
}

#[test]
fn kube_replicas_on_the_fake_agree_with_the_model_under_faults() {
    Runner::new(async || KubeFakeModel).run(model::cases(12), 64);
}

/// A replica whose watch has fallen behind still asks the server before it
/// refuses a write conditional on absence: the key it last saw is gone there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_conditional_on_absence_is_decided_by_the_server_not_a_stale_watch() {
    use store_core::backend::{Batch, Op};
    use store_core::{Backend, Precondition};
    use store_kube_testing::{FaultRule, Verb};

    let server = FakeApiServer::start()
        .await
        .expect("fake API server starts");
    server.apply_crd(&store_shard_crd()).expect("CRD applies");
    let connect = || async {
        KubeBackend::builder(server.client().expect("client"), "stale")
            .namespace("default")
            .request_timeout(REQUEST_TIMEOUT)
            .build()
            .await
            .expect("backend starts")
    };
    let writer = connect().await;
    let stale = open_store(connect().await).await;
    stale.set_and_wait("k", &1).await.expect("set");
    // The stale replica's watch breaks and cannot come back.
    server.inject(
        FaultRule::new(Fault::InternalError)
            .times(usize::MAX)
            .verb(Verb::Watch),
    );
    server.drop_watches();
    writer
        .apply(Batch {
            ops: vec![Op::delete("k")],
            atomic: false,
        })
        .await
        .expect("removed on the server");
    let created = tokio::spawn({
        let stale = stale.with_timeout(Duration::from_secs(60));
        async move { stale.compare_and_set("k", Precondition::Absent, &2).await }
    });
    // Once the write is on the server, let the watch come back so the store
    // can see it and answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !created.is_finished() && writer.read("k").await.expect("read").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the conditional write neither landed nor was answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.clear_faults();
    let created = created.await.expect("task");
    assert!(created.is_ok(), "`k` is absent on the server: {created:?}");
}
