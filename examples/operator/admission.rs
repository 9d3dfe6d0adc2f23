//! The admission handler.

use super::*;

/// A decision and why.
pub(crate) enum Decision {
    Admit(String),
    Deny(String),
}

pub(crate) fn decide(store: &Store, request: &AdmissionRequest<Pod>) -> Result<Decision> {
    let namespace = request.namespace.as_deref().unwrap_or_default();
    if store
        .get(ExemptNamespaces::key())?
        .is_some_and(|exempt| exempt.namespaces.contains_key(namespace))
    {
        return Ok(Decision::Admit("exempt".to_owned()));
    }
    let policy = store.get(Policy::key())?.unwrap_or_default();
    let Some(spec) = request.object.as_ref().and_then(|pod| pod.spec.as_ref()) else {
        return Ok(Decision::Admit("no pod spec".to_owned()));
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for container in containers {
        let image = container.image.as_deref().unwrap_or_default();
        if let Some(tag) = policy.denied_tag(image) {
            return Ok(Decision::Deny(format!(
                "container {}: image {image} has the denied tag {tag}",
                container.name
            )));
        }
    }
    Ok(Decision::Admit("no denied tag".to_owned()))
}

/// Answers one admission review for a Pod from the store's local view. A
/// store that cannot be read denies (fail closed), saying why.
pub(crate) fn review(
    store: &Store,
    incoming: AdmissionReview<Pod>,
) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<Pod> = match incoming.try_into() {
        Ok(request) => request,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let mut response = AdmissionResponse::from(&request);
    match decide(store, &request) {
        Ok(Decision::Admit(reason)) => {
            response
                .audit_annotations
                .insert(REASON_ANNOTATION.to_owned(), reason);
        }
        Ok(Decision::Deny(reason)) => response = response.deny(reason),
        Err(e) => response = response.deny(format!("the exemptions could not be read: {e}")),
    }
    response.into_review()
}

/// The body kube-apiserver sends a validating webhook when a one-container
/// Pod is created.
pub(crate) fn pod_review(uid: &str, pod: &str, namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "name": pod,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": { "username": "demo" },
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": pod, "namespace": namespace },
                "spec": { "containers": [{ "name": pod, "image": image }] },
            },
            "dryRun": false,
        },
    })
}

#[cfg(test)]
/// Runs a review body through the handler and returns whether it admitted
/// the Pod and why (the audit annotation, or the denial's message).
pub(crate) fn ask(store: &Store, body: Value) -> Result<(bool, String)> {
    let request = serde_json::from_value(body).map_err(|e| Error::backend("admission", e))?;
    let answer = review(store, request)
        .response
        .ok_or_else(|| Error::backend("admission", "the review has no response"))?;
    let reason = if answer.allowed {
        answer
            .audit_annotations
            .get(REASON_ANNOTATION)
            .cloned()
            .unwrap_or_default()
    } else {
        answer.result.message
    };
    Ok((answer.allowed, reason))
}

/// What the mutating webhook stamps on a Pod: which replica's view admitted
/// it, and the version of the policy value that view held
/// (`policy-default` before any replica seeded it).
pub(crate) fn admitted_by(store: &Store, replica: &str) -> Result<String> {
    let version = match store.get_versioned(Policy::key())? {
        Some(policy) => format!("policy-v{}", policy.version),
        None => "policy-default".to_owned(),
    };
    Ok(format!("{replica}@{version}"))
}

/// Answers one mutating review for a Pod: a JSON Patch adding the
/// [`ADMITTED_BY_ANNOTATION`]. A store that cannot be read denies (fail
/// closed), saying why.
pub(crate) fn mutate(
    store: &Store,
    replica: &str,
    incoming: AdmissionReview<Pod>,
) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<Pod> = match incoming.try_into() {
        Ok(request) => request,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let response = AdmissionResponse::from(&request);
    let stamp = match admitted_by(store, replica) {
        Ok(stamp) => stamp,
        Err(e) => {
            return response
                .deny(format!("the policy could not be read: {e}"))
                .into_review();
        }
    };
    let has_annotations = request
        .object
        .as_ref()
        .is_some_and(|pod| pod.metadata.annotations.is_some());
    let operation = if has_annotations {
        json!({
            "op": "add",
            "path": annotation_path(),
            "value": stamp,
        })
    } else {
        json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": { ADMITTED_BY_ANNOTATION: stamp },
        })
    };
    let patch = match serde_json::from_value::<json_patch::Patch>(json!([operation])) {
        Ok(patch) => patch,
        Err(e) => {
            return response
                .deny(format!("building the patch: {e}"))
                .into_review();
        }
    };
    match response.clone().with_patch(patch) {
        Ok(patched) => patched.into_review(),
        Err(e) => response
            .deny(format!("encoding the patch: {e}"))
            .into_review(),
    }
}

/// The JSON Pointer to the [`ADMITTED_BY_ANNOTATION`] in a Pod.
pub(crate) fn annotation_path() -> String {
    let escaped = ADMITTED_BY_ANNOTATION.replace('~', "~0").replace('/', "~1");
    format!("/metadata/annotations/{escaped}")
}
