//! How a test opens connections to a store on the backend under test.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use store_core::{Backend, MemoryBackend};

/// How a test opens connections to a store on the backend under test.
pub trait Harness: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Backend;

    /// A connection to the store called `scope` (lowercase letters, digits and `-`,
    /// at most 40 bytes). Opening one scope twice gives two connections to one
    /// store, as two replicas would have; scopes are fresh for every case.
    fn open(&self, scope: &str) -> impl Future<Output = Self::Backend> + Send;
}

/// The harness for [`MemoryBackend`].
#[derive(Debug, Default)]
pub struct MemoryHarness {
    stores: Mutex<HashMap<String, MemoryBackend>>,
}

impl Harness for MemoryHarness {
    type Backend = MemoryBackend;

    async fn open(&self, scope: &str) -> MemoryBackend {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(scope.to_owned())
            .or_default()
            .clone()
    }
}
