//! Durable scopes export the store figures under one label per registry, so
//! the number of series does not grow with the number of sessions.

use store_conformance::figures::Figures;
use store_conformance::support::eventually;
use store_core::metrics::{BATCHES, READY, WRITES_QUEUED};
use store_session::Sessions;

#[tokio::test]
async fn every_durable_scope_of_a_registry_shares_one_store_label() {
    let figures = Figures::new();
    let _installed = figures.install();
    let sessions = Sessions::new();
    let mut ended = Vec::new();
    for id in ["session-1", "session-2", "session-3"] {
        let session = sessions.open(id).await.expect("opens");
        let durable = session
            .global()
            .expect("global")
            .durable()
            .await
            .expect("durable");
        let steps = durable
            .use_value("steps", Vec::<String>::new())
            .await
            .expect("use");
        steps
            .update(|s| s.push("deploy".into()))
            .await
            .expect("update");
        ended.push(session);
    }

    assert_eq!(figures.label_values(WRITES_QUEUED, "store"), ["sessions"]);
    assert!(figures.counter(BATCHES, &[("store", "sessions")]) >= 3);
    assert_eq!(figures.gauge(READY, &[("store", "sessions")]), Some(3.0));
    for session in ended {
        let ended = session.end().await.expect("ends");
        assert_eq!(ended.durable_keys, 1);
    }
    eventually("ended sessions' scopes to stop counting as ready", || {
        figures.gauge(READY, &[("store", "sessions")]) == Some(0.0)
    })
    .await;
}
