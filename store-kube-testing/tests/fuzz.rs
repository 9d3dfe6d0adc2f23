//! Property tests on the fake API server's request parsing: arbitrary paths,
//! queries, headers and bodies over raw HTTP. Every answer is a Kubernetes
//! `Status` (4xx, or one of the 5xx that kube-apiserver itself answers for
//! that input), nothing panics, no connection is dropped, and the server goes
//! on serving clients.
//!
//! Case counts are small enough for CI; `PROPTEST_CASES=10000` raises them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Value, json};
use store_conformance::support::proptest_config as config;
use store_conformance::support::strategies::{json_value, tricky_text as tricky};
use store_kube_testing::{FakeApiServer, Fault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The placeholder key Pepr keeps in every `PeprStore` object.
const PEPR_PLACEHOLDER: &str = "__pepr_do_not_delete__";

/// The two store kinds, from the manifests `cargo xtask manifests` writes
/// (read as data: the fake is judged on the wire, not with the backend's code).
fn store_shard_crd() -> CustomResourceDefinition {
    serde_json::from_str(include_str!("../../deploy/storeshards.crd.json"))
        .expect("storeshards CRD")
}

fn pepr_store_crd() -> CustomResourceDefinition {
    serde_json::from_str(include_str!("../../deploy/peprstores.crd.json")).expect("peprstores CRD")
}

fn store_shard_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("typedstore.dev", "v1", "StoreShard"),
        "storeshards",
    )
}

fn pepr_store_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("pepr.dev", "v1", "PeprStore"),
        "peprstores",
    )
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// RFC 6901 escaping of one JSON Pointer segment.
fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A fake API server serving both store kinds.
async fn fake_server() -> FakeApiServer {
    let server = FakeApiServer::start()
        .await
        .expect("fake API server starts");
    server.apply_crd(&store_shard_crd()).expect("CRD");
    server.apply_crd(&pepr_store_crd()).expect("CRD");
    server
}

/// Panics anywhere in the process (a spawned connection task included) since
/// the hook was installed.
fn panics() -> &'static AtomicUsize {
    static PANICS: std::sync::OnceLock<&'static AtomicUsize> = std::sync::OnceLock::new();
    PANICS.get_or_init(|| {
        let counter: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            counter.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        counter
    })
}

/// One raw HTTP request.
#[derive(Clone)]
struct RawRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for RawRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl RawRequest {
    fn bytes(&self) -> Vec<u8> {
        let target = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let mut head = format!(
            "{} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What came back: the status and, unless it is a stream, the whole body.
struct Answer {
    status: u16,
    body: Option<Vec<u8>>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body", &self.body.as_deref().map(String::from_utf8_lossy))
            .finish()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes on a fresh connection and reads one answer. A stream (a
/// watch: no `Content-Length`) is cut after its headers.
async fn exchange(
    address: std::net::SocketAddr,
    bytes: &[u8],
    with_body: bool,
) -> Result<Answer, String> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err(format!(
                "the connection closed without an answer (got {:?})",
                String::from_utf8_lossy(&buffer)
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let Some(length) = length else {
        return Ok(Answer { status, body: None });
    };
    if !with_body {
        // An answer to HEAD announces a length but has no body.
        return Ok(Answer {
            status,
            body: Some(Vec::new()),
        });
    }
    while buffer.len() < header_end + length {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        if read == 0 {
            return Err("the connection closed inside the body".to_owned());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Ok(Answer {
        status,
        body: Some(buffer[header_end..header_end + length].to_vec()),
    })
}

/// Percent-encodes everything outside RFC 3986's unreserved set, except a few
/// sub-delimiters left raw on purpose.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn path() -> impl Strategy<Value = String> {
    let namespace = prop::sample::select(vec!["default", "missing", "kube-system", "", "Default"]);
    let shard = prop_oneof![
        4 => prop::sample::select(vec!["s-0", "s-1", "pepr-x-store", "new", "storeshards.typedstore.dev"])
            .prop_map(str::to_owned),
        1 => tricky(10).prop_map(|t| percent_encode(&t)),
    ];
    let tail = prop::sample::select(vec!["", "/status", "/scale", "/", "//", "/status/x"]);
    let known = (
        prop::sample::select(vec![
            "/apis/typedstore.dev/v1",
            "/apis/pepr.dev/v1",
            "/apis/typedstore.dev/v2",
            "/api/v1",
            "/apis/apiextensions.k8s.io/v1",
        ]),
        prop::sample::select(vec!["", "/watch"]),
        namespace,
        prop::sample::select(vec![
            "storeshards",
            "peprstores",
            "namespaces",
            "customresourcedefinitions",
            "widgets",
        ]),
        shard,
        tail,
    )
        .prop_map(|(base, watch, ns, plural, name, tail)| {
            if ns.is_empty() {
                format!("{base}{watch}/{plural}/{name}{tail}")
            } else {
                format!("{base}{watch}/namespaces/{ns}/{plural}/{name}{tail}")
            }
        });
    let segment = prop_oneof![
        3 => prop::sample::select(vec![
            "api", "apis", "v1", "namespaces", "default", "typedstore.dev", "pepr.dev",
            "storeshards", "peprstores", "s-0", "watch", "status", "..", ".", "", "%2F", "%2e%2e",
            "~1", "%", "%zz", "version", "healthz", "openapi", "v3", "livez",
        ])
        .prop_map(str::to_owned),
        1 => tricky(8).prop_map(|t| percent_encode(&t)),
    ];
    let free = prop::collection::vec(segment, 0..8).prop_map(|s| format!("/{}", s.join("/")));
    prop_oneof![3 => known, 2 => free]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "resourceVersion", "resourceVersionMatch", "limit", "continue", "labelSelector",
            "fieldSelector", "timeoutSeconds", "allowWatchBookmarks", "fieldManager", "force",
            "dryRun", "watch", "pretty", "fieldValidation",
        ])
        .prop_map(str::to_owned),
        1 => tricky(6),
    ];
    let value = prop_oneof![
        3 => prop::sample::select(vec![
            "", "0", "1", "-1", "10", "999999999", "18446744073709551615", "18446744073709551616",
            "1e3", "0x10", "true", "false", "Exact", "NotOlderThan", "All", "Some", "a in (b)",
            "!x", "x notin (", "(((", "a==b,c!=d", "metadata.name=s-0", "metadata.namespace!=x",
            "spec.x=1", "a=b=c", "typedstore.dev/store=s", "1/default/s-0", "x/y", "=",
        ])
        .prop_map(str::to_owned),
        1 => tricky(16),
    ];
    prop::collection::vec((key, value), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| {
                // A watch that is not bounded would hold its task until the
                // server stops; keep them short.
                let v = if k == "timeoutSeconds"
                    && v.parse::<u64>().is_ok_and(|n| n > 2)
                    && !v.starts_with("184467")
                {
                    "1".to_owned()
                } else {
                    v
                };
                format!("{}={}", percent_encode(&k), percent_encode(&v))
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn header_value() -> impl Strategy<Value = String> {
    prop::collection::vec(proptest::char::range(' ', '~'), 0..24)
        .prop_map(|c| c.into_iter().collect::<String>().trim().to_owned())
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let content_type = prop_oneof![
        6 => prop::sample::select(vec![
            "application/json", "application/json-patch+json", "application/merge-patch+json",
            "application/apply-patch+yaml", "application/apply-patch+json",
            "application/strategic-merge-patch+json", "application/yaml", "text/plain",
            "application/vnd.kubernetes.protobuf", "", "application/json; charset=utf-8",
            "APPLICATION/JSON-PATCH+JSON", "multipart/form-data; boundary=x", ";", "*/*",
        ])
        .prop_map(str::to_owned),
        1 => header_value(),
    ];
    let other = (
        prop::sample::select(vec![
            "User-Agent",
            "Accept",
            "Authorization",
            "X-Fuzz",
            "Accept-Encoding",
            "Impersonate-User",
        ]),
        header_value(),
    )
        .prop_map(|(n, v)| (n.to_owned(), v));
    (
        prop::option::weighted(0.9, content_type),
        prop::collection::vec(other, 0..3),
    )
        .prop_map(|(content_type, mut others)| {
            if let Some(content_type) = content_type {
                others.push(("Content-Type".to_owned(), content_type));
            }
            others
        })
}

/// JSON text that serde_json's `Value` cannot hold: numbers out of range.
fn huge_number() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "1e999",
        "-1e999",
        "1e-400",
        "18446744073709551616000",
        "-9223372036854775809",
        "123456789012345678901234567890.5",
        "-0",
        "0.0000000000000000000001",
    ])
    .prop_map(str::to_owned)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let pointer = prop_oneof![
        4 => prop::sample::select(vec![
            "/spec/data/k", "/spec/data/a~1b", "/spec/data/~0", "/data/cap-v2-x",
            "/data/__pepr_do_not_delete__", "/metadata/labels/x", "/metadata/labels",
            "/metadata/resourceVersion", "/metadata/name", "/metadata/uid",
            "/metadata/managedFields/0", "/metadata/generation", "/metadata/finalizers/-",
            "/spec/shard", "/spec/shards", "/spec", "/spec/data", "/spec/data/-", "", "/", "/~2",
            "/a/b/c", "/status", "/kind", "/apiVersion", "/metadata",
        ])
        .prop_map(str::to_owned),
        1 => tricky(8).prop_map(|t| format!("/spec/data/{}", pointer_segment(&t))),
        1 => tricky(8),
    ];
    let value_text = prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        1 => huge_number(),
    ];
    let operation = (
        prop::sample::select(vec![
            "add", "remove", "replace", "move", "copy", "test", "bogus", "",
        ]),
        pointer.clone(),
        prop::option::of(value_text.clone()),
        prop::option::of(pointer),
    )
        .prop_map(|(op, path, value, from)| {
            let mut text = format!("{{\"op\":{},\"path\":{}", json!(op), json!(path));
            if let Some(value) = value {
                text.push_str(&format!(",\"value\":{value}"));
            }
            if let Some(from) = from {
                text.push_str(&format!(",\"from\":{}", json!(from)));
            }
            text.push('}');
            text
        });
    let json_patch = prop::collection::vec(operation, 0..5)
        .prop_map(|ops| format!("[{}]", ops.join(",")).into_bytes());
    let merge_patch = (
        prop::collection::btree_map(tricky(6), value_text.clone(), 0..4),
        prop::sample::select(vec!["spec", "metadata", "data", "status", "kind"]),
        prop::sample::select(vec![
            "data",
            "labels",
            "annotations",
            "name",
            "resourceVersion",
            "finalizers",
            "shard",
        ]),
    )
        .prop_map(|(fields, top, inner)| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", json!(k)))
                .collect();
            format!("{{\"{top}\":{{\"{inner}\":{{{}}}}}}}", fields.join(",")).into_bytes()
        });
    let object = (
        prop::sample::select(vec!["typedstore.dev/v1", "pepr.dev/v1", "v1", "", "typedstore.dev/v2"]),
        prop::sample::select(vec!["StoreShard", "PeprStore", "Namespace", "", "Status"]),
        prop_oneof![
            Just(json!("s-1")),
            Just(json!("new")),
            tricky(10).prop_map(Value::String),
            json_value()
        ],
        prop::option::of(prop_oneof![Just(json!("1")), Just(json!("abc")), json_value()]),
        json_value(),
    )
        .prop_map(|(api_version, kind, name, resource_version, spec)| {
            let mut metadata = json!({ "name": name, "labels": { "typedstore.dev/store": "s" } });
            if let Some(rv) = resource_version {
                metadata["resourceVersion"] = rv;
            }
            json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec, "data": spec })
                .to_string()
                .into_bytes()
        });
    let deep = (1usize..2000).prop_map(|depth| {
        let mut text = "[".repeat(depth);
        text.push_str(&"]".repeat(depth));
        text.into_bytes()
    });
    prop_oneof![
        2 => Just(Vec::new()),
        4 => json_patch,
        3 => merge_patch,
        3 => object,
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => huge_number().prop_map(String::into_bytes),
        1 => deep,
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => tricky(32).prop_map(String::into_bytes),
    ]
}

fn request() -> impl Strategy<Value = RawRequest> {
    (
        prop::sample::select(vec![
            "GET", "GET", "POST", "PUT", "PATCH", "PATCH", "PATCH", "DELETE", "HEAD", "OPTIONS",
            "TRACE", "FUZZ",
        ]),
        path(),
        query(),
        headers(),
        body(),
    )
        .prop_map(|(method, path, query, headers, body)| RawRequest {
            method: method.to_owned(),
            path,
            query,
            headers,
            body,
        })
}

/// The 5xx answers kube-apiserver itself gives for bad input, which the fake
/// reproduces on purpose (see the handlers): anything else 5xx is a bug.
fn is_an_api_server_5xx(status: u16, message: &str) -> bool {
    match status {
        500 => {
            message.starts_with("resourceVersion: Invalid value:")
                || message == "resourceVersion should not be set on objects to be created"
                || message.starts_with("couldn't get version/kind; json parse error")
                || message == "Invalid JSON Patch"
                || message == "etcdserver: request is too large"
        }
        504 => message.starts_with("Too large resource version"),
        _ => false,
    }
}

/// Puts back what a fuzzed request may have deleted: the CRDs, the namespace
/// and one object of each kind.
async fn restore(server: &FakeApiServer, client: &kube::Client) -> Result<(), String> {
    server
        .apply_crd(&store_shard_crd())
        .map_err(|e| e.to_string())?;
    server
        .apply_crd(&pepr_store_crd())
        .map_err(|e| e.to_string())?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({ "metadata": { "name": "default" } }))
            .map_err(|e| e.to_string())?;
    let shards: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &store_shard_resource());
    let pepr: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &pepr_store_resource());
    let shard: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "typedstore.dev/v1", "kind": "StoreShard",
        "metadata": { "name": "s-0", "labels": { "typedstore.dev/store": "s" } },
        "spec": { "store": "s", "shard": 0, "shards": 1, "data": { "k": "\"v\"", "a/b": "1" } },
    }))
    .map_err(|e| e.to_string())?;
    let store: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "pepr.dev/v1", "kind": "PeprStore",
        "metadata": { "name": "pepr-x-store" },
        "data": { PEPR_PLACEHOLDER: "k-thx-bye", "cap-v2-x": "1" },
    }))
    .map_err(|e| e.to_string())?;
    let exists = |r: Result<(), kube::Error>| match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let params = PostParams::default();
    exists(namespaces.create(&params, &namespace).await.map(drop))?;
    exists(shards.create(&params, &shard).await.map(drop))?;
    exists(pepr.create(&params, &store).await.map(drop))?;
    Ok(())
}

/// The server still answers health checks and kube clients can list and decode
/// every store object.
async fn still_serving(server: &FakeApiServer, client: &kube::Client) -> Result<(), String> {
    let health = exchange(
        server.address(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        true,
    )
    .await?;
    if health.status != 200 {
        return Err(format!("/healthz answered {}", health.status));
    }
    for resource in [store_shard_resource(), pepr_store_resource()] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
        api.list(&Default::default())
            .await
            .map_err(|e| format!("a client can no longer list {}: {e}", resource.plural))?;
    }
    Ok(())
}

fn check_answer(request: &RawRequest, answer: &Answer) -> Result<(), TestCaseError> {
    let status = answer.status;
    let Some(body) = &answer.body else {
        // Only a watch streams.
        prop_assert_eq!(status, 200, "a stream that is not a watch: {:?}", request);
        return Ok(());
    };
    if status < 400 {
        // Health checks answer plain `ok`; everything else is JSON.
        if request.method != "HEAD" && body.as_slice() != b"ok" {
            prop_assert!(
                serde_json::from_slice::<Value>(body).is_ok(),
                "a {} answer that is not JSON: {:?}",
                status,
                String::from_utf8_lossy(body)
            );
        }
        return Ok(());
    }
    if request.method == "HEAD" {
        return Ok(());
    }
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        fail(format!(
            "a {status} answer that is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        ))
    })?;
    prop_assert_eq!(&parsed["kind"], "Status", "{}", parsed);
    prop_assert_eq!(&parsed["status"], "Failure", "{}", parsed);
    prop_assert_eq!(
        parsed["code"].as_u64(),
        Some(u64::from(status)),
        "{}",
        parsed
    );
    let message = parsed["message"].as_str().unwrap_or_default();
    prop_assert!(
        status < 500 || is_an_api_server_5xx(status, message),
        "{} for {:?}: {}",
        status,
        request,
        parsed
    );
    Ok(())
}

#[test]
fn any_request_gets_a_status_and_the_fake_goes_on_serving() {
    let panicked = panics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _entered = rt.enter();
    let server = rt.block_on(fake_server());
    let client = server.client().expect("client");
    let mut runner = TestRunner::new(config(384));
    runner
        .run(&request(), |request| {
            rt.block_on(async {
                restore(&server, &client).await.map_err(fail)?;
                let before = panicked.load(Ordering::SeqCst);
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    exchange(server.address(), &request.bytes(), request.method != "HEAD"),
                )
                .await
                .map_err(|_| fail(format!("no answer within 10 s to {request:?}")))?
                .map_err(|e| fail(format!("{e} for {request:?}")))?;
                check_answer(&request, &answer)?;
                // What the request deleted (a CRD, the namespace) comes back; what
                // it broke stays broken.
                restore(&server, &client).await.map_err(fail)?;
                still_serving(&server, &client)
                    .await
                    .map_err(|e| fail(format!("{e} after {request:?} got {answer:?}")))?;
                prop_assert_eq!(
                    panicked.load(Ordering::SeqCst),
                    before,
                    "the server panicked on {:?}",
                    request
                );
                Ok(())
            })
        })
        .expect("request parsing");
}

/// Requests a random search rarely builds, each aimed at one parser.
fn hard_cases() -> Vec<RawRequest> {
    let shard = "/apis/typedstore.dev/v1/namespaces/default/storeshards/s-0";
    let shards = "/apis/typedstore.dev/v1/namespaces/default/storeshards";
    let pepr = "/apis/pepr.dev/v1/namespaces/default/peprstores/pepr-x-store";
    let request =
        |method: &str, path: &str, query: &str, content_type: Option<&str>, body: &str| {
            RawRequest {
                method: method.to_owned(),
                path: path.to_owned(),
                query: query.to_owned(),
                headers: content_type
                    .map(|c| vec![("Content-Type".to_owned(), c.to_owned())])
                    .unwrap_or_default(),
                body: body.as_bytes().to_vec(),
            }
        };
    let merge = |body: &str| {
        request(
            "PATCH",
            shard,
            "",
            Some("application/merge-patch+json"),
            body,
        )
    };
    let json = |body: &str| {
        request(
            "PATCH",
            shard,
            "",
            Some("application/json-patch+json"),
            body,
        )
    };
    vec![
        // Watches with extreme bounds.
        request(
            "GET",
            shards,
            "watch=1&timeoutSeconds=18446744073709551615",
            None,
            "",
        ),
        request(
            "GET",
            shards,
            "watch=1&timeoutSeconds=9223372036854775807&allowWatchBookmarks=true",
            None,
            "",
        ),
        request(
            "GET",
            shards,
            "watch=1&resourceVersion=18446744073709551615&timeoutSeconds=1",
            None,
            "",
        ),
        request("GET", shards, "watch=1&resourceVersion=-1", None, ""),
        request("GET", shards, "limit=18446744073709551615", None, ""),
        request(
            "GET",
            shards,
            "limit=1&continue=18446744073709551615/default/s-0",
            None,
            "",
        ),
        request(
            "GET",
            shards,
            "resourceVersion=18446744073709551615&resourceVersionMatch=NotOlderThan",
            None,
            "",
        ),
        // Metadata of the wrong shape.
        merge(r#"{"metadata":{"labels":{"x":1}}}"#),
        merge(r#"{"metadata":{"labels":"x"}}"#),
        merge(r#"{"metadata":{"annotations":{"x":{"y":1}}}}"#),
        merge(r#"{"metadata":{"finalizers":"x"}}"#),
        merge(r#"{"metadata":{"finalizers":[1,2]}}"#),
        merge(r#"{"metadata":{"ownerReferences":{"x":1}}}"#),
        merge(r#"{"metadata":{"name":5}}"#),
        merge(r#"{"metadata":5}"#),
        merge(r#"{"metadata":null}"#),
        merge(r#"{"metadata":{"resourceVersion":5}}"#),
        merge(r#"{"metadata":{"generation":"x"}}"#),
        merge(r#"{"metadata":{"creationTimestamp":"yesterday"}}"#),
        merge(r#"{"metadata":{"managedFields":"x"}}"#),
        merge(r#"{"apiVersion":5,"kind":[]}"#),
        json(r#"[{"op":"add","path":"/metadata/labels/x","value":5}]"#),
        json(r#"[{"op":"replace","path":"/metadata","value":"x"}]"#),
        json(r#"[{"op":"remove","path":"/metadata"}]"#),
        json(r#"[{"op":"remove","path":"/metadata/name"}]"#),
        json(r#"[{"op":"add","path":"/metadata/managedFields/-","value":{"manager":5}}]"#),
        json(r#"[{"op":"replace","path":"/spec/shard","value":1e999}]"#),
        json(r#"[{"op":"replace","path":"/spec/shard","value":18446744073709551616000}]"#),
        json(r#"[{"op":"replace","path":"/spec/shard","value":-1}]"#),
        json(r#"[{"op":"replace","path":"/spec/shard","value":4294967296}]"#),
        json(r#"[{"op":"replace","path":"/spec/data","value":{"k":5}}]"#),
        json(r#"[{"op":"move","from":"/spec","path":"/spec/data"}]"#),
        json(r#"[{"op":"copy","from":"/spec/data","path":"/spec/data/x"}]"#),
        json(
            r#"[{"op":"test","path":"/spec/data/k","value":"\"v\""},{"op":"add","path":"/spec/data/~2","value":"1"}]"#,
        ),
        request(
            "PATCH",
            pepr,
            "",
            Some("application/merge-patch+json"),
            r#"{"data":{"x":1}}"#,
        ),
        request(
            "PATCH",
            pepr,
            "",
            Some("application/merge-patch+json"),
            r#"{"data":null}"#,
        ),
        request(
            "PATCH",
            pepr,
            "fieldManager=x",
            Some("application/apply-patch+yaml"),
            r#"{"apiVersion":"pepr.dev/v1","kind":"PeprStore","metadata":{"name":"pepr-x-store","labels":{"a":7}}}"#,
        ),
        request(
            "PATCH",
            shard,
            "force=true",
            Some("application/apply-patch+yaml"),
            r#"{"apiVersion":"typedstore.dev/v1","kind":"StoreShard","metadata":{"name":"s-0"},"spec":{"data":{"k":[]}}}"#,
        ),
        request(
            "PATCH",
            shard,
            "fieldManager=x",
            Some("application/apply-patch+yaml"),
            "not: [yaml",
        ),
        request(
            "PUT",
            shard,
            "",
            Some("application/json"),
            r#"{"apiVersion":"typedstore.dev/v1","kind":"StoreShard","metadata":{"name":"s-0","resourceVersion":"1","labels":{"x":null}},"spec":{"store":"s","shard":0,"shards":1}}"#,
        ),
        request(
            "POST",
            shards,
            "",
            Some("application/json"),
            r#"{"apiVersion":"typedstore.dev/v1","kind":"StoreShard","metadata":{"name":"s-9","labels":{"x":1}},"spec":{"store":"s","shard":0,"shards":1}}"#,
        ),
        request(
            "POST",
            shards,
            "",
            Some("application/json"),
            r#"{"apiVersion":"typedstore.dev/v1","kind":"StoreShard","metadata":{"generateName":"-"},"spec":{}}"#,
        ),
        request(
            "POST",
            shards,
            "",
            Some("application/json"),
            &format!(
                r#"{{"apiVersion":"typedstore.dev/v1","kind":"StoreShard","metadata":{{"name":"{}"}},"spec":{{}}}}"#,
                "a".repeat(300)
            ),
        ),
        request(
            "DELETE",
            shard,
            "",
            Some("application/json"),
            r#"{"preconditions":{"uid":5}}"#,
        ),
        request("DELETE", shards, "labelSelector=x%20in%20(", None, ""),
        request("GET", shards, "fieldSelector=spec.data.k%3Dv", None, ""),
        request("GET", shards, "labelSelector=%21%21%21", None, ""),
        request(
            "GET",
            "/apis/typedstore.dev/v1/namespaces/default/storeshards/s-0/status/extra/more",
            "",
            None,
            "",
        ),
        request("GET", "/openapi/v3/apis/typedstore.dev/v1", "", None, ""),
        request("GET", "/apis/%FF/v1", "", None, ""),
        request("GET", shards, "limit=-1", None, ""),
        request("GET", shards, "dryRun=Some", None, ""),
        request(
            "GET",
            shards,
            "resourceVersion=abc&resourceVersionMatch=Exact",
            None,
            "",
        ),
        request("GET", shards, "resourceVersionMatch=Exact", None, ""),
        request("GET", shards, "continue=garbage", None, ""),
        request("POST", shards, "", Some("text/plain"), "{}"),
        request("POST", shards, "", Some("application/json"), "[1]"),
        request(
            "POST",
            shards,
            "",
            Some("application/json"),
            r#"{"apiVersion":"typedstore.dev/v1","kind":"StoreShard","metadata":{"name":"s-8","resourceVersion":"5"},"spec":{"store":"s","shard":0,"shards":1}}"#,
        ),
        request(
            "POST",
            shards,
            "",
            Some("application/json"),
            r#"{"apiVersion":"typedstore.dev/v1","kind":"StoreShard","metadata":{"name":"s-7"},"spec":{"store":"s","shard":-1,"shards":1}}"#,
        ),
        request("PUT", shards, "", Some("application/json"), "{}"),
        request(
            "PATCH",
            shard,
            "",
            Some("application/apply-patch+yaml"),
            "{}",
        ),
        request(
            "PATCH",
            shard,
            "",
            Some("application/strategic-merge-patch+json"),
            "{}",
        ),
        request("PATCH", shard, "", Some("text/plain"), "{}"),
        request(
            "PATCH",
            shard,
            &format!("fieldManager={}", "m".repeat(129)),
            Some("application/merge-patch+json"),
            "{}",
        ),
        merge("{\"spec\":"),
        merge("[1]"),
        merge(r#"{"spec":{"shard":1e999}}"#),
        json(r#"{"op":"add"}"#),
        json(r#"[{"op":"nope","path":"/x"}]"#),
        json(r#"[{"op":"test","path":"/spec/data/k","value":"other"}]"#),
        request("DELETE", shard, "", Some("application/json"), "not json"),
        request(
            "DELETE",
            shard,
            "",
            Some("application/json"),
            r#"{"preconditions":{"resourceVersion":"1"}}"#,
        ),
        request("HEAD", shard, "", None, ""),
        request("OPTIONS", shard, "", None, ""),
    ]
}

#[test]
fn hard_requests_get_a_status_and_the_fake_goes_on_serving() {
    let panicked = panics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _entered = rt.enter();
    let mut failures = Vec::new();
    for request in hard_cases() {
        // A fresh server each, so one broken object does not hide the next case.
        let server = rt.block_on(fake_server());
        let client = server.client().expect("client");
        let outcome: Result<(), String> = rt.block_on(async {
            restore(&server, &client).await?;
            let before = panicked.load(Ordering::SeqCst);
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                exchange(server.address(), &request.bytes(), request.method != "HEAD"),
            )
            .await
            .map_err(|_| "no answer within 10 s".to_owned())??;
            check_answer(&request, &answer).map_err(|e| e.to_string())?;
            restore(&server, &client).await?;
            still_serving(&server, &client)
                .await
                .map_err(|e| format!("{e} (the answer was {answer:?})"))?;
            // A panic in a spawned task shows once that task ran.
            tokio::task::yield_now().await;
            if panicked.load(Ordering::SeqCst) != before {
                return Err("the server panicked".to_owned());
            }
            Ok(())
        });
        if let Err(why) = outcome {
            failures.push(format!("{request:?}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn any_bytes_on_the_wire_leave_the_fake_serving() {
    let panicked = panics();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _entered = rt.enter();
    let server = rt.block_on(fake_server());
    let client = server.client().expect("client");
    let noise = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        request().prop_flat_map(|r| {
            let bytes = r.bytes();
            let len = bytes.len();
            // A request cut short, or with bytes flipped.
            (
                Just(bytes),
                0..=len,
                prop::collection::vec((0..len.max(1), any::<u8>()), 0..4),
            )
                .prop_map(|(mut bytes, cut, flips)| {
                    for (at, byte) in flips {
                        if let Some(b) = bytes.get_mut(at) {
                            *b = byte;
                        }
                    }
                    bytes.truncate(cut);
                    bytes
                })
        }),
    ];
    let mut runner = TestRunner::new(config(128));
    runner
        .run(&noise, |bytes| {
            rt.block_on(async {
                restore(&server, &client).await.map_err(fail)?;
                let before = panicked.load(Ordering::SeqCst);
                let mut stream = tokio::net::TcpStream::connect(server.address())
                    .await
                    .map_err(fail)?;
                stream.write_all(&bytes).await.map_err(fail)?;
                // The client is done sending: the server answers or hangs up.
                stream.shutdown().await.map_err(fail)?;
                let mut answer = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                        .await;
                prop_assert!(read.is_ok(), "the server neither answered nor hung up");
                if !answer.is_empty() {
                    prop_assert!(
                        answer.starts_with(b"HTTP/1.1 "),
                        "{:?}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                restore(&server, &client).await.map_err(fail)?;
                still_serving(&server, &client).await.map_err(fail)?;
                prop_assert_eq!(
                    panicked.load(Ordering::SeqCst),
                    before,
                    "the server panicked"
                );
                Ok(())
            })
        })
        .expect("wire noise");
}

#[test]
fn bodies_over_the_request_limit_get_413_and_injected_faults_are_the_only_other_5xx() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let server = fake_server().await;
        let client = server.client().expect("client");
        restore(&server, &client).await.expect("objects");
        let path = "/apis/typedstore.dev/v1/namespaces/default/storeshards/s-0";
        let big = RawRequest {
            method: "PATCH".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            headers: vec![(
                "Content-Type".to_owned(),
                "application/merge-patch+json".to_owned(),
            )],
            body: format!(
                "{{\"spec\":{{\"data\":{{\"k\":\"{}\"}}}}}}",
                "x".repeat(3 * 1024 * 1024)
            )
            .into_bytes(),
        };
        let answer = exchange(server.address(), &big.bytes(), true)
            .await
            .expect("an answer");
        assert_eq!(answer.status, 413);
        let get = RawRequest {
            method: "GET".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        server.fail_next(1, Fault::InternalError);
        let injected = exchange(server.address(), &get.bytes(), true)
            .await
            .expect("an answer");
        assert_eq!(injected.status, 500);
        let body: Value =
            serde_json::from_slice(&injected.body.unwrap_or_default()).expect("a Status");
        assert_eq!(body["kind"], "Status");
        let after = exchange(server.address(), &get.bytes(), true)
            .await
            .expect("an answer");
        assert_eq!(after.status, 200);
    });
}
