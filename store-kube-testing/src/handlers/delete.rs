//! `delete` and `deletecollection`, with their preconditions and finalizers.

use super::*;

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
    let written = app.etcd.write(&target.key(name), dry_run, |current| {
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
        .etcd
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
        "metadata": { "resourceVersion": app.etcd.revision().to_string() },
        "items": deleted,
    })))
}
