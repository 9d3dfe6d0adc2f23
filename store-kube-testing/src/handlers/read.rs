//! `get`, `list` and `watch`.

use super::*;
use crate::etcd::Object;
use crate::selector::FieldSelector;

pub(crate) fn get(app: &App, target: &Target, name: &str, shape: Shape) -> Result<Reply, ApiError> {
    let object = app
        .etcd
        .get(&target.key(name))
        .ok_or_else(|| ApiError::not_found(&target.subject(name)))?;
    Ok(ok(shaped(&object, target, shape)))
}

/// kube-apiserver answers an unparseable resourceVersion with a bare 500.
fn parse_revision(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::internal_plain(format!(
            "resourceVersion: Invalid value: {text:?}: strconv.ParseUint: parsing {text:?}: invalid syntax"
        ))
    })
}

pub(crate) fn list(
    app: &App,
    target: &Target,
    query: &Query,
    shape: Shape,
) -> Result<Reply, ApiError> {
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
                let current = app.etcd.revision();
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
        .etcd
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
    let mut selected: Vec<(ObjectKey, Object)> = objects
        .into_iter()
        .filter(|(key, _)| {
            start_after
                .as_ref()
                .is_none_or(|(ns, name)| (&key.namespace, &key.name) > (ns, name))
        })
        .filter(|(_, object)| selectors.matches(object))
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
    let items: Vec<Value> = selected
        .iter()
        .map(|(_, object)| shaped(object, target, shape))
        .collect();
    Ok(ok(match shape {
        Shape::Whole => json!({
            "apiVersion": target.api_version(),
            "kind": target.info.list_kind,
            "metadata": metadata,
            "items": items,
        }),
        Shape::Metadata => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadataList",
            "metadata": metadata,
            // kube-apiserver sends `null`, not `[]`, when none match.
            "items": (!items.is_empty()).then_some(items),
        }),
    }))
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
