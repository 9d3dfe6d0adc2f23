//! The model harness for the memory backend.

use std::time::Duration;

use store_core::{MemoryBackend, Store};

use super::*;
use crate::Gated;

/// Faults [`MemoryModel`] injects, in [`ModelCase::inject`]'s numbering.
const MEMORY_FAULTS: &[&str] = &[
    "apply_failures",
    "replica_failures",
    "replica_held",
    "history_compacted",
];

/// The harness for [`MemoryBackend`]: the replicas share one backend behind
/// one [`Gated`] layer (faults of every replica), each through a [`Gated`]
/// layer of its own (faults of one replica).
///
/// Faults: the next 1 to 3 batches of any replica fail (`apply_failures`) or of
/// one replica (`replica_failures`); one replica's batches are held for up to
/// 200 ms (`replica_held`), longer than its calls' 150 ms timeout; the
/// backend forgets its history, so every watch re-lists (`history_compacted`).
#[derive(Debug, Default)]
pub struct MemoryModel;

/// One case of [`MemoryModel`].
#[derive(Debug)]
pub struct MemoryCase {
    backend: Gated<MemoryBackend>,
    gates: Vec<Gated<Gated<MemoryBackend>>>,
    replicas: Vec<Store>,
}

/// How long a memory replica's calls wait; a held replica's calls time out.
const MEMORY_TIMEOUT: Duration = Duration::from_millis(150);

impl ModelHarness for MemoryModel {
    type Case = MemoryCase;

    fn backend(&self) -> &str {
        "memory"
    }

    fn faults(&self) -> &[&'static str] {
        MEMORY_FAULTS
    }

    async fn open(&self, replicas: usize) -> MemoryCase {
        let backend = Gated::new(MemoryBackend::new());
        let mut gates = Vec::with_capacity(replicas);
        let mut stores = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let gate = Gated::new(backend.clone());
            let store = Store::builder()
                .backend(gate.clone())
                .linked_hooks(false)
                .timeout(MEMORY_TIMEOUT)
                .retry_backoff(Duration::from_millis(1), Duration::from_millis(20))
                .start();
            store
                .with_timeout(limit(QUIESCE))
                .ready()
                .await
                .expect("a memory replica starts");
            gates.push(gate);
            stores.push(store);
        }
        MemoryCase {
            backend,
            gates,
            replicas: stores,
        }
    }
}

impl ModelCase for MemoryCase {
    fn replicas(&self) -> &[Store] {
        &self.replicas
    }

    async fn inject(&self, fault: usize, replica: usize, arg: u8) {
        let count = 1 + usize::from(arg % 3);
        match fault {
            0 => self.backend.fail_next(count),
            1 => self.gates[replica].fail_next(count),
            2 => {
                let gate = self.gates[replica].clone();
                gate.close();
                let held = Duration::from_millis(25 * (1 + u64::from(arg % 8)));
                tokio::spawn(async move {
                    tokio::time::sleep(held).await;
                    gate.open();
                });
            }
            _ => self
                .backend
                .compact()
                .await
                .expect("the memory backend lists"),
        }
    }

    async fn heal(&self) {
        for gate in &self.gates {
            gate.open();
            gate.fail_next(0);
        }
        self.backend.fail_next(0);
    }
}
