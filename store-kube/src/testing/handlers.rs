//! What each verb does to a resource: validation, server-owned metadata,
//! preconditions, status subresource rules, finalizers and managedFields,
//! answered like kube-apiserver answers custom resources. Storage and
//! revisions are `store.rs`'s; HTTP is `router.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::api_status::{ApiError, Subject};
use super::apply::server_side_apply;
use super::managed_fields::{Writer, record_update};
use super::metadata::{
    SERVER_OWNED, conform_object_meta, finalizers, generate_name, label_problem, meta_str,
    metadata_mut, new_uid, now_rfc3339, subdomain_problem,
};
use super::patch::{CUSTOM_RESOURCE_PATCH_TYPES, PatchKind, apply_json_patch, apply_merge_patch};
use super::registry::{Builtin, ResourceInfo, crd_problem, crd_status};
use super::router::{App, Query};
use super::schema;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{ObjectKey, ResourceKey, WatchStart, Write, Written};
use super::watch::WatchSpec;

/// kube-apiserver's default watch length when the client sets none (it
/// picks 30 to 60 minutes at random).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Field managers longer than this are refused.
const MAX_FIELD_MANAGER_LENGTH: usize = 128;

/// The resource (and object) a request addresses.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) info: Arc<ResourceInfo>,
    pub(crate) version: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            resource: self.info.key(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }
    }

    fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject {
            group: &self.info.group,
            resource: &self.info.plural,
            name,
        }
    }

    fn api_version(&self) -> String {
        self.info.api_version(&self.version)
    }

    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }
}

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

pub(crate) fn get(app: &App, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let object = app
        .store
        .get(&target.key(name))
        .ok_or_else(|| ApiError::not_found(&target.subject(name)))?;
    Ok(ok(view(&object, target)))
}

/// Parsed `labelSelector` and `fieldSelector`.
pub(crate) struct Selectors {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    fn parse(query: &Query, info: &ResourceInfo) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            query.field_selector.as_deref().unwrap_or(""),
            info.selectable_fields(),
        )
        .map_err(ApiError::bad_request)?;
        Ok(Self { labels, fields })
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        self.labels.matches(labels) && self.fields.matches(object)
    }
}

/// kube-apiserver answers an unparseable resourceVersion with a bare 500.
fn parse_revision(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::internal_plain(format!(
            "resourceVersion: Invalid value: {text:?}: strconv.ParseUint: parsing {text:?}: invalid syntax"
        ))
    })
}

pub(crate) fn list(app: &App, target: &Target, query: &Query) -> Result<Reply, ApiError> {
    let selectors = Selectors::parse(query, &target.info)?;
    let resource_version = query.resource_version.as_deref().unwrap_or("");
    if query.resource_version_match.is_some() && resource_version.is_empty() {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            "resourceVersionMatch",
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    let mut limit = query.limit.filter(|limit| *limit > 0);
    let mut start_after: Option<(String, String)> = None;
    // Which revision the listing must reflect; `None` is "the latest".
    let at = if let Some(token) = &query.continue_token {
        if !resource_version.is_empty() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (revision, namespace, name) = parse_continue(token)?;
        start_after = Some((namespace, name));
        Some(revision)
    } else {
        match (resource_version, query.resource_version_match.as_deref()) {
            ("", _) => None,
            // "Any": served from the watch cache, which ignores `limit`.
            ("0", None | Some("NotOlderThan")) => {
                limit = None;
                None
            }
            (version, Some("Exact")) => Some(parse_revision(version)?),
            (version, None) if limit.is_some() => Some(parse_revision(version)?),
            (version, None | Some("NotOlderThan")) => {
                let wanted = parse_revision(version)?;
                let current = app.store.revision();
                if wanted > current {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {wanted}, current: {current}"
                    )));
                }
                None
            }
            (_, Some(other)) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\", \"\""
                )));
            }
        }
    };
    let (objects, revision) = app
        .store
        .list(&target.info.key(), target.namespace.as_deref(), at)
        .map_err(|too_old| {
            if query.continue_token.is_some() {
                ApiError::expired(format!(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter. (oldest available revision: {})",
                    too_old.compacted
                ))
            } else {
                ApiError::expired("The resourceVersion for the provided list is too old.")
            }
        })?;
    let mut selected: Vec<(ObjectKey, Value)> = objects
        .into_iter()
        .filter(|(key, _)| {
            start_after
                .as_ref()
                .is_none_or(|(ns, name)| (&key.namespace, &key.name) > (ns, name))
        })
        .filter(|(_, object)| selectors.matches(object))
        .map(|(key, object)| (key, view(&object, target)))
        .collect();
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if let Some(limit) = limit.and_then(|limit| usize::try_from(limit).ok())
        && selected.len() > limit
    {
        let remaining = selected.len() - limit;
        selected.truncate(limit);
        if let Some((last, _)) = selected.last() {
            metadata["continue"] = json!(format!("{revision}/{}/{}", last.namespace, last.name));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let items: Vec<Value> = selected.into_iter().map(|(_, object)| object).collect();
    Ok(ok(json!({
        "apiVersion": target.api_version(),
        "kind": target.info.list_kind,
        "metadata": metadata,
        "items": items,
    })))
}

fn parse_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid");
    let mut parts = token.splitn(3, '/');
    let revision = parts
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(invalid)?;
    let namespace = parts.next().ok_or_else(invalid)?.to_owned();
    let name = parts.next().ok_or_else(invalid)?.to_owned();
    Ok((revision, namespace, name))
}

pub(crate) fn watch(app: &App, target: &Target, query: &Query) -> Result<Reply, ApiError> {
    let mut selectors = Selectors::parse(query, &target.info)?;
    if let Some(name) = &target.name {
        // The legacy single-object watch path.
        selectors.fields =
            FieldSelector::parse(&format!("metadata.name={name}"), &["metadata.name"])
                .map_err(ApiError::bad_request)?;
    }
    let start = match query.resource_version.as_deref() {
        None | Some("") | Some("0") => WatchStart::Now,
        Some(version) => WatchStart::After(parse_revision(version)?),
    };
    let timeout = query
        .timeout_seconds
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    Ok(Reply::Watch(Box::new(WatchSpec {
        target: target.clone(),
        selectors,
        start,
        timeout,
        bookmarks: query.allow_watch_bookmarks,
        bookmark_interval: app.options.bookmark_interval,
    })))
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
fn check_identity(target: &Target, object: &mut Value) -> Result<(), ApiError> {
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
        if app.store.get(&namespace_key).is_none() {
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

pub(crate) fn create(
    app: &App,
    target: &Target,
    body: &[u8],
    ctx: &WriteContext<'_>,
) -> Result<Reply, ApiError> {
    let mut object = object_body(body)?;
    check_identity(target, &mut object)?;
    if !meta_str(&object, "resourceVersion").is_empty() {
        return Err(ApiError::internal_plain(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let now = now_rfc3339();
    let name = prepare_new(app, target, &mut object, &now)?;
    conform(target, &mut object)?;
    let manager = manager_name(ctx.query, ctx.user_agent, false)?;
    let api_version = target.api_version();
    let writer = Writer {
        manager: &manager,
        api_version: &api_version,
        subresource: None,
        now: &now,
    };
    record_update(None, &mut object, &writer);
    fill_server_status(target, &mut object);
    let written = app
        .store
        .write(&target.key(&name), ctx.query.dry_run, |current| {
            if current.is_some() {
                return Err(ApiError::already_exists(&target.subject(&name)));
            }
            Ok(Write::Put(object))
        })?;
    after_write(app, target, &name, &written, ctx.query.dry_run);
    Ok(Reply::Json {
        status: 201,
        body: view(&written.object, target),
    })
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

pub(crate) fn replace(
    app: &App,
    target: &Target,
    name: &str,
    body: &[u8],
    ctx: &WriteContext<'_>,
) -> Result<Reply, ApiError> {
    let mut object = object_body(body)?;
    check_identity(target, &mut object)?;
    check_name_matches(&object, name)?;
    let manager = manager_name(ctx.query, ctx.user_agent, false)?;
    let now = now_rfc3339();
    let api_version = target.api_version();
    let subresource = target.subresource.clone();
    let written = app
        .store
        .write(&target.key(name), ctx.query.dry_run, |current| {
            let Some(current) = current else {
                return Err(ApiError::not_found(&target.subject(name)));
            };
            if meta_str(&object, "resourceVersion").is_empty()
                && target.info.builtin != Builtin::Namespace
            {
                // kube-apiserver names the resource, not the kind, in this one.
                return Err(ApiError::invalid(
                    &target.info.plural,
                    &target.info.group,
                    name,
                    "metadata.resourceVersion",
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update",
                ));
            }
            check_preconditions(target, current, &object)?;
            let writer = Writer {
                manager: &manager,
                api_version: &api_version,
                subresource: subresource.as_deref(),
                now: &now,
            };
            finish_update(target, current, object, Ownership::Update(writer))
        })?;
    after_write(app, target, name, &written, ctx.query.dry_run);
    Ok(ok(view(&written.object, target)))
}

pub(crate) fn patch(
    app: &App,
    target: &Target,
    name: &str,
    content_type: Option<&str>,
    body: &[u8],
    ctx: &WriteContext<'_>,
) -> Result<Reply, ApiError> {
    let kind = content_type
        .and_then(PatchKind::from_content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(CUSTOM_RESOURCE_PATCH_TYPES))?;
    let kind = match (kind, target.info.builtin) {
        // Namespaces have no list merged by key, so strategic merge is a merge patch there.
        (PatchKind::Strategic, Builtin::Namespace) => PatchKind::Merge,
        (PatchKind::Strategic, _) => {
            return Err(ApiError::unsupported_media_type(
                CUSTOM_RESOURCE_PATCH_TYPES,
            ));
        }
        (kind, _) => kind,
    };
    if kind == PatchKind::Apply {
        return apply(app, target, name, body, ctx);
    }
    let manager = manager_name(ctx.query, ctx.user_agent, false)?;
    let now = now_rfc3339();
    let api_version = target.api_version();
    let subresource = target.subresource.clone();
    let written = app
        .store
        .write(&target.key(name), ctx.query.dry_run, |current| {
            let Some(current) = current else {
                return Err(ApiError::not_found(&target.subject(name)));
            };
            let base = view(current, target);
            let patched = match kind {
                PatchKind::Json => apply_json_patch(&base, body)?,
                _ => apply_merge_patch(&base, body)?,
            };
            // A resourceVersion or uid left in the patched object is a precondition.
            check_preconditions(target, current, &patched)?;
            let writer = Writer {
                manager: &manager,
                api_version: &api_version,
                subresource: subresource.as_deref(),
                now: &now,
            };
            finish_update(target, current, patched, Ownership::Update(writer))
        })?;
    after_write(app, target, name, &written, ctx.query.dry_run);
    Ok(ok(view(&written.object, target)))
}

fn apply(
    app: &App,
    target: &Target,
    name: &str,
    body: &[u8],
    ctx: &WriteContext<'_>,
) -> Result<Reply, ApiError> {
    let manager = manager_name(ctx.query, ctx.user_agent, true)?;
    let mut config = object_body(body)?;
    check_identity(target, &mut config)?;
    let config_name = meta_str(&config, "name").to_owned();
    if config_name.is_empty() {
        if let Some(metadata) = metadata_mut(&mut config) {
            metadata.insert("name".to_owned(), json!(name));
        }
    } else {
        check_name_matches(&config, name)?;
    }
    let exists = app.store.get(&target.key(name)).is_some();
    if config_name.is_empty() && !exists {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name} based on URL) was undeterminable: name must be provided"
        )));
    }
    let intended = config.clone();
    // What the applier may own at this endpoint.
    if let Some(map) = config.as_object_mut() {
        if target.is_status() {
            map.retain(|key, _| matches!(key.as_str(), "apiVersion" | "kind" | "status"));
        } else if target.info.has_status(&target.version) {
            map.remove("status");
        }
        if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in SERVER_OWNED {
                metadata.remove(*field);
            }
        }
    }
    // Fields the schema does not know are pruned from what is applied, so
    // nobody comes to own them.
    if let Some(schema) = target.info.schemas.get(&target.version) {
        schema::normalize(schema, &mut config, false);
    }
    let now = now_rfc3339();
    let api_version = target.api_version();
    let writer = Writer {
        manager: &manager,
        api_version: &api_version,
        subresource: target.subresource.as_deref(),
        now: &now,
    };
    let force = ctx.query.force;
    // A would-be new object is validated outside the store lock.
    let mut fresh = None;
    if !exists && !target.is_status() {
        let mut new = server_side_apply(None, &config, &writer, force)?;
        let managed = new.pointer("/metadata/managedFields").cloned();
        prepare_new(app, target, &mut new, &now)?;
        conform(target, &mut new)?;
        if let (Some(managed), Some(metadata)) = (managed, metadata_mut(&mut new)) {
            metadata.insert("managedFields".to_owned(), managed);
        }
        fill_server_status(target, &mut new);
        fresh = Some(new);
    }
    let written = app
        .store
        .write(&target.key(name), ctx.query.dry_run, |current| {
            let Some(current) = current else {
                return match fresh {
                    Some(new) => Ok(Write::Put(new)),
                    None => Err(ApiError::not_found(&target.subject(name))),
                };
            };
            check_preconditions(target, current, &intended)?;
            let merged = server_side_apply(Some(&view(current, target)), &config, &writer, force)?;
            finish_update(target, current, merged, Ownership::Applied)
        })?;
    after_write(app, target, name, &written, ctx.query.dry_run);
    Ok(Reply::Json {
        status: if written.created { 201 } else { 200 },
        body: view(&written.object, target),
    })
}

/// `DeleteOptions` fields the fake honours.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    preconditions: Option<Preconditions>,
    #[serde(default)]
    dry_run: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

fn delete_options(body: &[u8]) -> Result<DeleteOptions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeleteOptions::default());
    }
    // kube-apiserver answers an undecodable DeleteOptions with a bare 500.
    serde_json::from_slice(body).map_err(|e| {
        ApiError::internal_plain(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

pub(crate) fn delete(
    app: &App,
    target: &Target,
    name: &str,
    body: &[u8],
    query: &Query,
) -> Result<Reply, ApiError> {
    let options = delete_options(body)?;
    let dry_run = query.dry_run
        || options
            .dry_run
            .as_ref()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let written = delete_one(app, target, name, options.preconditions.as_ref(), dry_run)?;
    if written.deleted {
        let uid = meta_str(&written.object, "uid");
        Ok(ok(ApiError::deleted(&target.subject(name), uid)))
    } else {
        // Finalizers still hold it: 202 and the object, marked for deletion.
        Ok(Reply::Json {
            status: 202,
            body: view(&written.object, target),
        })
    }
}

fn delete_one(
    app: &App,
    target: &Target,
    name: &str,
    preconditions: Option<&Preconditions>,
    dry_run: bool,
) -> Result<Written, ApiError> {
    let now = now_rfc3339();
    let written = app.store.write(&target.key(name), dry_run, |current| {
        let Some(current) = current else {
            return Err(ApiError::not_found(&target.subject(name)));
        };
        if let Some(preconditions) = preconditions {
            let subject = target.subject(name);
            if let Some(uid) = preconditions.uid.as_deref() {
                let actual = meta_str(current, "uid");
                if uid != actual {
                    return Err(ApiError::precondition_failed(
                        &subject,
                        format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                    ));
                }
            }
            if let Some(version) = preconditions.resource_version.as_deref() {
                let actual = meta_str(current, "resourceVersion");
                if version != actual {
                    return Err(ApiError::precondition_failed(
                        &subject,
                        format!(
                            "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {actual}"
                        ),
                    ));
                }
            }
        }
        let pending = target.info.builtin != Builtin::Namespace && !finalizers(current).is_empty();
        if !pending {
            return Ok(Write::Delete);
        }
        // Finalizers hold the object: mark it as being deleted instead.
        let mut marked = (**current).clone();
        if meta_str(current, "deletionTimestamp").is_empty() {
            let generation = current.pointer("/metadata/generation").and_then(Value::as_i64);
            if let Some(metadata) = metadata_mut(&mut marked) {
                metadata.insert("deletionTimestamp".to_owned(), json!(now));
                metadata.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
                if let Some(generation) = generation {
                    metadata.insert("generation".to_owned(), json!(generation + 1));
                }
            }
        }
        Ok(Write::Put(marked))
    })?;
    after_write(app, target, name, &written, dry_run);
    Ok(written)
}

pub(crate) fn delete_collection(
    app: &App,
    target: &Target,
    body: &[u8],
    query: &Query,
) -> Result<Reply, ApiError> {
    let options = delete_options(body)?;
    let dry_run = query.dry_run
        || options
            .dry_run
            .as_ref()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let selectors = Selectors::parse(query, &target.info)?;
    let (objects, _) = app
        .store
        .list(&target.info.key(), target.namespace.as_deref(), None)
        .map_err(|_| ApiError::internal("listing the latest revision cannot be too old"))?;
    let mut deleted = Vec::new();
    for (key, object) in objects {
        if !selectors.matches(&object) {
            continue;
        }
        let scoped = Target {
            namespace: if key.namespace.is_empty() {
                None
            } else {
                Some(key.namespace.clone())
            },
            ..target.clone()
        };
        match delete_one(app, &scoped, &key.name, None, dry_run) {
            Ok(written) => deleted.push(view(&written.object, target)),
            // Deleted meanwhile by someone else: nothing left to do.
            Err(error) if error.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(ok(json!({
        "apiVersion": target.api_version(),
        "kind": target.info.list_kind,
        "metadata": { "resourceVersion": app.store.revision().to_string() },
        "items": deleted,
    })))
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
                app.store.delete_where(|key| key.resource == dropped);
            }
        }
        Builtin::Namespace if written.deleted => {
            let namespace = name.to_owned();
            app.store.delete_where(|key| key.namespace == namespace);
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
    apply(app, &target, &name, &body, &ctx).map(|_| ())
}
