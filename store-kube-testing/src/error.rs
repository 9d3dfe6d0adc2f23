//! The harness's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Why the harness could not start, connect or wait.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A client name that cannot travel in an HTTP header.
    #[error("client name {name:?} is not a valid header value")]
    ClientName {
        /// The name given.
        name: String,
    },
    /// Listening on a local port failed.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address that could not be bound.
        address: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file or temporary directory failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Building a kube client failed.
    #[error("cannot build a kube client: {0}")]
    Client(#[source] kube::Error),
    /// A request the harness made to the cluster failed.
    #[error("{what} failed: {source}")]
    Request {
        /// What the harness was doing.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Loading the generated kubeconfig failed.
    #[error("cannot load kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The reason.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The fake API server refused an object the harness wrote directly.
    #[error("the fake API server refused {what} with {code}: {message}")]
    Refused {
        /// What was written.
        what: String,
        /// The HTTP status the server would have answered.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// No `etcd` / `kube-apiserver` binaries were found.
    #[error("no control-plane binaries: {hint}")]
    AssetsMissing {
        /// Where the harness looked and how to provision them.
        hint: String,
    },
    /// A control-plane process failed to start or to become ready.
    #[error("{component} did not start: {message}")]
    ControlPlane {
        /// `etcd` or `kube-apiserver`.
        component: &'static str,
        /// What went wrong, with the end of the process's log.
        message: String,
    },
    /// A condition the harness waits for did not hold before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long the harness waited.
        after: Duration,
    },
    /// The Pepr peer (npm `pepr` in Node) failed or answered out of turn.
    #[error("the Pepr peer {0}")]
    Peer(String),
    /// Generating test certificates failed.
    #[error("cannot generate certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Serializing an object for the cluster failed.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// The object.
        what: String,
        /// The serializer's reason.
        #[source]
        source: serde_json::Error,
    },
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
