//! The resources the fake serves: the built-in `namespaces` and
//! `customresourcedefinitions`, plus one entry per stored CRD; and the
//! discovery documents (`/api`, `/apis`, `/apis/<group>/<version>`) kube-rs
//! and kubectl read to find them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::etcd::ResourceKey;

/// The API group of CRDs.
pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";

/// Resources with behaviour beyond plain storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Namespace,
    CustomResourceDefinition,
    /// An instance of a CRD.
    Custom,
}

/// One served resource.
#[derive(Debug, Clone)]
pub(crate) struct ResourceInfo {
    pub(crate) group: String,
    /// Served versions, most preferred first.
    pub(crate) versions: Vec<String>,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) kind: String,
    pub(crate) list_kind: String,
    pub(crate) namespaced: bool,
    /// Versions that declare the `/status` subresource.
    pub(crate) status_versions: Vec<String>,
    pub(crate) short_names: Vec<String>,
    pub(crate) categories: Vec<String>,
    pub(crate) builtin: Builtin,
    /// `openAPIV3Schema` per served version.
    pub(crate) schemas: BTreeMap<String, Value>,
}

impl ResourceInfo {
    pub(crate) fn key(&self) -> ResourceKey {
        ResourceKey {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    pub(crate) fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub(crate) fn has_status(&self, version: &str) -> bool {
        self.status_versions.iter().any(|v| v == version)
    }

    /// Whether spec changes count in `metadata.generation`.
    pub(crate) fn tracks_generation(&self) -> bool {
        self.builtin != Builtin::Namespace
    }

    /// Field selectors the resource supports.
    pub(crate) fn selectable_fields(&self) -> &'static [&'static str] {
        match self.builtin {
            Builtin::Namespace => &["metadata.name", "status.phase"],
            _ => &["metadata.name", "metadata.namespace"],
        }
    }

    fn discovery_entries(&self, version: &str) -> Vec<Value> {
        let mut resource = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "storageVersionHash": "",
        });
        if !self.short_names.is_empty() {
            resource["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            resource["categories"] = json!(self.categories);
        }
        let mut entries = vec![resource];
        if self.has_status(version) {
            entries.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        entries
    }
}

/// Every served resource, keyed by (group, plural).
pub(crate) struct Registry {
    resources: RwLock<BTreeMap<(String, String), Arc<ResourceInfo>>>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        let mut resources = BTreeMap::new();
        for info in [namespaces(), crds()] {
            resources.insert((info.group.clone(), info.plural.clone()), Arc::new(info));
        }
        Self {
            resources: RwLock::new(resources),
        }
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String), Arc<ResourceInfo>>> {
        self.resources
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The resource served at `group/version` under `plural`.
    pub(crate) fn lookup(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceInfo>> {
        self.read()
            .get(&(group.to_owned(), plural.to_owned()))
            .filter(|info| info.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// Whether `group/version` is served at all.
    pub(crate) fn serves(&self, group: &str, version: &str) -> bool {
        self.read()
            .values()
            .any(|info| info.group == group && info.versions.iter().any(|v| v == version))
    }

    /// Registers, replaces or (with `None`) removes the resource a CRD defines.
    /// Returns the previous registration's key when one is dropped.
    pub(crate) fn sync_crd(&self, name: &str, crd: Option<&Value>) -> Option<ResourceKey> {
        let mut resources = self
            .resources
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let existing = resources
            .iter()
            .find(|(_, info)| {
                info.builtin == Builtin::Custom && format!("{}.{}", info.plural, info.group) == name
            })
            .map(|(key, _)| key.clone());
        let removed = existing
            .and_then(|key| resources.remove(&key))
            .map(|info| info.key());
        if let Some(info) = crd.and_then(resource_from_crd) {
            let key = info.key();
            resources.insert((info.group.clone(), info.plural.clone()), Arc::new(info));
            if removed.as_ref() == Some(&key) {
                return None;
            }
        }
        removed
    }

    /// `/api`.
    pub(crate) fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
        })
    }

    /// `/apis`.
    pub(crate) fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(group, versions)| group_json(&group, &versions))
            .collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    /// `/apis/<group>`.
    pub(crate) fn group(&self, group: &str) -> Option<Value> {
        self.groups()
            .into_iter()
            .find(|(name, _)| name == group)
            .map(|(name, versions)| {
                let mut doc = group_json(&name, &versions);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                doc
            })
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    pub(crate) fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.serves(group, version) {
            return None;
        }
        let resources: Vec<Value> = self
            .read()
            .values()
            .filter(|info| info.group == group && info.versions.iter().any(|v| v == version))
            .flat_map(|info| info.discovery_entries(version))
            .collect();
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }

    /// `/openapi/v3`: one document per served group version.
    pub(crate) fn openapi_root(&self) -> Value {
        let mut paths = serde_json::Map::new();
        let mut add = |path: String| {
            let url = format!("/openapi/v3/{path}");
            paths.insert(path, json!({ "serverRelativeURL": url }));
        };
        add("api/v1".to_owned());
        for (group, versions) in self.groups() {
            for version in versions {
                add(format!("apis/{group}/{version}"));
            }
        }
        json!({ "paths": paths })
    }

    /// `/openapi/v3/apis/<group>/<version>`: no schemas, only each resource's
    /// PATCH operation declaring the `fieldValidation` parameter, which is
    /// what kubectl looks for before trusting the server to validate.
    pub(crate) fn openapi(&self, group: &str, version: &str) -> Option<Value> {
        if !self.serves(group, version) {
            return None;
        }
        let mut paths = serde_json::Map::new();
        for info in self
            .read()
            .values()
            .filter(|info| info.group == group && info.versions.iter().any(|v| v == version))
        {
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let path = if info.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", info.plural)
            } else {
                format!("{prefix}/{}/{{name}}", info.plural)
            };
            paths.insert(
                path,
                json!({
                    "patch": {
                        "x-kubernetes-group-version-kind": { "group": group, "version": version, "kind": info.kind },
                        "parameters": [{ "name": "fieldValidation", "in": "query", "schema": { "type": "string" } }],
                        "responses": {},
                    },
                }),
            );
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": { "title": "Kubernetes", "version": "v1.34.0" },
            "paths": paths,
        }))
    }

    /// Named groups with their served versions, most preferred first.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for info in self.read().values().filter(|info| !info.group.is_empty()) {
            let versions = groups.entry(info.group.clone()).or_default();
            for version in &info.versions {
                if !versions.contains(version) {
                    versions.push(version.clone());
                }
            }
        }
        for versions in groups.values_mut() {
            versions.sort_by_key(|version| std::cmp::Reverse(version_priority(version)));
        }
        groups.into_iter().collect()
    }
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|version| json!({ "groupVersion": format!("{group}/{version}"), "version": version }))
        .collect();
    let preferred = entries.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": entries, "preferredVersion": preferred })
}

/// Kubernetes version ordering: GA over beta over alpha, then by numbers;
/// names that are not Kubernetes versions come last.
fn version_priority(version: &str) -> (u8, u64, u64) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let (stability, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        return (0, 0, 0);
    };
    (stability, major, minor)
}

fn namespaces() -> ResourceInfo {
    ResourceInfo {
        group: String::new(),
        versions: vec!["v1".into()],
        plural: "namespaces".into(),
        singular: "namespace".into(),
        kind: "Namespace".into(),
        list_kind: "NamespaceList".into(),
        namespaced: false,
        status_versions: vec!["v1".into()],
        short_names: vec!["ns".into()],
        categories: Vec::new(),
        builtin: Builtin::Namespace,
        schemas: BTreeMap::new(),
    }
}

fn crds() -> ResourceInfo {
    ResourceInfo {
        group: CRD_GROUP.into(),
        versions: vec!["v1".into()],
        plural: "customresourcedefinitions".into(),
        singular: "customresourcedefinition".into(),
        kind: "CustomResourceDefinition".into(),
        list_kind: "CustomResourceDefinitionList".into(),
        namespaced: false,
        status_versions: vec!["v1".into()],
        short_names: vec!["crd".into(), "crds".into()],
        categories: vec!["api-extensions".into()],
        builtin: Builtin::CustomResourceDefinition,
        schemas: BTreeMap::new(),
    }
}

/// The resource a (validated) CRD defines; `None` if it defines nothing served.
pub(crate) fn resource_from_crd(crd: &Value) -> Option<ResourceInfo> {
    let spec = crd.get("spec")?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let names = spec.get("names")?;
    let kind = text(names.get("kind"))?;
    let strings = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut versions = Vec::new();
    let mut status_versions = Vec::new();
    let mut schemas = BTreeMap::new();
    for version in spec.get("versions").and_then(Value::as_array)? {
        let Some(name) = text(version.get("name")) else {
            continue;
        };
        if version.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if version
            .pointer("/subresources/status")
            .is_some_and(|status| !status.is_null())
        {
            status_versions.push(name.clone());
        }
        if let Some(schema) = version
            .pointer("/schema/openAPIV3Schema")
            .filter(|schema| schema.is_object())
        {
            schemas.insert(name.clone(), schema.clone());
        }
        versions.push(name);
    }
    if versions.is_empty() {
        return None;
    }
    versions.sort_by_key(|version| std::cmp::Reverse(version_priority(version)));
    Some(ResourceInfo {
        group: text(spec.get("group"))?,
        versions,
        plural: text(names.get("plural"))?,
        singular: text(names.get("singular")).unwrap_or_else(|| kind.to_lowercase()),
        list_kind: text(names.get("listKind")).unwrap_or_else(|| format!("{kind}List")),
        kind,
        namespaced: spec.get("scope").and_then(Value::as_str) == Some("Namespaced"),
        status_versions,
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        builtin: Builtin::Custom,
        schemas,
    })
}

/// Why a CRD is invalid, as (field, message), if it is.
pub(crate) fn crd_problem(crd: &Value) -> Option<(&'static str, String)> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let spec = crd.get("spec");
    let text = |pointer: &str| {
        spec.and_then(|s| s.pointer(pointer))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (group, plural, kind) = (text("/group"), text("/names/plural"), text("/names/kind"));
    if group.is_empty() {
        return Some(("spec.group", "Required value".into()));
    }
    if plural.is_empty() {
        return Some(("spec.names.plural", "Required value".into()));
    }
    if kind.is_empty() {
        return Some(("spec.names.kind", "Required value".into()));
    }
    if name != format!("{plural}.{group}") {
        return Some((
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = text("/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        return Some((
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let versions = spec
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        return Some((
            "spec.versions",
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        return Some((
            "spec.versions",
            format!(
                "Invalid value: {storage}: must have exactly one version marked as storage version"
            ),
        ));
    }
    None
}

/// The status kube-apiserver's controllers give an accepted CRD.
pub(crate) fn crd_status(crd: &Value, now: &str) -> Value {
    let spec = crd.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut accepted = spec.get("names").cloned().unwrap_or_else(|| json!({}));
    if let Some(names) = accepted.as_object_mut() {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        names
            .entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        names
            .entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    let stored: Vec<Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .map(|versions| {
            versions
                .iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let condition = |kind: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": "True",
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        })
    };
    json!({
        "acceptedNames": accepted,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut versions = vec!["v1alpha1", "v2beta1", "v1", "foo", "v2", "v1beta2"];
        versions.sort_by_key(|version| std::cmp::Reverse(version_priority(version)));
        assert_eq!(
            versions,
            ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn a_crd_registers_its_resource_and_status_subresource() {
        let registry = Registry::new();
        let crd = json!({
            "metadata": { "name": "foos.example.com" },
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": { "plural": "foos", "kind": "Foo" },
                "versions": [{ "name": "v1", "served": true, "storage": true, "subresources": { "status": {} } }],
            },
        });
        assert!(crd_problem(&crd).is_none());
        registry.sync_crd("foos.example.com", Some(&crd));
        let info = registry
            .lookup("example.com", "v1", "foos")
            .expect("registered");
        assert!(info.namespaced && info.has_status("v1"));
        assert_eq!(info.list_kind, "FooList");
        let list = registry.resource_list("example.com", "v1").expect("served");
        assert_eq!(list["resources"].as_array().map(Vec::len), Some(2));
        registry.sync_crd("foos.example.com", None);
        assert!(registry.lookup("example.com", "v1", "foos").is_none());
    }
}
