//! Test kits for `store-core` backends, and the suite every backend passes.
//!
//! - **The conformance suite**: every promise of [`Store`](store_core::Store)
//!   checked against a backend. A backend author implements [`Harness`] (how
//!   to open a connection to a store; opening the same scope twice must give
//!   two connections to one store) and expands [`conformance_tests!`] in a
//!   test file, which makes one `#[test]` per case:
//!
//!   ```
//!   use store_conformance::MemoryHarness;
//!
//!   async fn harness() -> MemoryHarness {
//!       MemoryHarness::default()
//!   }
//!
//!   store_conformance::conformance_tests!(harness);
//!   # fn main() {}
//!   ```
//!
//!   Each case wraps the backend in [`Gated`], the fault layer, so it can
//!   hold writes back or make them fail for a while; that is how the suite
//!   checks read-your-writes, timeouts and retries on any backend. Cases
//!   panic with a message naming the broken promise. [`run_all`] runs every
//!   case in turn, for runners that pick the backend at run time.
//! - **The model runner** ([`model`]): random calls from several replicas of
//!   one store, with faults between them, checked against a model of what
//!   the backend may hold.
//! - **Support** ([`support`]): deadlines scaled by
//!   `STORE_TEST_DEADLINE_SCALE`, waiting on a condition, a proptest
//!   configuration and a capture of every log line.
//! - **Figures** ([`figures`]): a metrics recorder that keeps what stores
//!   record, for tests of their metrics.

mod gated;
mod harness;

pub mod cases;
pub mod figures;
pub mod model;
pub mod support;

use std::time::Duration;

pub use gated::Gated;
pub use harness::{Harness, MemoryHarness};
pub use support::{DEADLINE_SCALE_ENV, deadline};

/// Runs one case on a fresh multi-threaded runtime with a two-minute limit
/// (scaled by [`DEADLINE_SCALE_ENV`]).
///
/// # Panics
///
/// When the case fails or runs out of time.
pub fn run_case<H, M, C>(make: M, case: C)
where
    H: Harness,
    M: AsyncFnOnce() -> H,
    C: AsyncFnOnce(&H),
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime for the conformance case");
    runtime.block_on(async {
        let harness = make().await;
        let limit = deadline(Duration::from_secs(120));
        tokio::time::timeout(limit, case(&harness))
            .await
            .unwrap_or_else(|_| panic!("conformance case did not finish within {limit:?}"));
    });
}

/// Hands the names of every case to another of this crate's macros, so the
/// per-test expansion and [`run_all`] can never disagree on the list.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_list {
    ($callback:ident!($($args:tt)*)) => {
        $crate::$callback!($($args)*;
            get_sees_own_writes_before_they_are_acknowledged,
            get_of_a_missing_key_is_none,
            set_returns_at_once_and_lands_in_the_background,
            the_last_call_wins_per_key,
            set_remove_set_ends_set,
            removing_a_missing_key_is_fine,
            set_and_wait_returns_the_version_get_sees,
            remove_and_wait_hides_the_key,
            clear_removes_keys_this_handle_never_saw,
            clear_on_an_empty_store_is_fine,
            keys_another_writer_stored_against_the_rules_can_be_removed,
            concurrent_updates_lose_no_increment,
            updates_from_two_handles_lose_no_increment,
            an_update_that_declines_sends_nothing,
            compare_and_set_detects_conflicts,
            two_handles_converge,
            subscribers_see_every_change_in_order,
            subscriptions_filter_by_key_and_prefix,
            keys_len_and_snapshot_follow_the_view,
            flush_waits_for_queued_writes,
            hooks_run_before_ready_and_before_any_change_is_delivered,
            a_failing_hook_fails_start_up_with_its_name,
            waits_time_out_with_a_typed_error_and_the_write_still_lands,
            transient_failures_are_retried_without_losing_writes,
            bad_input_is_refused_at_the_call_and_loses_nothing,
            a_closed_store_refuses_calls,
            time_to_live_is_honoured_or_refused,
            transactions_land_together_or_not_at_all,
            unusual_keys_round_trip,
            many_writes_are_split_into_batches,
        );
    };
}

/// Expands to one `#[test]` per conformance case, each on a harness made by the
/// given `async fn() -> impl Harness`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::__conformance_case_list!(__conformance_cases!($make));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($make:path; $($case:ident),+ $(,)?) => {$(
        #[test]
        fn $case() {
            $crate::run_case($make, $crate::cases::$case);
        }
    )+};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_run_all {
    ($harness:ident; $($case:ident),+ $(,)?) => {$(
        ::tracing::info!(case = stringify!($case), "conformance case");
        $crate::cases::$case($harness).await;
    )+};
}

/// Runs every case in turn on one harness (for runners that pick the backend at
/// run time). Panics at the first broken promise.
pub async fn run_all<H: Harness>(harness: &H) {
    crate::__conformance_case_list!(__conformance_run_all!(harness));
}
