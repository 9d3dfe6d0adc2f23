//! The custom resources a store lives in.
//!
//! [`StoreShard`] is the native kind: one object per shard, its keys in
//! `spec.data`. `PeprStore` is Pepr's kind, described here so tests and the
//! manifests can register it; the backend reads both as dynamic objects.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::{ApiResource, GroupVersionKind};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the native kind.
pub const GROUP: &str = "typedstore.dev";

/// The label every shard carries, naming its store.
pub const STORE_LABEL: &str = "typedstore.dev/store";

/// One shard of a store: a slice of its keys.
///
/// `keys` and `bytes` are informational (shown by `kubectl get storeshards`):
/// each writer sets them from its own count, so under concurrent writers they
/// are approximate; `data` is the truth.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "typedstore.dev",
    version = "v1",
    kind = "StoreShard",
    plural = "storeshards",
    shortname = "kvs",
    namespaced,
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.store"}"#,
    printcolumn = r#"{"name":"Shard","type":"integer","jsonPath":".spec.shard"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".spec.keys"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","jsonPath":".spec.bytes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StoreShardSpec {
    /// The store this shard belongs to.
    pub store: String,
    /// This shard's index.
    pub shard: u32,
    /// How many shards the store has (all shards agree).
    pub shards: u32,
    /// Keys in this shard at the last write (informational).
    #[serde(default)]
    pub keys: u64,
    /// Bytes of keys and values in this shard at the last write (informational).
    #[serde(default)]
    pub bytes: u64,
    /// The keys and their values (JSON text).
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// The CRDs of both kinds a store can live in ([`store_shard_crd`] and
/// [`pepr_store_crd`]), for a test cluster to serve.
pub fn crds() -> [CustomResourceDefinition; 2] {
    [store_shard_crd(), pepr_store_crd()]
}

/// The CRD of the native kind.
pub fn store_shard_crd() -> CustomResourceDefinition {
    StoreShard::crd()
}

/// The dynamic-API description of the native kind.
pub fn store_shard_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "StoreShard"),
        "storeshards",
    )
}

/// The dynamic-API description of Pepr's `PeprStore` kind.
pub fn pepr_store_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("pepr.dev", "v1", "PeprStore"),
        "peprstores",
    )
}

/// The CRD of Pepr's `PeprStore` kind, as Pepr registers it: namespaced, a
/// top-level `data` map of strings.
pub fn pepr_store_crd() -> CustomResourceDefinition {
    let crd = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "peprstores.pepr.dev" },
        "spec": {
            "group": "pepr.dev",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "object",
                            "additionalProperties": { "type": "string" }
                        }
                    }
                }}
            }],
            "scope": "Namespaced",
            "names": {
                "plural": "peprstores",
                "singular": "peprstore",
                "kind": "PeprStore"
            }
        }
    });
    serde_json::from_value(crd).unwrap_or_default()
}
