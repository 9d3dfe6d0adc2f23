//! Test Kubernetes code against an in-process fake API server or a real
//! control plane, with the same test functions.
//!
//! Add it as a dev-dependency. It shares no code with `store-kube`, the
//! backend it is the oracle for: it speaks the protocol from its own reading
//! of kube-apiserver's behaviour.
//!
//! - [`FakeApiServer`]: a real HTTP server on `127.0.0.1` speaking the
//!   Kubernetes REST protocol for custom resources. It hands out a
//!   [`kube::Client`] ([`FakeApiServer::client`]) and a kubeconfig file
//!   ([`FakeApiServer::kubeconfig_path`]) so `kubectl` works against it too.
//!   It serves resources from CRDs applied over HTTP or with
//!   [`FakeApiServer::apply_crd`]; answers create, get, list, replace, patch
//!   (JSON Patch with `test`, merge patch, server-side apply with field
//!   managers), delete (with uid and resourceVersion preconditions) and
//!   `/status`; lists and watches with resourceVersion semantics, label and
//!   field selectors, bookmarks, timeouts and a bounded history window
//!   (`410 Gone` beyond it); enforces the 3 MiB request and 1.5 MiB object
//!   limits; prunes, defaults and validates objects against the CRD's
//!   schema; and can be told to fail: see [Faults](#faults).
//! - [`ControlPlane`]: etcd and kube-apiserver started on free ports with
//!   their own certificates, found as envtest finds them
//!   ([`ControlPlaneAssets::discover`]): `TEST_ASSET_ETCD` and
//!   `TEST_ASSET_KUBE_APISERVER`, or the directory `KUBEBUILDER_ASSETS`
//!   names. In this repository `cargo xtask envtest` provisions them.
//! - [`TestCluster`]: either of the two, so one `async fn
//!   case(cluster: &TestCluster)` runs on both.
//!
//! # Testing an operator against the fake
//!
//! The operator below greets whoever a `Greeting` names, in its status. The
//! test starts a fake API server, applies the CRD, runs the controller and
//! waits (on a deadline, never a sleep) until the status says hello.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use futures_util::StreamExt;
//! use kube::api::{Api, Patch, PatchParams, PostParams};
//! use kube::runtime::controller::{Action, Controller};
//! use kube::runtime::wait::await_condition;
//! use kube::{CustomResource, CustomResourceExt, ResourceExt};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use store_kube_testing::FakeApiServer;
//!
//! #[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
//! #[kube(group = "example.com", version = "v1", kind = "Greeting", namespaced)]
//! #[kube(status = "GreetingStatus")]
//! pub struct GreetingSpec {
//!     name: String,
//! }
//!
//! #[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
//! pub struct GreetingStatus {
//!     message: String,
//! }
//!
//! /// The operator under test.
//! async fn reconcile(greeting: Arc<Greeting>, api: Arc<Api<Greeting>>) -> Result<Action, kube::Error> {
//!     let message = format!("Hello, {}!", greeting.spec.name);
//!     let status = serde_json::json!({ "status": { "message": message } });
//!     api.patch_status(&greeting.name_any(), &PatchParams::default(), &Patch::Merge(&status))
//!         .await?;
//!     Ok(Action::await_change())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FakeApiServer::start().await?;
//! server.apply_crd(&Greeting::crd())?;
//! let greetings: Api<Greeting> = Api::namespaced(server.client()?, "default");
//!
//! let operator = Controller::new(greetings.clone(), Default::default())
//!     .run(reconcile, |_, _, _| Action::requeue(Duration::from_secs(1)), Arc::new(greetings.clone()))
//!     .for_each(|_| async {});
//! tokio::spawn(operator);
//!
//! let ada = Greeting::new("ada", GreetingSpec { name: "Ada".into() });
//! greetings.create(&PostParams::default(), &ada).await?;
//! let greeted = |g: Option<&Greeting>| {
//!     g.and_then(|g| g.status.as_ref()).is_some_and(|s| s.message == "Hello, Ada!")
//! };
//! tokio::time::timeout(Duration::from_secs(10), await_condition(greetings, "ada", greeted)).await??;
//! # Ok(())
//! # }
//! ```
//!
//! # The same test on both tiers
//!
//! Write the case once; [`on_both_tiers!`] makes one test per tier. The real
//! control plane is shared by the tests of one binary (start-up takes
//! seconds), so a case keeps to its own namespace
//! ([`TestCluster::create_namespace`]).
//!
//! A test that needs the real control plane and finds none must say so rather
//! than pass, so whether the binaries are there is decided when the tests are
//! built: a build script sets the `real_control_plane` cfg when they are
//! found, and the real-tier test is `#[ignore]`d otherwise (with
//! `STORE_KUBE_REQUIRE_REAL=1`, as in CI, a missing control plane fails the
//! build). The build script includes this crate's dependency-free finder:
//!
//! ```text
//! // build.rs
//! #[path = "../store-kube-testing/src/assets.rs"] // this crate's `src/assets.rs`
//! mod assets;
//!
//! fn main() {
//!     assets::emit_build_cfg();
//! }
//! ```
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use store_kube_testing::{TestCluster, on_both_tiers};
//!
//! async fn config_maps_round_trip(cluster: &TestCluster) {
//!     let namespace = cluster.create_namespace("cm").await.expect("namespace");
//!     let api: Api<ConfigMap> = Api::namespaced(cluster.client().expect("client"), &namespace);
//!     // ... exercise the code under test ...
//! #   let _ = api;
//! }
//!
//! // Tests `config_maps_round_trip::on_the_fake` and
//! // `config_maps_round_trip::on_a_real_control_plane`.
//! on_both_tiers!(config_maps_round_trip);
//! # fn main() {}
//! ```
//!
//! (The fake serves namespaces and custom resources only; a case meant for
//! both tiers sticks to those.)
//!
//! # Faults
//!
//! Scripted from the test, on the [`FakeApiServer`] only:
//! [`fail_next`](FakeApiServer::fail_next) and
//! [`inject`](FakeApiServer::inject) answer the next requests (optionally
//! only a [`Verb`], a path fragment or one client) with a [`Fault`]: 500,
//! 429 with `Retry-After`, 409, or a hang past the client's timeout;
//! [`set_latency`](FakeApiServer::set_latency) delays every request and
//! [`set_watch_delay`](FakeApiServer::set_watch_delay) every watch event
//! (so watchers' views lag, in order);
//! [`pause`](FakeApiServer::pause) and [`resume`](FakeApiServer::resume)
//! hold requests; [`drop_watches`](FakeApiServer::drop_watches) ends every
//! watch; [`restart`](FakeApiServer::restart) (or
//! [`stop`](FakeApiServer::stop) and
//! [`start_again`](FakeApiServer::start_again)) cuts every connection and
//! serves the same objects and versions again on the same port. The
//! [request log](FakeApiServer::requests) lets a test count API calls.
//!
//! **One client at a time.** A client made with
//! [`client_as("replica-b")`](FakeApiServer::client_as) names itself on
//! every request, so a [`FaultRule::client`], a
//! [`set_client_latency`](FakeApiServer::set_client_latency) or a
//! [`set_client_watch_delay`](FakeApiServer::set_client_watch_delay) hits
//! that replica alone: one replica's view lags or its writes fail while the
//! others go on, with no proxy in between.
//!
//! # Where the fake differs from kube-apiserver
//!
//! The fake's suite (`tests/fake_api.rs` in this crate) runs every protocol case
//! on both tiers; these differences remain, by design or for cost:
//!
//! - **Schemas are checked in part.** Like kube-apiserver, the fake prunes
//!   unknown fields, drops `null`s of non-nullable fields, fills `default`s
//!   and answers 422 with a cause per field for wrong types, missing
//!   `required` fields, values outside an `enum` and broken bounds
//!   (`minimum`/`maximum`, lengths, item and property counts). It does not
//!   check `pattern`, `format`, `oneOf`/`anyOf`/`allOf`/`not` or CEL rules,
//!   nor the CRD's own schema. No conversion between versions: every served
//!   version shows the same stored fields.
//! - **Unknown paths** get a `NotFound` `Status`; kube-apiserver answers a
//!   plain-text `404 page not found` for unknown groups and resources.
//! - **Bookmarks** come every [`bookmark_interval`](FakeApiServerBuilder::bookmark_interval)
//!   (one second by default) with the cluster-wide revision;
//!   kube-apiserver sends one about every minute and two seconds before a
//!   watch times out, with the last revision of that resource. Both only
//!   send one newer than the watch's start.
//! - **History**: the fake keeps the last
//!   [`history_window`](FakeApiServerBuilder::history_window) revisions for
//!   watches and exact lists alike. kube-apiserver answers watches from its
//!   per-resource watch cache (a watch from before the cache's start gets
//!   410) and exact lists from etcd, whose history it compacts periodically
//!   ([`ControlPlane`] compacts every 5 s).
//! - **Deletion is immediate** for CRDs (kube-apiserver deletes their
//!   objects first, through a finalizer) and namespaces (kube-apiserver
//!   leaves them `Terminating` until kube-controller-manager, absent from a
//!   test control plane, empties them; the fake deletes their objects).
//!   There is no garbage collection of `ownerReferences` on either tier.
//!   CRDs are `Established` at once.
//! - **Server-side apply treats every list as atomic**; the real server
//!   merges lists marked `x-kubernetes-list-type: map` or `set` item by item.
//!   Entries of `/status` writes carry `subresource: status` (Kubernetes
//!   1.22+; the 1.20 control plane built by `cargo xtask envtest` omits it).
//! - **Object size** is the object's JSON length, with managedFields, against
//!   etcd's 1,572,864 bytes; etcd counts the whole request, so the real limit
//!   is a few hundred bytes lower.
//! - **Request bodies are JSON only** (YAML that is not JSON gets 400);
//!   no protobuf, no table output (kubectl falls back to names and ages).
//!   OpenAPI is served as v3 documents without schemas, declaring only the
//!   `fieldValidation` parameter so `kubectl apply` leaves validation to the
//!   server; `/openapi/v2` is not served.
//! - **Metadata of the wrong shape** (labels or annotations that are not
//!   maps of strings, finalizers or owner references that are not lists of
//!   them) gets 422 naming the field on every verb; kube-apiserver refuses it
//!   as well, with 400 on some verbs.
//! - **Any credentials are accepted**; there is no RBAC or admission.
//! - A list at a resourceVersion newer than the current one gets `504` at
//!   once; kube-apiserver first waits up to 3 s for its cache.
//! - `sendInitialEvents`, `fieldValidation` and CEL rules are ignored, as by
//!   the 1.20 control plane.

mod api_status;
mod assets;
mod cluster;
mod control_plane;
mod deadline;
mod error;
mod etcd;
mod faults;
mod handlers;
mod kubeconfig;
mod managed_fields;
mod metadata;
mod patch;
mod pepr_peer;
mod query;
mod registry;
mod request_log;
mod router;
mod schema;
mod selector;
mod server;
mod server_side_apply;
mod state;
mod target;
mod tiers;
mod watch;

pub use assets::REQUIRE_REAL_ENV;
pub use cluster::TestCluster;
pub use control_plane::{Component, ControlPlane, ControlPlaneAssets};
pub use deadline::{DEADLINE_SCALE_ENV, DEFAULT_DEADLINE, deadline, unique_name, within};
pub use error::{Error, Result};
pub use faults::{Fault, FaultRule};
pub use pepr_peer::PeprPeer;
pub use request_log::{RecordedRequest, Verb};
pub use server::{FakeApiServer, FakeApiServerBuilder};
