//! What each verb does to a resource: validation, server-owned metadata,
//! preconditions, status subresource rules, finalizers and managedFields,
//! answered like kube-apiserver answers custom resources. Storage and
//! revisions are `etcd.rs`'s; HTTP is `router.rs`'s. One file per kind of
//! verb: reads (`get`, `list`, `watch`), `create`, updates (`replace`,
//! `patch`, server-side apply) and deletes; what they share is here.

mod create;
mod delete;
mod read;
mod update;

use std::time::Duration;

use serde_json::{Value, json};

use crate::api_status::ApiError;
use crate::etcd::{ObjectKey, ResourceKey, WatchStart, Write, Written};
use crate::managed_fields::{Writer, record_update};
use crate::metadata::{
    SERVER_OWNED, conform_object_meta, finalizers, generate_name, label_problem, meta_str,
    metadata_mut, new_uid, now_rfc3339, subdomain_problem,
};
use crate::patch::{CUSTOM_RESOURCE_PATCH_TYPES, PatchKind, apply_json_patch, apply_merge_patch};
use crate::query::Query;
use crate::registry::{Builtin, ResourceInfo, crd_problem, crd_status};
use crate::schema;
use crate::server_side_apply::server_side_apply;
use crate::state::App;
use crate::target::{Selectors, Target};
use crate::watch::WatchSpec;

pub(crate) use create::create;
pub(crate) use delete::{delete, delete_collection};
pub(crate) use read::{get, list, watch};
pub(crate) use update::{patch, replace};

/// kube-apiserver's default watch length when the client sets none (it
/// picks 30 to 60 minutes at random).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Field managers longer than this are refused.
const MAX_FIELD_MANAGER_LENGTH: usize = 128;

/// A handler's answer.
pub(crate) enum Reply {
    Json { status: u16, body: Value },
    Watch(Box<WatchSpec>),
}

fn ok(body: Value) -> Reply {
    Reply::Json { status: 200, body }
}

/// The object as served at the request's version (no conversion: the fake
/// stores one schema and only relabels `apiVersion`).
fn view(object: &Value, target: &Target) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".to_owned(), json!(target.api_version()));
    }
    object
}

/// How a client asked to read objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Whole objects.
    Whole,
    /// Their metadata alone (`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`,
    /// or `as=PartialObjectMetadata`), as kube-apiserver serves it: each
    /// object's whole `metadata` in a `PartialObjectMetadata`. Only the
    /// metadata is copied, as the real server copies nothing else.
    Metadata,
}

/// An object as `shape` serves it.
fn shaped(object: &Value, target: &Target, shape: Shape) -> Value {
    match shape {
        Shape::Whole => view(object, target),
        Shape::Metadata => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// Who is writing: `fieldManager`, else the client's user-agent product.
fn manager_name(query: &Query, user_agent: Option<&str>, apply: bool) -> Result<String, ApiError> {
    if let Some(manager) = &query.field_manager {
        if manager.len() > MAX_FIELD_MANAGER_LENGTH {
            return Err(ApiError::bad_request(format!(
                "fieldManager: Too long: must have at most {MAX_FIELD_MANAGER_LENGTH} bytes"
            )));
        }
        return Ok(manager.clone());
    }
    if apply {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch",
        ));
    }
    // kube-apiserver's prefixFromUserAgent: the product before the first '/';
    // requests without a user agent (kube-rs sends none) are "unknown".
    let product: String = user_agent
        .and_then(|agent| agent.split('/').next())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD_MANAGER_LENGTH)
        .collect();
    Ok(if product.is_empty() {
        "unknown".to_owned()
    } else {
        product
    })
}

/// Parses a JSON object body (`application/json`, or JSON sent as YAML).
fn object_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the fake API server could not decode the body as JSON: {e}"
        ))
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "json: cannot unmarshal non-object into Go value of type map[string]interface {}",
        ))
    }
}

/// Checks kind and apiVersion against the URL, and fixes the namespace.
///
/// A built-in type's body may leave both out: kube-apiserver decodes it into
/// its Go type and takes them from the URL. A custom resource's body is
/// decoded as unstructured JSON, which needs its kind.
fn check_identity(target: &Target, object: &mut Value) -> Result<(), ApiError> {
    if target.info.builtin != Builtin::Custom
        && let Some(fields) = object.as_object_mut()
    {
        for (field, value) in [
            ("kind", target.info.kind.clone()),
            ("apiVersion", target.api_version()),
        ] {
            if fields
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                fields.insert(field.to_owned(), Value::String(value));
            }
        }
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body",
        ));
    }
    if kind != target.info.kind {
        return Err(ApiError::invalid(
            kind,
            &target.info.group,
            meta_str(object, "name"),
            "kind",
            "FieldValueInvalid",
            &format!("Invalid value: \"{kind}\": must be {}", target.info.kind),
        ));
    }
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if api_version != target.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            target.api_version()
        )));
    }
    let body_namespace = meta_str(object, "namespace").to_owned();
    let metadata =
        metadata_mut(object).ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    match &target.namespace {
        Some(namespace) if target.info.namespaced => {
            if body_namespace.is_empty() {
                metadata.insert("namespace".to_owned(), json!(namespace));
            } else if &body_namespace != namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        _ => {
            metadata.remove("namespace");
        }
    }
    Ok(())
}

fn check_name_matches(object: &Value, url_name: &str) -> Result<(), ApiError> {
    let body_name = meta_str(object, "name");
    if body_name != url_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
        )));
    }
    Ok(())
}

fn invalid(target: &Target, name: &str, field: &str, reason: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        &target.info.kind,
        &target.info.group,
        name,
        field,
        reason,
        detail,
    )
}

/// Server-owned fields of a new object, and the per-kind defaults.
fn prepare_new(
    app: &App,
    target: &Target,
    object: &mut Value,
    now: &str,
) -> Result<String, ApiError> {
    let mut name = meta_str(object, "name").to_owned();
    if name.is_empty() {
        let prefix = meta_str(object, "generateName").to_owned();
        if prefix.is_empty() {
            return Err(invalid(
                target,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            ));
        }
        name = generate_name(&prefix);
    }
    let problem = if target.info.builtin == Builtin::Namespace {
        label_problem(&name)
    } else {
        subdomain_problem(&name)
    };
    if let Some(problem) = problem {
        return Err(invalid(
            target,
            &name,
            "metadata.name",
            "FieldValueInvalid",
            &format!("Invalid value: \"{name}\": {problem}"),
        ));
    }
    if target.info.namespaced {
        let namespace = target.namespace.clone().unwrap_or_default();
        let namespace_key = ObjectKey {
            resource: namespaces_key(),
            namespace: String::new(),
            name: namespace.clone(),
        };
        if app.etcd.get(&namespace_key).is_none() {
            return Err(ApiError::namespace_not_found(&namespace));
        }
    }
    let info = &target.info;
    let metadata =
        metadata_mut(object).ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    for field in SERVER_OWNED {
        metadata.remove(*field);
    }
    metadata.insert("name".to_owned(), json!(name));
    metadata.insert("uid".to_owned(), json!(new_uid()));
    metadata.insert("creationTimestamp".to_owned(), json!(now));
    if info.tracks_generation() {
        metadata.insert("generation".to_owned(), json!(1));
    }
    if let Some(map) = object.as_object_mut() {
        if info.has_status(&target.version) && info.builtin == Builtin::Custom {
            map.remove("status");
        }
        if info.builtin == Builtin::Namespace {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.entry("finalizers")
                    .or_insert_with(|| json!(["kubernetes"]));
            }
            map.insert("status".to_owned(), json!({ "phase": "Active" }));
        }
    }
    if info.builtin == Builtin::CustomResourceDefinition
        && let Some((field, message)) = crd_problem(object)
    {
        return Err(invalid(target, &name, field, "FieldValueInvalid", &message));
    }
    Ok(name)
}

/// Status that the server (not the writer) owns, filled after managedFields.
fn fill_server_status(target: &Target, object: &mut Value) {
    if target.info.builtin == Builtin::CustomResourceDefinition {
        // Timestamps from the object's creation keep rewrites of an unchanged CRD no-ops.
        let created = meta_str(object, "creationTimestamp").to_owned();
        let status = crd_status(object, &created);
        if let Some(map) = object.as_object_mut() {
            map.insert("status".to_owned(), status);
        }
    }
}

/// `ObjectMeta`'s fields: kube-apiserver decodes metadata into that type,
/// dropping anything else.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Brings an object to what kube-apiserver would store: unknown metadata
/// dropped, then the CRD's schema applied (prune, default, validate; see
/// `schema.rs`).
fn conform(target: &Target, object: &mut Value) -> Result<(), ApiError> {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.retain(|field, _| OBJECT_META_FIELDS.contains(&field.as_str()));
        if let Err((field, detail)) = conform_object_meta(metadata) {
            let found = metadata
                .get(field)
                .map(Value::to_string)
                .unwrap_or_default();
            return Err(invalid(
                target,
                meta_str(object, "name"),
                &format!("metadata.{field}"),
                "FieldValueInvalid",
                &format!("Invalid value: {found}: {detail}"),
            ));
        }
    }
    let Some(schema) = target.info.schemas.get(&target.version) else {
        return Ok(());
    };
    schema::normalize(schema, object, true);
    let violations = schema::validate(schema, object);
    if violations.is_empty() {
        return Ok(());
    }
    let causes: Vec<(String, &'static str, String)> = violations
        .into_iter()
        .map(|v| (v.field, v.reason, v.detail))
        .collect();
    Err(ApiError::invalid_fields(
        &target.info.kind,
        &target.info.group,
        meta_str(object, "name"),
        &causes,
    ))
}

pub(crate) fn namespaces_key() -> ResourceKey {
    ResourceKey {
        group: String::new(),
        resource: "namespaces".to_owned(),
    }
}

/// Options every write shares.
pub(crate) struct WriteContext<'a> {
    pub(crate) query: &'a Query,
    pub(crate) user_agent: Option<&'a str>,
}

/// How managedFields are updated for a write to an existing object.
enum Ownership<'a> {
    /// A non-apply write by this writer.
    Update(Writer<'a>),
    /// Server-side apply already computed them.
    Applied,
}

/// Turns a client's intended object into what is stored: server-owned
/// metadata from `old`, status subresource rules, generation, finalizers.
fn finish_update(
    target: &Target,
    old: &Value,
    mut new: Value,
    ownership: Ownership<'_>,
) -> Result<Write, ApiError> {
    let info = &target.info;
    if target.is_status() {
        // The status endpoint changes status and nothing else.
        let status = new.get("status").cloned();
        let managed = new.pointer("/metadata/managedFields").cloned();
        new = old.clone();
        if let Some(map) = new.as_object_mut() {
            match status {
                Some(status) => map.insert("status".to_owned(), status),
                None => map.remove("status"),
            };
        }
        if let (Some(managed), Some(metadata)) = (managed, metadata_mut(&mut new)) {
            metadata.insert("managedFields".to_owned(), managed);
        }
    } else if info.has_status(&target.version)
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => map.insert("status".to_owned(), status.clone()),
            None => map.remove("status"),
        };
    }
    {
        let old_meta = old.get("metadata").and_then(Value::as_object);
        let metadata = metadata_mut(&mut new)
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for field in [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
            "selfLink",
        ] {
            match old_meta.and_then(|m| m.get(field)) {
                Some(value) => metadata.insert(field.to_owned(), value.clone()),
                None => metadata.remove(field),
            };
        }
        if !matches!(ownership, Ownership::Applied) {
            match old_meta.and_then(|m| m.get("managedFields")) {
                Some(value) => metadata.insert("managedFields".to_owned(), value.clone()),
                None => metadata.remove("managedFields"),
            };
        }
    }
    conform(target, &mut new)?;
    if info.tracks_generation()
        && spec_of(old, info, &target.version) != spec_of(&new, info, &target.version)
    {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some(metadata) = metadata_mut(&mut new) {
            metadata.insert("generation".to_owned(), json!(generation + 1));
        }
    }
    if let Ownership::Update(writer) = &ownership {
        record_update(Some(old), &mut new, writer);
    }
    fill_server_status(target, &mut new);
    if info.builtin == Builtin::CustomResourceDefinition
        && let Some((field, message)) = crd_problem(&new)
    {
        return Err(invalid(
            target,
            meta_str(old, "name"),
            field,
            "FieldValueInvalid",
            &message,
        ));
    }
    let terminating = !meta_str(old, "deletionTimestamp").is_empty();
    if terminating {
        let before = finalizers(old);
        let after = finalizers(&new);
        if let Some(added) = after.iter().find(|f| !before.contains(f)) {
            return Err(invalid(
                target,
                meta_str(old, "name"),
                "metadata.finalizers",
                "FieldValueForbidden",
                &format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{added}\"}}"
                ),
            ));
        }
        if after.is_empty() {
            return Ok(Write::Delete);
        }
    }
    Ok(Write::Put(new))
}

/// The part of an object that counts for `metadata.generation`.
fn spec_of(object: &Value, info: &ResourceInfo, version: &str) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if info.has_status(version) {
            map.remove("status");
        }
    }
    copy
}

/// Rejects a write whose object names a different uid or resourceVersion.
fn check_preconditions(target: &Target, current: &Value, intended: &Value) -> Result<(), ApiError> {
    let name = meta_str(current, "name");
    let uid = meta_str(intended, "uid");
    if !uid.is_empty() && uid != meta_str(current, "uid") {
        return Err(ApiError::precondition_failed(
            &target.subject(name),
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(current, "uid")
            ),
        ));
    }
    let version = meta_str(intended, "resourceVersion");
    if !version.is_empty() && version != meta_str(current, "resourceVersion") {
        return Err(ApiError::stale(&target.subject(name)));
    }
    Ok(())
}

/// Side effects of a committed write on other resources: CRDs register or
/// drop their resource; a deleted namespace takes its objects with it.
fn after_write(app: &App, target: &Target, name: &str, written: &Written, dry_run: bool) {
    if dry_run {
        return;
    }
    match target.info.builtin {
        Builtin::CustomResourceDefinition => {
            let crd = (!written.deleted).then_some(&*written.object);
            if let Some(dropped) = app.registry.sync_crd(name, crd) {
                app.etcd.delete_where(|key| key.resource == dropped);
            }
        }
        Builtin::Namespace if written.deleted => {
            let namespace = name.to_owned();
            app.etcd.delete_where(|key| key.namespace == namespace);
        }
        _ => {}
    }
}

/// Creates or updates a CRD directly (no HTTP, no faults, not logged).
pub(crate) fn apply_crd(app: &App, crd: &Value) -> Result<(), ApiError> {
    let info = app
        .registry
        .lookup(
            super::registry::CRD_GROUP,
            "v1",
            "customresourcedefinitions",
        )
        .ok_or_else(|| ApiError::internal("the CRD resource is always registered"))?;
    let target = Target {
        info,
        version: "v1".to_owned(),
        namespace: None,
        name: None,
        subresource: None,
    };
    let name = meta_str(crd, "name").to_owned();
    let mut config = crd.clone();
    if let Some(map) = config.as_object_mut() {
        map.insert("apiVersion".to_owned(), json!("apiextensions.k8s.io/v1"));
        map.insert("kind".to_owned(), json!("CustomResourceDefinition"));
        map.remove("status");
    }
    let query = Query {
        field_manager: Some("store-kube-testing".to_owned()),
        force: true,
        ..Query::default()
    };
    let body = serde_json::to_vec(&config).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ctx = WriteContext {
        query: &query,
        user_agent: None,
    };
    update::apply_patch(app, &target, &name, &body, &ctx).map(|_| ())
}
