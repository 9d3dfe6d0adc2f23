//! The kube backend's figures on the fake API server: requests by verb and
//! outcome, watch restarts and watcher errors.
//!
//! Each test runs on one thread with a recorder of its own installed for it,
//! so the backend's handles and every request it makes record there.

mod support;

use std::time::Duration;

use store_conformance::figures::Figures;
use store_conformance::support::eventually;
use store_core::Store;
use store_kube::KubeBackend;
use store_kube::metrics::{REQUEST_DURATION, REQUESTS, WATCH_ERRORS, WATCH_RESTARTS};
use store_kube_testing::{FakeApiServer, Fault, FaultRule, Verb};
use support::fake_server;

async fn store_on(server: &FakeApiServer, name: &str) -> Store {
    let backend = KubeBackend::builder(server.client().expect("client"), name)
        .namespace("default")
        .shards(1)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("backend starts");
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .open()
        .await
        .expect("store starts")
}

fn requests(figures: &Figures, verb: &str, outcome: &str) -> u64 {
    figures.counter(REQUESTS, &[("verb", verb), ("outcome", outcome)])
}

#[tokio::test]
async fn patches_the_server_refuses_count_under_their_verb_and_outcome() {
    let figures = Figures::new();
    let _installed = figures.install();
    let server = fake_server().await;
    let store = store_on(&server, "refused").await;
    store.set_and_wait("first", &1).await.expect("set");
    let patched = requests(&figures, "patch", "ok");
    assert!(patched >= 1, "the first write was a patch");
    assert_eq!(requests(&figures, "patch", "conflict"), 0);

    server.inject(FaultRule::new(Fault::Conflict).verb(Verb::Patch));
    store.set_and_wait("after-409", &1).await.expect("retried");
    server.inject(FaultRule::new(Fault::InternalError).verb(Verb::Patch));
    store.set_and_wait("after-500", &1).await.expect("retried");

    assert_eq!(requests(&figures, "patch", "conflict"), 1);
    assert_eq!(requests(&figures, "patch", "unavailable"), 1);
    assert_eq!(requests(&figures, "patch", "ok"), patched + 2);
    assert_eq!(
        figures.counter(
            store_core::metrics::RETRIES,
            &[
                ("store", "refused"),
                ("backend", "kube"),
                ("reason", "transient")
            ]
        ),
        2
    );
    let verbs = figures.label_values(REQUESTS, "verb");
    for verb in &verbs {
        assert!(
            ["get", "list", "watch", "create", "patch"].contains(&verb.as_str()),
            "unexpected verb {verb} in {verbs:?}"
        );
    }
    assert!(
        !figures
            .histogram(REQUEST_DURATION, &[("store", "refused"), ("verb", "patch")])
            .is_empty()
    );
}

#[tokio::test]
async fn a_watch_the_server_closes_counts_one_restart() {
    let figures = Figures::new();
    let _installed = figures.install();
    let server = fake_server().await;
    let store = store_on(&server, "rewatched").await;
    eventually("the watch to open", || server.open_watches() == 1).await;
    assert_eq!(requests(&figures, "watch", "ok"), 1);
    assert_eq!(
        figures.counter(WATCH_RESTARTS, &[("store", "rewatched")]),
        0
    );

    server.drop_watches();
    eventually("the watcher to watch again", || {
        figures.counter(WATCH_RESTARTS, &[("store", "rewatched")]) == 1
    })
    .await;
    store.set_and_wait("after", &1).await.expect("set");
    assert_eq!(requests(&figures, "watch", "ok"), 2);
    assert_eq!(figures.counter(WATCH_RESTARTS, &[]), 1);
}

#[tokio::test]
async fn a_watch_the_server_refuses_counts_as_a_failed_request_and_a_watcher_error() {
    let figures = Figures::new();
    let _installed = figures.install();
    let server = fake_server().await;
    let store = store_on(&server, "refusedwatch").await;
    eventually("the watch to open", || server.open_watches() == 1).await;

    server.inject(FaultRule::new(Fault::InternalError).verb(Verb::Watch));
    server.drop_watches();
    eventually("the watcher to watch again after the refusal", || {
        requests(&figures, "watch", "ok") == 2
    })
    .await;
    assert_eq!(requests(&figures, "watch", "unavailable"), 1);
    assert_eq!(
        figures.counter(
            WATCH_ERRORS,
            &[("store", "refusedwatch"), ("reason", "watch_start")]
        ),
        1
    );
    assert_eq!(
        figures.counter(WATCH_RESTARTS, &[("store", "refusedwatch")]),
        2
    );
    store.set_and_wait("after", &1).await.expect("set");
}
