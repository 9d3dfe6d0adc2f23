//! One test case, one test per tier.

/// Expands `on_both_tiers!(case)` into a module `case` holding two tests that
/// call `async fn case(cluster: &TestCluster)`: `on_the_fake`, on a fresh
/// [`FakeApiServer`](crate::FakeApiServer) (or on one from the builder
/// expression given as a second argument), and `on_a_real_control_plane`, on
/// the real control plane the test binary shares ([`TestCluster::real`](crate::TestCluster::real)).
/// Both run on tokio's current-thread runtime, or on a two-worker
/// multi-threaded one with `on_both_tiers!(case, multi_thread)`.
///
/// The real test is compiled as `#[ignore]`d, with the reason, unless the
/// crate's build script found control-plane binaries and set the
/// `real_control_plane` cfg (see the crate docs, [The same test on both
/// tiers](crate#the-same-test-on-both-tiers)): a test that cannot run says
/// so instead of passing. The calling crate needs `tokio` with its `macros`
/// and `rt` features.
#[macro_export]
macro_rules! on_both_tiers {
    ($case:ident) => {
        $crate::on_both_tiers!(@ $case, $crate::FakeApiServer::builder(), ::tokio::test);
    };
    ($case:ident, multi_thread) => {
        $crate::on_both_tiers!(
            @ $case,
            $crate::FakeApiServer::builder(),
            ::tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    };
    ($case:ident, $builder:expr) => {
        $crate::on_both_tiers!(@ $case, $builder, ::tokio::test);
    };
    (@ $case:ident, $builder:expr, $($test:tt)*) => {
        mod $case {
            #[allow(unused_imports, reason = "for the builder expression")]
            use super::*;

            #[$($test)*]
            async fn on_the_fake() {
                let server = $builder.start().await.expect("fake API server");
                let cluster = $crate::TestCluster::from_fake(server);
                super::$case(&cluster).await;
            }

            #[$($test)*]
            #[cfg_attr(
                not(real_control_plane),
                ignore = "no control plane found at build time: run `cargo xtask envtest` or set KUBEBUILDER_ASSETS"
            )]
            async fn on_a_real_control_plane() {
                let cluster = $crate::TestCluster::real().await.expect("real control plane");
                super::$case(&cluster).await;
            }
        }
    };
}
