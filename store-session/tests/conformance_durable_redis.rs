//! The durable tier (session scopes on one shared store) on the Redis backend,
//! on a real `redis-server` started for each case, against `store-core`'s
//! conformance suite, every scope fed by one shared watch as in a registry.

mod common;

use std::future::Future;

use common::ScopedHarness;
use common::redis::{RedisServer, redis_backend};
use store_core::backend::{Applied, Batch, Entry, Listing, WatchStream};
use store_core::{Backend, Capabilities, Result, Revision};
use store_redis::RedisBackend;

/// The Redis backend together with the server it talks to, so the server
/// lives as long as the harness.
struct OnRedisServer {
    backend: RedisBackend,
    _server: RedisServer,
}

impl Backend for OnRedisServer {
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

async fn harness() -> ScopedHarness<OnRedisServer> {
    let server = RedisServer::start();
    let backend = redis_backend(&server, "sessions").await;
    ScopedHarness::shared(OnRedisServer {
        backend,
        _server: server,
    })
}

store_conformance::conformance_tests!(harness);
