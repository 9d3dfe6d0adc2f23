//! Opening the store a command names: the client from the kubeconfig, the
//! layout (the native shard count is read from the store's first object), and
//! a `Store` on the kube backend. A store that does not exist is reported, not
//! created.

use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use store_core::Store;
use store_kube::layout::Layout;
use store_kube::resource::{pepr_store_resource, store_shard_resource};
use store_kube::{KubeBackend, KubeBackendBuilder, PEPR_NAMESPACE};

use crate::args::Target;
use crate::failure::Failure;

/// An open store and where it lives.
pub(crate) struct Opened {
    pub(crate) store: Store,
    pub(crate) layout: Layout,
    pub(crate) namespace: String,
    /// The store's objects, through the API.
    pub(crate) objects: Api<DynamicObject>,
}

impl Opened {
    /// The object holding `key`.
    pub(crate) fn shard_of(&self, key: &str) -> String {
        self.layout
            .objects()
            .get(self.layout.shard_of(key))
            .cloned()
            .unwrap_or_default()
    }
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
/// object does not exist.
pub(crate) async fn open(target: &Target) -> Result<Opened, Failure> {
    open_with(target, |builder| builder).await
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
        layout,
        namespace,
        objects,
    })
}
