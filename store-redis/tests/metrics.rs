//! The Redis backend's figures on a server started here: commands by script
//! and outcome, and resent batches.
//!
//! Each test runs on one thread with a recorder of its own installed for it,
//! so the backend's handles and every command it sends record there.

mod support;

use std::time::Duration;

use store_conformance::figures::Figures;
use store_core::backend::{Batch, Op, Outcome};
use store_core::{Backend, Payload, Precondition, Store};
use store_redis::RedisBackend;
use store_redis::metrics::{COMMAND_DURATION, COMMANDS, RESENDS};
use support::{RedisServer, backend};

fn commands(figures: &Figures, command: &str, outcome: &str) -> u64 {
    figures.counter(COMMANDS, &[("command", command), ("outcome", outcome)])
}

#[tokio::test]
async fn one_batch_counts_one_apply_command() {
    let figures = Figures::new();
    let _installed = figures.install();
    let server = RedisServer::start();
    let store = Store::builder()
        .backend(backend(&server.url(), "counted").await)
        .linked_hooks(false)
        .open()
        .await
        .expect("store starts");
    assert_eq!(commands(&figures, "apply", "ok"), 0);
    assert!(commands(&figures, "list", "ok") >= 1, "the initial listing");

    store.set_and_wait("k", &1).await.expect("set");

    assert_eq!(commands(&figures, "apply", "ok"), 1);
    assert_eq!(
        figures.counter(COMMANDS, &[("store", "counted"), ("command", "apply")]),
        1
    );
    assert_eq!(
        figures
            .histogram(
                COMMAND_DURATION,
                &[("store", "counted"), ("command", "apply")]
            )
            .len(),
        1
    );
    assert_eq!(
        figures.counter(
            store_core::metrics::BATCHES,
            &[("store", "counted"), ("backend", "redis")]
        ),
        1
    );
    assert_eq!(figures.counter(RESENDS, &[]), 0);
    let known = [
        "apply", "read", "list", "since", "reap", "xread", "wait", "config",
    ];
    for command in figures.label_values(COMMANDS, "command") {
        assert!(known.contains(&command.as_str()), "unexpected {command}");
    }
}

#[tokio::test]
async fn a_lost_answer_counts_a_timeout_and_every_later_attempt_as_a_resend() {
    let figures = Figures::new();
    let _installed = figures.install();
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url(), "resent")
        .prefix("test")
        .request_timeout(Duration::from_millis(150))
        .write_retry_window(Duration::from_secs(20))
        .build()
        .await
        .expect("backend connects");
    // Writes are held on the server: attempts time out here until the pause
    // ends, and the batch is resent each time.
    server.cli(&["CLIENT", "PAUSE", "1000", "WRITE"]);
    let batch = Batch {
        ops: vec![Op::put("once", Payload::from("1")).when(Precondition::Absent)],
        atomic: true,
    };
    let applied = backend.apply(batch).await.expect("applied");
    assert!(matches!(applied.outcomes[..], [Outcome::Applied(_)]));

    let outcomes = figures.label_values(COMMANDS, "outcome");
    assert!(
        ["timeout", "unavailable"]
            .iter()
            .any(|lost| commands(&figures, "apply", lost) >= 1),
        "the first attempt's answer was lost: {outcomes:?}"
    );
    assert_eq!(commands(&figures, "apply", "ok"), 1, "one attempt answered");
    let attempts = figures.counter(COMMANDS, &[("store", "resent"), ("command", "apply")]);
    assert_eq!(
        figures.counter(RESENDS, &[("store", "resent")]),
        attempts - 1,
        "every attempt after the first is a resend"
    );
}
