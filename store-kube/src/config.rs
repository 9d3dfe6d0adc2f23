//! What is wrong with a backend's configuration or with the cluster it is
//! pointed at, as a type a program can match on.

use std::fmt;

use store_core::Error;

use crate::error::NAME;

/// Why [`KubeBackendBuilder::build`](crate::KubeBackendBuilder::build) refused
/// to open a store. It reaches the caller inside
/// [`store_core::Error::Backend`]; [`ConfigError::of`] finds it there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The store's name cannot name its objects.
    InvalidStoreName {
        /// The name given.
        name: String,
    },
    /// A Pepr capability name is empty.
    EmptyCapability,
    /// Two Pepr capabilities would share keys (`<a>-v2-<key>` is also a key
    /// of capability `b`).
    OverlappingCapabilities {
        /// The capability named.
        name: String,
        /// The capability it overlaps.
        other: String,
    },
    /// The store exists with another shard count than this replica's.
    ShardCountMismatch {
        /// The store's name.
        store: String,
        /// The shard count the store was created with.
        found: u64,
        /// The shard count this replica asked for.
        configured: u32,
    },
    /// The API server does not serve the store's kind: its CRD is not
    /// installed.
    CrdMissing {
        /// The CRD's name, such as `storeshards.typedstore.dev`.
        crd: &'static str,
        /// The manifest that installs it.
        manifest: &'static str,
    },
    /// The store's namespace does not exist.
    NamespaceMissing {
        /// The namespace.
        namespace: String,
    },
}

impl ConfigError {
    /// The configuration error inside a store error, if that is what it is.
    pub fn of(error: &Error) -> Option<&ConfigError> {
        match error {
            Error::Backend { source, .. } => source.downcast_ref::<ConfigError>(),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidStoreName { name } => write!(
                f,
                "store name {name:?} must be a DNS label of at most 50 characters"
            ),
            ConfigError::EmptyCapability => {
                f.write_str("the Pepr capability name must not be empty")
            }
            ConfigError::OverlappingCapabilities { name, other } => write!(
                f,
                "Pepr capabilities {name:?} and {other:?} would share keys \
                 (`{name}-v2-<key>` is also a key of {other:?}); rename one"
            ),
            ConfigError::ShardCountMismatch {
                store,
                found,
                configured,
            } => write!(
                f,
                "store {store:?} was created with {found} shards; this replica asks for {configured}"
            ),
            ConfigError::CrdMissing { crd, manifest } => write!(
                f,
                "the API server does not serve {crd}: install its CRD (`kubectl apply -f {manifest}`)"
            ),
            ConfigError::NamespaceMissing { namespace } => {
                write!(f, "namespace {namespace:?} does not exist")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::backend(NAME, error)
    }
}
