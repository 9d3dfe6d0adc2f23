//! Manifests: what `deploy/operator` holds.

use super::*;

/// Every object `deploy/operator` installs, by file name; files apply in name order.
pub(crate) fn manifests() -> Vec<(&'static str, Value)> {
    let labels = json!({ "app.kubernetes.io/name": NAME });
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": NAME },
    });
    let binding = |kind: &str, namespaced: bool| {
        let mut metadata = json!({ "name": NAME });
        if namespaced {
            metadata["namespace"] = json!(NAME);
        }
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": format!("{kind}Binding"),
            "metadata": metadata,
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": NAME },
            "subjects": [{ "kind": "ServiceAccount", "name": NAME, "namespace": NAME }],
        })
    };
    let rbac = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": { "name": NAME, "namespace": NAME },
            },
            {
                // The controller's watch and the sweep's LIST; nothing is written.
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": { "name": NAME },
                "rules": [{ "apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"] }],
            },
            binding("ClusterRole", false),
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": { "name": NAME, "namespace": NAME },
                "rules": [{
                    "apiGroups": [store_kube::resource::GROUP],
                    "resources": ["storeshards"],
                    "verbs": STORE_VERBS,
                }],
            },
            binding("Role", true),
        ],
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": NAME, "namespace": NAME, "labels": labels },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "operator",
                        "image": IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["--kube"],
                        "env": [{ "name": "RUST_LOG", "value": "info" }],
                        "resources": {
                            "requests": { "cpu": "10m", "memory": "32Mi" },
                            "limits": { "memory": "128Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                },
            },
        },
    });
    vec![
        ("00-namespace.json", namespace),
        ("10-rbac.json", rbac),
        ("20-deployment.json", deployment),
    ]
}

pub(crate) fn write_manifests(dir: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    for (name, value) in manifests() {
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
