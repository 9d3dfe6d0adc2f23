//! Redis for the durable tier's cases: a real `redis-server` per case
//! ([`RedisServer`]) and a backend on it.

use std::time::Duration;

use store_redis::RedisBackend;
pub(crate) use store_redis_testing::RedisServer;

/// A backend for the store `store` on `server`.
pub(crate) async fn redis_backend(server: &RedisServer, store: &str) -> RedisBackend {
    RedisBackend::builder(server.url(), store)
        .prefix("sessions-test")
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("redis backend connects")
}
