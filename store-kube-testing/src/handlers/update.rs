//! `replace`, `patch` and server-side apply (a patch of its own type).

use super::*;

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
        .etcd
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
        return apply_patch(app, target, name, body, ctx);
    }
    let manager = manager_name(ctx.query, ctx.user_agent, false)?;
    let now = now_rfc3339();
    let api_version = target.api_version();
    let subresource = target.subresource.clone();
    let written = app
        .etcd
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

pub(super) fn apply_patch(
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
    let exists = app.etcd.get(&target.key(name)).is_some();
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
        .etcd
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
