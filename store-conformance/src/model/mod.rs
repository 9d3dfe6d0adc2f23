//! Model-based tests: random operations from several replicas of one store,
//! with backend faults between them, checked against a model of what the
//! backend may hold.
//!
//! A case is a list of [`Step`]s run one at a time, each awaited: one call on
//! one replica, a fault, or a checkpoint. The model keeps, per key, the
//! values the backend may hold. An acknowledged write narrows them to its
//! value: `set_and_wait`, `remove_and_wait`, `update`, `compare_and_set` and
//! `clear` returning `Ok`, and a `flush` returning `Ok` for the `set`s and
//! `remove`s queued before it. A queued write may land at any moment until it
//! is acknowledged. A call that failed leaves its write possible either way,
//! and the model adopts what the backend shows at the next checkpoint. At a
//! checkpoint (and at the end of every case) each replica flushes, the runner
//! waits on a deadline until every view and every subscriber agree, checks
//! the agreed state against the model, and adopts it.
//!
//! Order is defined by acknowledgement: a write acknowledged before a step
//! starts happened before that step's write; queued writes are ordered
//! against nothing but the writes of their own replica.
//!
//! Every broken promise fails the case: no deviation is tolerated. A call
//! that fails (a timeout, an unavailable backend, a conditional write whose
//! outcome is unknown) leaves its write free to land or not.
//!
//! A backend joins by implementing [`ModelHarness`]; its test feeds proptest's
//! inputs to [`Runner::case`] (see `store-core/tests/model_memory.rs`).
//! [`MemoryModel`] is the harness for [`MemoryBackend`](store_core::MemoryBackend). Every run prints one
//! summary line starting with `model:` that `cargo xtask soak` adds up.

/// The keys every case writes: plain names, a key family's shape, JSON
/// Pointer's escape characters, and non-ASCII text.
pub const KEYS: [&str; 6] = ["a", "b", "user/1", "user/2", "x~1y", "größe"];

/// Replicas every case opens.
pub const REPLICAS: usize = 3;

/// The most steps a case has.
pub const MAX_STEPS: usize = 40;

/// How long [`Runner::run`] shrinks a failing case at most: each rerun of a
/// failing case can wait out its deadlines, so shrinking is bounded in time as
/// well as in iterations, and reports the smallest case found by then.
pub const MAX_SHRINK_TIME: Duration = Duration::from_secs(180);

/// How long a checkpoint may take to flush and converge.
const QUIESCE: Duration = Duration::from_secs(60);

/// How long one step may take at most, whatever the store's own timeout.
const STEP_LIMIT: Duration = Duration::from_secs(120);

/// How long one case may take at most.
const CASE_LIMIT: Duration = Duration::from_secs(600);

/// A limit above, scaled by [`crate::DEADLINE_SCALE_ENV`].
fn limit(base: Duration) -> Duration {
    crate::deadline(base)
}

/// The raw input of one step, as proptest generates it: the operation, the
/// replica, the key and the value, each picked from one byte. Bytes shrink
/// toward zero, so a shrunk case is made of `set`s of small values.
pub type RawStep = [u8; 4];

/// The number of test cases: `STORE_MODEL_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("STORE_MODEL_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The seed for proptest's generator: `PROPTEST_RNG_SEED` when set, else a
/// fresh random one (printed in the summary line, so a failing run can be
/// repeated).
pub fn seed() -> u64 {
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}
use std::future::Future;
use std::time::Duration;

use store_core::Store;

mod keys;
mod memory;
mod runner;
mod stats;
mod steps;
#[cfg(test)]
mod tests;

pub use memory::{MemoryCase, MemoryModel};
pub use runner::{Runner, run_cases};
pub use stats::Stats;
pub use steps::{Op, Step};

/// How a test opens replicas of a fresh store on the backend under test and
/// injects faults into it.
pub trait ModelHarness {
    /// One case's store, replicas and fault switches.
    type Case: ModelCase;

    /// The backend's name in the summary line, such as `memory` or `kube-fake`.
    fn backend(&self) -> &str;

    /// The names of the faults [`ModelCase::inject`] knows, in its numbering;
    /// empty when the backend cannot be made to fail.
    fn faults(&self) -> &[&'static str];

    /// A fresh, empty store with `replicas` replicas: separate [`Store`]s (and
    /// where the backend has them, separate connections) on one shared store.
    fn open(&self, replicas: usize) -> impl Future<Output = Self::Case>;
}

/// One case's replicas and faults.
pub trait ModelCase {
    /// The replicas, each a ready [`Store`] with the timeout its calls use.
    fn replicas(&self) -> &[Store];

    /// Injects fault number `fault` of [`ModelHarness::faults`]; `replica` and
    /// `arg` may pick where and how much.
    fn inject(&self, fault: usize, replica: usize, arg: u8) -> impl Future<Output = ()>;

    /// Ends every lasting fault (held or slowed requests), before a checkpoint.
    fn heal(&self) -> impl Future<Output = ()>;
}
