//! Shared fixtures for the fake API server's suites: two small custom
//! resources, a per-test namespace and raw requests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;

use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use kube::core::{Status, WatchEvent};
use kube::{Api, Client, CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub(crate) use store_kube_testing::{TestCluster, unique_name as unique, within};

/// A namespaced resource with a status subresource.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "fake.store-kube.test",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd"
)]
pub(crate) struct WidgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<String>,
}

/// Status of a [`Widget`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub(crate) struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) phase: Option<String>,
}

/// A cluster-scoped resource without subresources.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(group = "fake.store-kube.test", version = "v1", kind = "Gadget")]
pub(crate) struct GadgetSpec {
    pub(crate) value: String,
}

/// What most cases start from: the CRDs applied and a namespace of their own.
pub(crate) struct Fixture {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) widgets: Api<Widget>,
    pub(crate) gadgets: Api<Gadget>,
}

pub(crate) async fn setup(cluster: &TestCluster) -> Fixture {
    cluster
        .apply_crds(&[Widget::crd(), Gadget::crd()])
        .await
        .expect("widget and gadget CRDs");
    let namespace = cluster.create_namespace("t").await.expect("namespace");
    let client = cluster.client().expect("client");
    Fixture {
        widgets: Api::namespaced(client.clone(), &namespace),
        gadgets: Api::all(client.clone()),
        client,
        namespace,
    }
}

pub(crate) fn widget(name: &str, spec: WidgetSpec) -> Widget {
    Widget::new(name, spec)
}

/// The API error a request failed with.
pub(crate) fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next watch event, within the deadline.
pub(crate) async fn next_event<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    within("a watch event", stream.next())
        .await
        .expect("the watch ended")
        .expect("a well-formed watch event")
}

/// A raw answer: status code and body.
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) body: serde_json::Value,
    pub(crate) text: String,
    pub(crate) retry_after: Option<String>,
}

/// Sends a raw request through the client (auth and TLS included).
pub(crate) async fn raw(client: &Client, request: http::Request<Vec<u8>>) -> RawResponse {
    let response = within(
        "a raw response",
        client.send(request.map(kube::client::Body::from)),
    )
    .await
    .expect("the request reached the server");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = within("a raw body", response.into_body().collect())
        .await
        .expect("a body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    RawResponse {
        status,
        body,
        text,
        retry_after,
    }
}
