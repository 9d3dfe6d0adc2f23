//! Manifests: what `deploy/operator` holds.

use super::*;

/// The Secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`) the
/// replicas serve the webhooks with.
const TLS_SECRET: &str = "typed-store-operator-tls";

/// Every object `deploy/operator` installs, by file name; files apply in name
/// order. `ca_pem` fills the webhook configurations' `caBundle`; without it
/// they ask cert-manager's CA injector to fill it from the Certificate of the
/// same name.
pub(crate) fn manifests(
    ca_pem: Option<&str>,
    failure_policy: FailurePolicy,
) -> Vec<(&'static str, Value)> {
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
                        "args": ["--kube", "--tls-dir", "/tls"],
                        "env": [{ "name": "RUST_LOG", "value": "info" }],
                        "ports": [{ "name": "webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP" }],
                        // Ready once the store is: kube-apiserver's calls go to ready replicas only.
                        "readinessProbe": {
                            "httpGet": { "path": "/readyz", "port": "webhook", "scheme": "HTTPS" },
                            "periodSeconds": 2,
                        },
                        "livenessProbe": {
                            "httpGet": { "path": "/healthz", "port": "webhook", "scheme": "HTTPS" },
                            "periodSeconds": 10,
                        },
                        "volumeMounts": [{ "name": "tls", "mountPath": "/tls", "readOnly": true }],
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
                    "volumes": [{ "name": "tls", "secret": { "secretName": TLS_SECRET } }],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": NAME, "namespace": NAME, "labels": labels },
        "spec": {
            "selector": labels,
            "ports": [{ "name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP" }],
        },
    });
    let spec = WebhookSpec {
        name: NAME,
        target: Target::Service,
        ca_pem,
        namespace_selector: all_but_the_operator(),
        failure_policy,
    };
    let mut webhooks = [spec.mutating(), spec.validating()];
    if ca_pem.is_none() {
        for webhook in &mut webhooks {
            webhook["metadata"]["annotations"] =
                json!({ "cert-manager.io/inject-ca-from": format!("{NAME}/{NAME}") });
        }
    }
    let [mutating, validating] = webhooks;
    vec![
        ("00-namespace.json", namespace),
        ("10-rbac.json", rbac),
        ("20-deployment.json", deployment),
        ("30-service.json", service),
        (
            "40-webhooks.json",
            json!({ "apiVersion": "v1", "kind": "List", "items": [mutating, validating] }),
        ),
    ]
}

pub(crate) fn write_manifests(
    dir: &Path,
    ca_pem: Option<&str>,
    failure_policy: FailurePolicy,
) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    for (name, value) in manifests(ca_pem, failure_policy) {
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
