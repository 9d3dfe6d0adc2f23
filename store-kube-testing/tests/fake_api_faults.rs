//! Fault injection and the request log: what only the fake can do, each
//! observed through kube-rs clients.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use store_conformance::support::eventually;
use store_kube_testing::{FakeApiServer, Fault, FaultRule, TestCluster, Verb};
use support::{Fixture, WidgetSpec, api_error, setup, widget, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn fake() -> (Arc<TestCluster>, Fixture) {
    let server = FakeApiServer::start().await.expect("fake API server");
    let cluster = Arc::new(TestCluster::from_fake(server));
    let fixture = setup(&cluster).await;
    (cluster, fixture)
}

fn server(cluster: &TestCluster) -> &FakeApiServer {
    cluster.fake_server().expect("the fake tier")
}

fn sized(size: i64) -> WidgetSpec {
    WidgetSpec {
        size: Some(size),
        ..WidgetSpec::default()
    }
}

#[tokio::test]
async fn dropped_watches_end_and_a_kube_runtime_watcher_recovers() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    // The watcher only watches while polled: drive it from a task.
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher::watcher(f.widgets.clone(), watcher::Config::default());
    let driver = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(event) = stream.next().await {
            if sender.send(event).is_err() {
                return;
            }
        }
    });
    eventually("the watch to open", || fake.open_watches() == 1).await;
    fake.drop_watches();
    f.widgets
        .create(&PostParams::default(), &widget("after", sized(1)))
        .await
        .expect("create");
    // The watcher re-watches from its last version and sees the new object.
    let seen = within("the object created after the drop", async {
        loop {
            if let Some(Ok(Event::Apply(w))) = events.recv().await {
                return w;
            }
        }
    })
    .await;
    assert_eq!(seen.metadata.name.as_deref(), Some("after"));
    eventually("the watch to be open again", || fake.open_watches() == 1).await;
    driver.abort();
}

#[tokio::test]
async fn an_injected_internal_error_fails_the_next_request_only() {
    let (cluster, f) = fake().await;
    server(&cluster).fail_next(1, Fault::InternalError);
    let error = api_error(f.widgets.list(&ListParams::default()).await);
    assert_eq!((error.code, error.reason.as_str()), (500, "InternalError"));
    f.widgets
        .list(&ListParams::default())
        .await
        .expect("the next request succeeds");
}

#[tokio::test]
async fn too_many_requests_carries_retry_after_which_kube_rs_honours() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    let retry_after = Fault::TooManyRequests {
        retry_after: Duration::from_millis(800),
    };
    // The header on the wire, rounded up to whole seconds.
    fake.fail_next(1, retry_after.clone());
    let mut stream = tokio::net::TcpStream::connect(fake.address())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /api HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    within("the answer", stream.read_to_string(&mut answer))
        .await
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\"retryAfterSeconds\":1"), "{answer}");
    // kube-rs waits and retries by itself.
    fake.clear_requests();
    fake.fail_next(1, retry_after);
    let started = Instant::now();
    f.widgets
        .list(&ListParams::default())
        .await
        .expect("list after the retry");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
}

#[tokio::test]
async fn an_injected_conflict_answers_409_and_changes_nothing() {
    let (cluster, f) = fake().await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    server(&cluster).inject(FaultRule::new(Fault::Conflict).verb(Verb::Patch));
    let patch = Patch::Merge(json!({ "spec": { "size": 2 } }));
    let error = api_error(f.widgets.patch("a", &PatchParams::default(), &patch).await);
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert_eq!(f.widgets.get("a").await.expect("get").spec.size, Some(1));
}

#[tokio::test]
async fn a_hang_outlasts_the_client_read_timeout() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    let mut config = cluster.config();
    config.read_timeout = Some(Duration::from_millis(300));
    let impatient: kube::Api<support::Widget> = kube::Api::namespaced(
        kube::Client::try_from(config).expect("client"),
        &f.namespace,
    );
    fake.fail_next(1, Fault::Hang(Duration::from_secs(5)));
    let started = Instant::now();
    let result = within(
        "the client to give up",
        impatient.list(&ListParams::default()),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the client gave up, not the server"
    );
    f.widgets
        .list(&ListParams::default())
        .await
        .expect("other requests are served");
}

#[tokio::test]
async fn added_latency_delays_every_request() {
    let (cluster, f) = fake().await;
    server(&cluster).set_latency(Duration::from_millis(200));
    let started = Instant::now();
    f.widgets.list(&ListParams::default()).await.expect("list");
    f.widgets.list(&ListParams::default()).await.expect("list");
    assert!(started.elapsed() >= Duration::from_millis(400));
    server(&cluster).set_latency(Duration::ZERO);
}

#[tokio::test]
async fn paused_requests_wait_until_resumed() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    fake.pause();
    let widgets = f.widgets.clone();
    let pending = tokio::spawn(async move {
        widgets
            .create(&PostParams::default(), &widget("a", sized(1)))
            .await
    });
    eventually("the request to be held", || fake.paused_requests() == 1).await;
    assert!(!pending.is_finished());
    fake.resume();
    within("the held request", pending)
        .await
        .expect("join")
        .expect("create");
    f.widgets.get("a").await.expect("created once resumed");
}

#[tokio::test]
async fn a_restart_keeps_objects_and_versions_on_the_same_port() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let address = fake.address();
    fake.stop().await;
    assert!(f.widgets.get("a").await.is_err(), "no server while stopped");
    fake.start_again().await.expect("start again");
    assert_eq!(fake.address(), address);
    let fetched = within("the server to answer again", async {
        loop {
            // The first request may reuse a connection the restart cut.
            if let Ok(widget) = f.widgets.get("a").await {
                return widget;
            }
        }
    })
    .await;
    assert_eq!(
        fetched.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(fetched.metadata.uid, created.metadata.uid);
    fake.restart().await.expect("restart");
    let again = within("the server after restart()", async {
        loop {
            if let Ok(widget) = f.widgets.get("a").await {
                return widget;
            }
        }
    })
    .await;
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
}

#[tokio::test]
async fn the_request_log_counts_patch_requests() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    fake.clear_requests();
    for size in 2..5 {
        f.widgets
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "size": size } })),
            )
            .await
            .expect("patch");
    }
    f.widgets.get("a").await.expect("get");
    let requests = fake.requests();
    let patches: Vec<_> = requests
        .iter()
        .filter(|r| r.verb == Some(Verb::Patch))
        .collect();
    assert_eq!(patches.len(), 3);
    assert!(patches.iter().all(|r| r.method == "PATCH"
        && r.status == 200
        && r.content_type.as_deref() == Some("application/merge-patch+json")
        && r.path.ends_with("/widgets/a")));
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.verb == Some(Verb::Get))
            .count(),
        1
    );
}

#[tokio::test]
async fn faults_hit_only_the_verb_or_path_they_target() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    fake.inject(
        FaultRule::new(Fault::InternalError)
            .times(2)
            .path_contains("/widgets/b"),
    );
    fake.inject(FaultRule::new(Fault::Conflict).verb(Verb::Delete));
    f.widgets.get("a").await.expect("other paths are untouched");
    assert_eq!(api_error(f.widgets.get("b").await).code, 500);
    assert_eq!(api_error(f.widgets.get("b").await).code, 500);
    assert_eq!(
        api_error(f.widgets.get("b").await).code,
        404,
        "the rule is used up"
    );
    let error = api_error(f.widgets.delete("a", &Default::default()).await);
    assert_eq!(error.code, 409);
    let logged = fake.requests();
    assert!(
        logged
            .iter()
            .any(|r| r.status == 500 && r.verb == Some(Verb::Get))
    );
}

#[tokio::test]
async fn the_server_survives_garbage_on_the_wire() {
    let (cluster, f) = fake().await;
    let address = server(&cluster).address();
    for garbage in [
        &b"\x00\x01\x02 not http at all\r\n\r\n"[..],
        b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /apis/fake.store-kube.test/v1/namespaces/default/widgets HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"trunc",
    ] {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream.write_all(garbage).await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        // Whatever the server answers (or not), it must close the connection.
        let _ = within("the server to close the connection", stream.read_to_end(&mut answer)).await;
    }
    f.widgets
        .list(&ListParams::default())
        .await
        .expect("the server still serves");
}

/// Faults, latency and watch delays aimed at one named client leave the
/// others alone; the request log names each request's client.
#[tokio::test]
async fn faults_latency_and_watch_delays_can_aim_at_one_client() {
    let (cluster, f) = fake().await;
    let fake = server(&cluster);
    let api = |name: &str| -> kube::Api<support::Widget> {
        kube::Api::namespaced(fake.client_as(name).expect("client"), &f.namespace)
    };
    let (a, b) = (api("replica-a"), api("replica-b"));
    f.widgets
        .create(&PostParams::default(), &widget("w", sized(1)))
        .await
        .expect("create");

    fake.inject(
        FaultRule::new(Fault::InternalError)
            .client("replica-b")
            .verb(Verb::Get),
    );
    a.get("w").await.expect("replica-a is not hit");
    assert_eq!(api_error(b.get("w").await).code, 500);
    b.get("w").await.expect("the rule hit once");
    let clients: Vec<Option<String>> = fake
        .requests()
        .iter()
        .filter(|r| r.verb == Some(Verb::Get))
        .map(|r| r.client.clone())
        .collect();
    assert_eq!(
        clients,
        [
            Some("replica-a".to_owned()),
            Some("replica-b".to_owned()),
            Some("replica-b".to_owned())
        ]
    );

    let latency = Duration::from_millis(300);
    fake.set_client_latency("replica-b", latency);
    let started = Instant::now();
    b.get("w").await.expect("get");
    assert!(started.elapsed() >= latency, "replica-b's request waited");

    // replica-b's watch lags by two seconds; replica-a's does not.
    let delay = Duration::from_secs(2);
    fake.set_client_watch_delay("replica-b", delay);
    let params = kube::api::WatchParams::default();
    let now = fake.resource_version().to_string();
    let mut seen_by_a = a.watch(&params, &now).await.expect("watch").boxed();
    let mut seen_by_b = b.watch(&params, &now).await.expect("watch").boxed();
    let written = Instant::now();
    f.widgets
        .create(&PostParams::default(), &widget("late", sized(2)))
        .await
        .expect("create");
    let name_of = |event: kube::api::WatchEvent<support::Widget>| match event {
        kube::api::WatchEvent::Added(w) => w.metadata.name,
        other => panic!("expected ADDED, got {other:?}"),
    };
    let first = within("replica-a's event", seen_by_a.next()).await;
    assert_eq!(
        name_of(first.expect("open").expect("event")),
        Some("late".to_owned())
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen_by_b.next())
            .await
            .is_err(),
        "replica-b's event is held back"
    );
    let second = within("replica-b's event", seen_by_b.next()).await;
    assert_eq!(
        name_of(second.expect("open").expect("event")),
        Some("late".to_owned())
    );
    assert!(
        written.elapsed() >= delay,
        "replica-b's event came after its delay"
    );
}

/// A fake built with a set of CRDs serves their resources from the start.
#[tokio::test]
async fn a_fake_built_with_crds_serves_them_from_the_start() {
    use kube::CustomResourceExt;
    let fake = FakeApiServer::builder()
        .crds([support::Widget::crd(), support::Gadget::crd()])
        .start()
        .await
        .expect("fake API server");
    let client = fake.client().expect("client");
    let widgets: kube::Api<support::Widget> = kube::Api::namespaced(client.clone(), "default");
    let gadgets: kube::Api<support::Gadget> = kube::Api::all(client);
    assert!(
        widgets
            .list(&ListParams::default())
            .await
            .expect("served")
            .items
            .is_empty()
    );
    assert!(
        gadgets
            .list(&ListParams::default())
            .await
            .expect("served")
            .items
            .is_empty()
    );
}
