//! The webhook configurations that tell kube-apiserver to call a replica:
//! the same objects for the Deployment (through its Service) and for the
//! demonstration and tests (by URL on loopback).

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};

use super::*;

/// What kube-apiserver does when a webhook cannot answer (unreachable, timed
/// out, or `503` while the replica's store is not ready).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailurePolicy {
    /// Reject the Pod: nothing is admitted unchecked (the default).
    Fail,
    /// Admit the Pod unchecked and unannotated.
    Ignore,
}

impl FailurePolicy {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "Fail" => Ok(Self::Fail),
            "Ignore" => Ok(Self::Ignore),
            other => Err(format!(
                "--failure-policy takes Fail or Ignore, not {other:?}"
            )),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

/// Where kube-apiserver reaches the webhook server.
pub(crate) enum Target<'a> {
    /// The operator's Service in its namespace, on port 443.
    Service,
    /// A base URL, as `https://127.0.0.1:8443`.
    Url(&'a str),
}

/// One pair of webhook configurations.
pub(crate) struct WebhookSpec<'a> {
    /// The configurations' name, and the first label of the webhooks' names.
    pub(crate) name: &'a str,
    pub(crate) target: Target<'a>,
    /// The CA that signed the serving certificate, PEM; `None` leaves
    /// `caBundle` out for an injector (cert-manager's) to fill.
    pub(crate) ca_pem: Option<&'a str>,
    /// Which namespaces' Pods are sent.
    pub(crate) namespace_selector: Value,
    pub(crate) failure_policy: FailurePolicy,
}

impl WebhookSpec<'_> {
    fn client_config(&self, endpoint: Endpoint) -> Value {
        let mut config = match self.target {
            Target::Service => json!({
                "service": {
                    "namespace": NAME,
                    "name": NAME,
                    "path": endpoint.path(),
                    "port": 443,
                },
            }),
            Target::Url(base) => json!({ "url": format!("{base}{}", endpoint.path()) }),
        };
        if let Some(ca) = self.ca_pem {
            config["caBundle"] =
                serde_json::to_value(ByteString(ca.as_bytes().to_vec())).unwrap_or_default();
        }
        config
    }

    fn webhook(&self, endpoint: Endpoint, operations: &[&str]) -> Value {
        let kind = match endpoint {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        };
        json!({
            "name": format!("{}.{kind}.typedstore.dev", self.name),
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": self.client_config(endpoint),
            "rules": [{
                "operations": operations,
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "failurePolicy": self.failure_policy.as_str(),
            "matchPolicy": "Equivalent",
            "namespaceSelector": self.namespace_selector,
            "timeoutSeconds": 5,
        })
    }

    /// The `ValidatingWebhookConfiguration`: Pod creates and updates.
    pub(crate) fn validating(&self) -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": { "name": self.name },
            "webhooks": [self.webhook(Endpoint::Validate, &["CREATE", "UPDATE"])],
        })
    }

    /// The `MutatingWebhookConfiguration`: Pod creates.
    pub(crate) fn mutating(&self) -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": self.name },
            "webhooks": [self.webhook(Endpoint::Mutate, &["CREATE"])],
        })
    }

    /// Creates or replaces both configurations (server-side apply).
    pub(crate) async fn register(&self, client: kube::Client) -> Result<()> {
        let params = PatchParams::apply(NAME).force();
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        validating
            .patch(self.name, &params, &Patch::Apply(&self.validating()))
            .await
            .map_err(kube_error)?;
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client);
        mutating
            .patch(self.name, &params, &Patch::Apply(&self.mutating()))
            .await
            .map_err(kube_error)?;
        Ok(())
    }

    /// Deletes both configurations.
    pub(crate) async fn unregister(&self, client: kube::Client) -> Result<()> {
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        validating
            .delete(self.name, &DeleteParams::default())
            .await
            .map_err(kube_error)?;
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client);
        mutating
            .delete(self.name, &DeleteParams::default())
            .await
            .map_err(kube_error)?;
        Ok(())
    }
}

/// Namespaces whose [`WEBHOOK_LABEL`] names `replica`.
pub(crate) fn routed_to(replica: &str) -> Value {
    json!({ "matchLabels": { WEBHOOK_LABEL: replica } })
}

/// Every namespace but the operator's own and the system's, so the operator's
/// pods can start while no replica is ready.
pub(crate) fn all_but_the_operator() -> Value {
    json!({
        "matchExpressions": [{
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": [NAME, "kube-system"],
        }],
    })
}
