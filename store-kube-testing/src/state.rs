//! What every request can reach: the objects, the registered kinds, the
//! faults, the request log and the server's settings. Shared by all
//! connections and kept across restarts.

use std::time::Duration;

use crate::etcd::Etcd;
use crate::faults::Faults;
use crate::registry::Registry;
use crate::request_log::RequestLog;

/// Settings fixed when the server starts.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) bookmark_interval: Duration,
    pub(crate) server_address: String,
}

/// Everything a request can reach; shared by all connections and kept
/// across restarts.
pub(crate) struct App {
    pub(crate) etcd: Etcd,
    pub(crate) registry: Registry,
    pub(crate) faults: Faults,
    pub(crate) log: RequestLog,
    pub(crate) options: Options,
}
