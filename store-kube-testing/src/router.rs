//! HTTP in and out: path routing to discovery or a resource, query parsing,
//! the request body limit, pause/latency/fault hooks and the request log.
//! Every failure leaves as a Kubernetes `Status`; nothing here panics on
//! what a client sends.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};

use super::api_status::ApiError;
use super::faults::Fault;
use super::handlers::{self, Reply, Shape, WriteContext};
use super::request_log::{RecordedRequest, Verb};
use super::watch;
use crate::query::Query;
use crate::state::App;
use crate::target::Target;

/// The request header that names a client ([`FakeApiServer::client_as`](crate::FakeApiServer::client_as)).
pub(crate) const CLIENT_HEADER: &str = "x-fake-api-client";

/// kube-apiserver's limit on request bodies: 3 MiB.
pub(crate) const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// Response bodies: whole JSON documents or watch streams.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Where a path leads.
enum Route {
    Root,
    Version,
    Health,
    /// OpenAPI v3 discovery: enough for kubectl to see that the server
    /// validates fields itself (`fieldValidation`) and skip its own checks.
    OpenApiRoot,
    OpenApi {
        group: String,
        version: String,
    },
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList {
        group: String,
        version: String,
    },
    Resource {
        target: Target,
        watch_path: bool,
    },
}

fn route(app: &App, path: &str) -> Result<Route, ApiError> {
    let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    while segments.last() == Some(&"") {
        segments.pop();
    }
    match segments.as_slice() {
        [] => Ok(Route::Root),
        ["version"] => Ok(Route::Version),
        ["openapi", "v3"] => Ok(Route::OpenApiRoot),
        ["openapi", "v3", "api", version] => Ok(Route::OpenApi {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["openapi", "v3", "apis", group, version] => Ok(Route::OpenApi {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["healthz" | "readyz" | "livez", ..] => Ok(Route::Health),
        ["api"] => Ok(Route::CoreVersions),
        ["api", version] => Ok(Route::ResourceList {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["api", version, rest @ ..] => resource_route(app, "", version, rest),
        ["apis"] => Ok(Route::GroupList),
        ["apis", group] => Ok(Route::Group((*group).to_owned())),
        ["apis", group, version] => Ok(Route::ResourceList {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["apis", group, version, rest @ ..] => resource_route(app, group, version, rest),
        _ => Err(ApiError::unknown_path()),
    }
}

fn resource_route(app: &App, group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let namespaced = match rest {
        ["namespaces", namespace, plural, tail @ ..] if tail.len() <= 2 => app
            .registry
            .lookup(group, version, plural)
            .filter(|info| info.namespaced)
            .map(|info| (info, Some((*namespace).to_owned()), tail)),
        _ => None,
    };
    let (info, namespace, tail) = match namespaced {
        Some(found) => found,
        None => match rest {
            [plural, tail @ ..] if tail.len() <= 2 => {
                let info = app
                    .registry
                    .lookup(group, version, plural)
                    .ok_or_else(ApiError::unknown_path)?;
                if info.namespaced && !tail.is_empty() {
                    return Err(ApiError::unknown_path());
                }
                (info, None, tail)
            }
            _ => return Err(ApiError::unknown_path()),
        },
    };
    let name = tail.first().map(|name| (*name).to_owned());
    let subresource = tail.get(1).map(|sub| (*sub).to_owned());
    if let Some(subresource) = &subresource
        && (subresource != "status" || !info.has_status(version))
    {
        return Err(ApiError::unknown_path());
    }
    Ok(Route::Resource {
        target: Target {
            info,
            version: version.to_owned(),
            namespace,
            name,
            subresource,
        },
        watch_path,
    })
}

fn verb_of(route: &Route, method: &Method, watch: bool) -> Option<Verb> {
    let Route::Resource { target, watch_path } = route else {
        return None;
    };
    let item = target.name.is_some();
    Some(match *method {
        Method::GET if watch || *watch_path => Verb::Watch,
        Method::GET if item => Verb::Get,
        Method::GET => Verb::List,
        Method::POST => Verb::Create,
        Method::PUT => Verb::Update,
        Method::PATCH => Verb::Patch,
        Method::DELETE if item => Verb::Delete,
        Method::DELETE => Verb::DeleteCollection,
        _ => return None,
    })
}

/// Answers one request. Never panics on request data and never fails.
pub(crate) async fn handle(app: Arc<App>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let raw_query = request.uri().query().unwrap_or("").to_owned();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let client = request
        .headers()
        .get(CLIENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
    // (and `as=PartialObjectMetadata`): answer with the metadata alone.
    let metadata_only = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("as=PartialObjectMetadata"));
    let routed = route(&app, &path);
    let query = Query::parse(&raw_query);
    let watch = query.as_ref().is_ok_and(|query| query.watch);
    let verb = routed
        .as_ref()
        .ok()
        .and_then(|route| verb_of(route, &method, watch));

    app.faults.wait_while_paused().await;
    let latency = app.faults.latency(client.as_deref());
    if !latency.is_zero() {
        delay(latency).await;
    }

    let body = read_body(request.into_body()).await;
    let response = match app.faults.take(verb, &path, client.as_deref()) {
        Some(fault) => fault_response(fault).await,
        None => match (routed, query, body) {
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => error_response(&error),
            (Ok(route), Ok(query), Ok(body)) => {
                let call = Call {
                    method: &method,
                    query: &query,
                    content_type: content_type.as_deref(),
                    user_agent: user_agent.as_deref(),
                    client: client.as_deref(),
                    body: &body,
                    shape: if metadata_only {
                        Shape::Metadata
                    } else {
                        Shape::Whole
                    },
                };
                dispatch(&app, route, &call)
            }
        },
    };
    app.log.record(RecordedRequest {
        method: method.to_string(),
        path,
        query: raw_query,
        content_type,
        status: response.status().as_u16(),
        verb,
        client,
    });
    response
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::entity_too_large(format!(
                "Request entity too large: limit is {MAX_REQUEST_BYTES}"
            )))
        }
        Err(error) => Err(ApiError::bad_request(format!(
            "error reading the request body: {error}"
        ))),
    }
}

/// One parsed request, borrowed for the handlers.
struct Call<'a> {
    method: &'a Method,
    query: &'a Query,
    content_type: Option<&'a str>,
    user_agent: Option<&'a str>,
    client: Option<&'a str>,
    body: &'a [u8],
    /// Whole objects, or (`PartialObjectMetadata`) their metadata alone.
    shape: Shape,
}

fn dispatch(app: &Arc<App>, route: Route, call: &Call<'_>) -> Response<Body> {
    let result = match route {
        Route::Root => Ok(Reply::Json {
            status: 200,
            body: json!({ "paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"] }),
        }),
        Route::Health => return text_response(StatusCode::OK, "ok"),
        Route::OpenApiRoot => Ok(Reply::Json {
            status: 200,
            body: app.registry.openapi_root(),
        }),
        Route::OpenApi { group, version } => app
            .registry
            .openapi(&group, &version)
            .map(|body| Reply::Json { status: 200, body })
            .ok_or_else(ApiError::unknown_path),
        Route::Version => Ok(Reply::Json {
            status: 200,
            body: json!({
                "major": "1",
                "minor": "34",
                "gitVersion": "v1.34.0-store-kube-fake",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "1970-01-01T00:00:00Z",
                "goVersion": "",
                "compiler": "",
                "platform": "linux/amd64",
            }),
        }),
        Route::CoreVersions => Ok(Reply::Json {
            status: 200,
            body: app.registry.core_versions(&app.options.server_address),
        }),
        Route::GroupList => Ok(Reply::Json {
            status: 200,
            body: app.registry.group_list(),
        }),
        Route::Group(group) => app
            .registry
            .group(&group)
            .map(|body| Reply::Json { status: 200, body })
            .ok_or_else(ApiError::unknown_path),
        Route::ResourceList { group, version } => app
            .registry
            .resource_list(&group, &version)
            .map(|body| Reply::Json { status: 200, body })
            .ok_or_else(ApiError::unknown_path),
        Route::Resource { target, watch_path } => resource(app, &target, watch_path, call),
    };
    match result {
        Ok(Reply::Json { status, body }) => json_response(status, &body),
        Ok(Reply::Watch(spec)) => {
            let mut response = Response::new(watch::stream(app, *spec, call.client));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => error_response(&error),
    }
}

/// Content types kube-apiserver decodes for custom resources. The fake reads
/// JSON only, which is also valid YAML; real YAML syntax is refused with 400.
const OBJECT_MEDIA_TYPES: &[&str] = &["application/json", "application/yaml"];

fn resource(
    app: &Arc<App>,
    target: &Target,
    watch_path: bool,
    call: &Call<'_>,
) -> Result<Reply, ApiError> {
    let ctx = WriteContext {
        query: call.query,
        user_agent: call.user_agent,
    };
    let cluster_wide_namespaced = target.info.namespaced && target.namespace.is_none();
    // No Content-Type means the first supported one, JSON, as in kube-apiserver.
    let check_object_type = || match call.content_type {
        None | Some("") => Ok(()),
        Some(media) if OBJECT_MEDIA_TYPES.contains(&media) => Ok(()),
        _ => Err(ApiError::unsupported_media_type(OBJECT_MEDIA_TYPES)),
    };
    let name = target.name.as_deref();
    match (call.method, name) {
        (&Method::GET, None) if call.query.watch || watch_path => {
            handlers::watch(app, target, call.query)
        }
        (&Method::GET, Some(_)) if call.query.watch || watch_path => {
            handlers::watch(app, target, call.query)
        }
        (&Method::GET, None) => handlers::list(app, target, call.query, call.shape),
        (&Method::GET, Some(name)) => handlers::get(app, target, name, call.shape),
        (&Method::POST, None) if !cluster_wide_namespaced => {
            check_object_type()?;
            handlers::create(app, target, call.body, &ctx)
        }
        (&Method::PUT, Some(name)) => {
            check_object_type()?;
            handlers::replace(app, target, name, call.body, &ctx)
        }
        (&Method::PATCH, Some(name)) => {
            handlers::patch(app, target, name, call.content_type, call.body, &ctx)
        }
        (&Method::DELETE, Some(name)) if target.subresource.is_none() => {
            handlers::delete(app, target, name, call.body, call.query)
        }
        (&Method::DELETE, None) if !cluster_wide_namespaced => {
            handlers::delete_collection(app, target, call.body, call.query)
        }
        // kube-apiserver serves no namespaced writes outside a namespace.
        (&Method::POST | &Method::DELETE, None) => Err(ApiError::unknown_path()),
        (&Method::PUT | &Method::PATCH, None) => {
            Err(ApiError::bad_request("name must be provided"))
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

async fn fault_response(fault: Fault) -> Response<Body> {
    let error = match fault {
        Fault::InternalError => ApiError::internal("injected fault"),
        Fault::TooManyRequests { retry_after } => {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            ApiError::too_many_requests(seconds)
        }
        Fault::Conflict => ApiError::injected_conflict(),
        Fault::Hang(duration) => {
            tokio::time::sleep(duration).await;
            ApiError::timeout(
                "the server was unable to return a response in the time allotted (injected hang)",
            )
        }
    };
    error_response(&error)
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.code, &error.to_status());
    if let Some(seconds) = error.retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Waits `latency`, precisely: Tokio's timer rounds up to the next millisecond
/// tick, which would turn an injected 1 ms into up to 2. Short delays sleep on
/// the blocking pool, where the OS timer is exact to tens of microseconds.
async fn delay(latency: std::time::Duration) {
    if latency > std::time::Duration::from_millis(20) {
        tokio::time::sleep(latency).await;
        return;
    }
    let slept = tokio::task::spawn_blocking(move || std::thread::sleep(latency)).await;
    if slept.is_err() {
        // The blocking pool is shutting down: fall back to the timer.
        tokio::time::sleep(latency).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_parse_like_the_api_server() {
        let query = Query::parse("watch=1&resourceVersion=10&allowWatchBookmarks=true&timeoutSeconds=5&labelSelector=a%20in%20(b)")
            .expect("parse");
        assert!(query.watch && query.allow_watch_bookmarks);
        assert_eq!(query.resource_version.as_deref(), Some("10"));
        assert_eq!(query.timeout_seconds, Some(5));
        assert_eq!(query.label_selector.as_deref(), Some("a in (b)"));
        assert!(Query::parse("watch=maybe").expect("parse").watch);
        assert!(!Query::parse("watch=False").expect("parse").watch);
        assert_eq!(Query::parse("limit=-1").err().map(|e| e.code), Some(400));
        assert_eq!(Query::parse("dryRun=Some").err().map(|e| e.code), Some(400));
    }
}
