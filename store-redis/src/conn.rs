//! One connection type over a single server and a cluster, both reconnecting
//! on their own: redis-rs's `ConnectionManager` for a server, its
//! cluster-async connection (slot map refresh, `MOVED`/`ASK`, failover) for a
//! cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::Endpoint;

/// How to trust the server's certificate on `rediss://` URLs.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// PEM root certificates to trust instead of the platform's.
    pub(crate) root_certificates: Option<Vec<u8>>,
}

impl Tls {
    fn client(&self, url: &str) -> RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if let Some(root) = &self.root_certificates {
            return redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                },
            );
        }
        redis::Client::open(url)
    }

    fn cluster(&self, builder: ClusterClientBuilder) -> ClusterClientBuilder {
        #[cfg(feature = "tls")]
        if let Some(root) = &self.root_certificates {
            return builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.clone()),
            });
        }
        builder
    }
}

/// A cheap-to-clone handle on the connection(s) to the deployment.
#[derive(Clone)]
pub(crate) enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects; `response_timeout` bounds each request (`None` for the
    /// connection that blocks on the change log).
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        tls: &Tls,
        response_timeout: Option<Duration>,
        connect_timeout: Duration,
    ) -> RedisResult<Conn> {
        match endpoint {
            Endpoint::Standalone(url) => {
                let client = tls.client(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(response_timeout)
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_with_config(client, config).await?;
                Ok(Conn::Standalone(manager))
            }
            Endpoint::Cluster(seeds) => {
                let mut builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .connection_timeout(connect_timeout)
                    .retries(4)
                    .min_retry_wait(20)
                    .max_retry_wait(500);
                builder = tls.cluster(builder);
                builder = match response_timeout {
                    Some(timeout) => builder.response_timeout(timeout),
                    None => builder
                        .response_timeout(Duration::from_secs(3600))
                        .overall_response_timeout(None),
                };
                let client = builder.build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

impl Conn {
    /// Sends `cmd` to the node that serves `key` (on a single server, to it).
    pub(crate) async fn on_node_of(&self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        match self {
            Conn::Standalone(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => {
                let mut c = c.clone();
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async(&mut c)
                    .await?;
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                c.route_command(cmd, route).await
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
