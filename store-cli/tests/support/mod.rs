//! What the command's suites share: a store an application wrote, the
//! tool's JSON-lines output, and waiting on the application's view.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use serde_json::{Value, json};
use store_core::{Backend, Store};

/// How long the application's view may take to follow the tool.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A store on `backend` with the keys an application would have written:
/// a list, a JSON object and a secret.
pub(crate) async fn seeded(backend: impl Backend) -> Store {
    let store = Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(WAIT)
        .open()
        .await
        .expect("store");
    store
        .set_and_wait("exempt-namespaces", &vec!["kube-system", "team-b"])
        .await
        .expect("set");
    store
        .set_and_wait("policy", &json!({"denied_tag": "latest"}))
        .await
        .expect("set");
    store
        .set_and_wait("token", &"hunter2-cli-secret")
        .await
        .expect("set");
    store
}

/// The tool's `-o jsonl` output, one value a line.
pub(crate) fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Waits for `check` to hold, failing after [`WAIT`] (scaled).
pub(crate) async fn wait_for(what: &str, check: impl FnMut() -> bool) {
    store_conformance::support::eventually_within(what, WAIT, check).await;
}
