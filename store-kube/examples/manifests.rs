//! Renders the deploy manifests: the CRD and least-privilege RBAC.
//!
//! `cargo xtask manifests` runs this to write `deploy/`; `--check` compares.
//! Usage: `cargo run -p store-kube --example manifests -- <dir>`.

use std::path::PathBuf;

use serde_json::{Value, json};

/// The verbs the backend uses, and nothing more: `get` (read, ensure), `list`
/// and `watch` (the view), `create` (a missing object), `patch` (writes).
const VERBS: [&str; 5] = ["get", "list", "watch", "create", "patch"];

fn rbac(name: &str, namespace: &str, group: &str, resource: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": { "name": name, "namespace": namespace }
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": { "name": name, "namespace": namespace },
                "rules": [{ "apiGroups": [group], "resources": [resource], "verbs": VERBS }]
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": { "name": name, "namespace": namespace },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": namespace }]
            }
        ]
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: manifests <dir>")?);
    std::fs::create_dir_all(&dir)?;
    let files = [
        (
            "storeshards.crd.json",
            serde_json::to_value(store_kube::resource::store_shard_crd())?,
        ),
        (
            "peprstores.crd.json",
            serde_json::to_value(store_kube::resource::pepr_store_crd())?,
        ),
        (
            "rbac.json",
            rbac(
                "typed-store",
                "default",
                store_kube::resource::GROUP,
                "storeshards",
            ),
        ),
        (
            "rbac-pepr.json",
            rbac("typed-store-pepr", "pepr-system", "pepr.dev", "peprstores"),
        ),
    ];
    for (name, value) in files {
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
