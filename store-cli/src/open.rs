//! Opening the store a command names: the client from the kubeconfig, the
//! layout (the native shard count is read from the store's first object), and
//! a `Store` on the kube backend; or, with `--redis`, a `Store` on the Redis
//! backend. A store that does not exist is reported, not created.

use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use store_core::Store;
use store_kube::layout::Layout;
use store_kube::resource::{pepr_store_resource, store_shard_resource};
use store_kube::{KubeBackend, KubeBackendBuilder, PEPR_NAMESPACE};
use store_redis::RedisBackend;

use crate::args::Target;
use crate::failure::Failure;
use crate::redis::{Endpoint, redis_store_exists};

/// An open store and where it lives.
pub(crate) struct Opened {
    pub(crate) store: Store,
    pub(crate) place: Place,
}

/// Where an open store lives.
#[allow(
    clippy::large_enum_variant,
    reason = "one per command, never moved around"
)]
pub(crate) enum Place {
    /// In Kubernetes custom resources.
    Kube {
        layout: Layout,
        namespace: String,
        /// The store's objects, through the API.
        objects: Api<DynamicObject>,
    },
    /// In Redis (a clone of the store's backend, for `stat`).
    Redis(RedisBackend),
}

impl Opened {
    /// The object holding `key` (on Redis: the hash tag naming its slot).
    pub(crate) fn shard_of(&self, key: &str) -> String {
        match &self.place {
            Place::Kube { layout, .. } => layout
                .objects()
                .get(layout.shard_of(key))
                .cloned()
                .unwrap_or_default(),
            Place::Redis(backend) => backend.hash_tag().to_owned(),
        }
    }

    /// Where the store is, for messages (credentials redacted).
    pub(crate) fn whereabouts(&self) -> String {
        match &self.place {
            Place::Kube { namespace, .. } => format!("namespace `{namespace}`"),
            Place::Redis(backend) => redis_whereabouts(backend.store(), backend.endpoint()),
        }
    }
}

fn redis_whereabouts(store: &str, endpoint: &Endpoint) -> String {
    format!("Redis store `{store}` at {endpoint}")
}

/// A client for the kubeconfig and context the options name.
pub(crate) async fn client(target: &Target) -> Result<Client, Failure> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => match Kubeconfig::read_from(path) {
            Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| e.to_string()),
        (None, None) => Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| Failure::BadInput(format!("cannot load a kubeconfig: {e}")))?;
    let mut config = config;
    config.read_timeout = Some(target.timeout);
    config.connect_timeout = Some(target.timeout);
    Client::try_from(config).map_err(|e| Failure::BadInput(format!("cannot build a client: {e}")))
}

/// Where a store's objects are: their API, their layout, and a builder for
/// its backend. Fails with [`Failure::NotFound`] when the store's (first)
/// object does not exist.
pub(crate) async fn locate(
    target: &Target,
) -> Result<(KubeBackendBuilder, Layout, String, Api<DynamicObject>), Failure> {
    let client = client(target).await?;
    let in_namespace = |namespace: &str, resource: &ApiResource| -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), namespace, resource)
    };
    match (&target.store, &target.pepr, &target.capability) {
        (Some(name), None, _) => {
            let namespace = target
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned());
            let api = in_namespace(&namespace, &store_shard_resource());
            let first = format!("{name}-0");
            let object = api.get_opt(&first).await?.ok_or_else(|| {
                Failure::NotFound(format!(
                    "no store `{name}` in namespace `{namespace}` (no StoreShard `{first}`)"
                ))
            })?;
            let shards = object.data["spec"]["shards"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1);
            let builder = KubeBackend::builder(client.clone(), name.clone())
                .namespace(namespace.clone())
                .shards(shards);
            let layout = Layout::Native {
                store: name.clone(),
                shards,
            };
            Ok((builder, layout, namespace, api))
        }
        (None, Some(uuid), Some(capability)) => {
            let namespace = target
                .namespace
                .clone()
                .unwrap_or_else(|| PEPR_NAMESPACE.to_owned());
            let api = in_namespace(&namespace, &pepr_store_resource());
            let object = format!("pepr-{uuid}-store");
            if api.get_opt(&object).await?.is_none() {
                return Err(Failure::NotFound(format!(
                    "no Pepr store `{object}` in namespace `{namespace}`"
                )));
            }
            let builder = KubeBackend::builder(client.clone(), "pepr")
                .namespace(namespace.clone())
                .pepr(uuid.clone(), capability.clone());
            let layout = Layout::Pepr {
                object,
                capability: capability.clone(),
            };
            Ok((builder, layout, namespace, api))
        }
        _ => Err(Failure::BadInput(
            "name a store: `--store NAME`, or `--pepr UUID --capability NAME`".to_owned(),
        )),
    }
}

/// Opens the store `target` names, failing with [`Failure::NotFound`] when its
/// object does not exist. Unless the command `writes`, a store on Kubernetes
/// is opened read-only: looking into a store changes nothing in it (no object
/// is created, no Pepr v1 key migrated).
pub(crate) async fn open(target: &Target, writes: bool) -> Result<Opened, Failure> {
    if let Some(url) = &target.redis {
        return open_redis(target, url).await;
    }
    open_with(target, |builder| builder.read_only(!writes)).await
}

/// Like [`open`], with the backend's builder adjusted by `adjust`.
pub(crate) async fn open_with(
    target: &Target,
    adjust: impl FnOnce(KubeBackendBuilder) -> KubeBackendBuilder,
) -> Result<Opened, Failure> {
    let (builder, layout, namespace, objects) = locate(target).await?;
    let builder = adjust(builder);
    let backend = builder
        .request_timeout(target.timeout)
        .build()
        .await
        .map_err(Failure::from)?;
    let store = Store::builder()
        .backend(backend)
        .name("store-cli")
        .linked_hooks(false)
        .timeout(target.timeout)
        .open()
        .await?;
    Ok(Opened {
        store,
        place: Place::Kube {
            layout,
            namespace,
            objects,
        },
    })
}

/// Opens the store `--store` names on the Redis deployment at `url`, failing
/// with [`Failure::NotFound`] when no application has written it yet.
async fn open_redis(target: &Target, url: &str) -> Result<Opened, Failure> {
    let Some(name) = &target.store else {
        return Err(Failure::BadInput(
            "name the store on Redis: `--redis URL --store NAME`".to_owned(),
        ));
    };
    let endpoint = Endpoint::parse(url).map_err(|e| Failure::BadInput(e.to_string()))?;
    let prefix = target
        .redis_prefix
        .clone()
        .unwrap_or_else(|| store_redis::DEFAULT_PREFIX.to_owned());
    if !redis_store_exists(&endpoint, &prefix, name, target.timeout).await? {
        return Err(Failure::NotFound(format!(
            "no {} under prefix `{prefix}`",
            redis_whereabouts(name, &endpoint)
        )));
    }
    let backend = RedisBackend::builder(url, name.clone())
        .prefix(prefix)
        .request_timeout(target.timeout)
        .connect_timeout(target.timeout)
        .build()
        .await
        .map_err(crate::redis::build_failure)?;
    let store = Store::builder()
        .backend(backend.clone())
        .name("store-cli")
        .linked_hooks(false)
        .timeout(target.timeout)
        .open()
        .await?;
    Ok(Opened {
        store,
        place: Place::Redis(backend),
    })
}
