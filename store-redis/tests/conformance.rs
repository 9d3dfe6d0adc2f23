//! The Redis backend against store-core's conformance suite: every case on a
//! standalone server of its own, then every case in turn on one three-node
//! cluster (each case on a fresh store, so stores spread over the nodes).

mod support;

// The conformance kit; moving it to another crate changes these two lines.
use store_conformance::conformance_tests;
use store_conformance::{Harness, run_all};

use store_redis::RedisBackend;
use support::{RedisCluster, RedisServer, backend};

/// One standalone server; each scope is a store on it.
struct Standalone {
    server: RedisServer,
}

impl Harness for Standalone {
    type Backend = RedisBackend;

    async fn open(&self, scope: &str) -> RedisBackend {
        backend(&self.server.url(), scope).await
    }
}

async fn standalone() -> Standalone {
    Standalone {
        server: RedisServer::start(),
    }
}

conformance_tests!(standalone);

/// One cluster; each scope is a store, in the slot of its hash tag.
struct Cluster {
    cluster: RedisCluster,
}

impl Harness for Cluster {
    type Backend = RedisBackend;

    async fn open(&self, scope: &str) -> RedisBackend {
        backend(&self.cluster.url(), scope).await
    }
}

#[test]
fn every_case_on_a_cluster() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let harness = Cluster {
        cluster: RedisCluster::start(),
    };
    runtime.block_on(async {
        let limit = store_conformance::deadline(std::time::Duration::from_secs(600));
        tokio::time::timeout(limit, run_all(&harness))
            .await
            .unwrap_or_else(|_| panic!("the cluster run did not finish within {limit:?}"));
    });
}
