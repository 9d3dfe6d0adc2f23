//! `create`.

use super::*;

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
        .etcd
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
