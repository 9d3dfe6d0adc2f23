//! [`TestCluster`]: one handle over both tiers, so a test written once as
//! `async fn case(cluster: &TestCluster)` runs on the fake and on a real
//! control plane.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::OnceCell;

use super::control_plane::ControlPlane;
use super::error::{Error, Result};
use super::server::FakeApiServer;

/// Set to `1` to make [`TestCluster::real`] fail, not skip, without binaries.
pub const REQUIRE_REAL_ENV: &str = "STORE_KUBE_REQUIRE_REAL";

/// How long [`TestCluster::apply_crd`] waits for a CRD to be served.
const CRD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The control plane shared by every real-tier test of a test binary:
/// starting kube-apiserver takes seconds, so tests share one and keep apart
/// by namespace ([`TestCluster::create_namespace`]) and object names.
static SHARED_CONTROL_PLANE: OnceCell<Arc<ControlPlane>> = OnceCell::const_new();

/// A cluster to test against: a [`FakeApiServer`] or a real [`ControlPlane`].
#[derive(Debug)]
pub struct TestCluster {
    tier: Tier,
}

#[derive(Debug)]
enum Tier {
    Fake(FakeApiServer),
    Real(Arc<ControlPlane>),
}

impl TestCluster {
    /// A fresh fake API server with default settings.
    pub async fn fake() -> Result<Self> {
        Ok(Self::from_fake(FakeApiServer::start().await?))
    }

    /// Wraps a fake server started with custom settings.
    pub fn from_fake(server: FakeApiServer) -> Self {
        Self {
            tier: Tier::Fake(server),
        }
    }

    /// Wraps a control plane the caller manages.
    pub fn from_control_plane(plane: Arc<ControlPlane>) -> Self {
        Self {
            tier: Tier::Real(plane),
        }
    }

    /// The real control plane shared by this test binary, started on first
    /// use. `Ok(None)` when no binaries are provisioned (a notice is printed
    /// so the skip is visible), unless `STORE_KUBE_REQUIRE_REAL=1`, which
    /// turns that into [`Error::AssetsMissing`].
    pub async fn real() -> Result<Option<Self>> {
        let plane = SHARED_CONTROL_PLANE
            .get_or_try_init(|| async { ControlPlane::start().await.map(Arc::new) })
            .await;
        match plane {
            Ok(plane) => Ok(Some(Self::from_control_plane(Arc::clone(plane)))),
            Err(Error::AssetsMissing { hint }) => {
                if std::env::var(REQUIRE_REAL_ENV).is_ok_and(|value| value == "1") {
                    return Err(Error::AssetsMissing { hint });
                }
                eprintln!("store-kube: skipping a real control-plane test: {hint}");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Whether this is the fake tier.
    pub fn is_fake(&self) -> bool {
        matches!(self.tier, Tier::Fake(_))
    }

    /// The fake server, for fault injection and the request log.
    pub fn fake_server(&self) -> Option<&FakeApiServer> {
        match &self.tier {
            Tier::Fake(server) => Some(server),
            Tier::Real(_) => None,
        }
    }

    /// A client configuration for the cluster.
    pub fn config(&self) -> kube::Config {
        match &self.tier {
            Tier::Fake(server) => server.config(),
            Tier::Real(plane) => plane.config(),
        }
    }

    /// A new client (build one per tokio runtime: clients are tied to the
    /// runtime they were built in).
    pub fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.config()).map_err(Error::Client)
    }

    /// A kubeconfig file for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        match &self.tier {
            Tier::Fake(server) => server.kubeconfig_path(),
            Tier::Real(plane) => plane.kubeconfig_path(),
        }
    }

    /// Creates or updates a CRD (server-side apply, forced) and returns once
    /// its resource is served.
    pub async fn apply_crd(&self, crd: &CustomResourceDefinition) -> Result<()> {
        if let Tier::Fake(server) = &self.tier {
            return server.apply_crd(crd);
        }
        let name = crd.metadata.name.clone().unwrap_or_default();
        let client = self.client()?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut config = crd.clone();
        config.metadata.managed_fields = None;
        config.metadata.resource_version = None;
        config.status = None;
        crds.patch(
            &name,
            &PatchParams::apply("store-kube-testing").force(),
            &Patch::Apply(&config),
        )
        .await
        .map_err(|source| Error::Request {
            what: format!("applying CRD {name}"),
            source,
        })?;
        let version = crd
            .spec
            .versions
            .iter()
            .find(|version| version.storage)
            .map(|version| version.name.clone())
            .unwrap_or_default();
        let list_path = format!(
            "/apis/{}/{}/{}?limit=1",
            crd.spec.group, version, crd.spec.names.plural
        );
        let started = Instant::now();
        loop {
            let established = crds
                .get(&name)
                .await
                .ok()
                .and_then(|crd| crd.status)
                .and_then(|status| status.conditions)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            // Established can precede the handler serving the resource by a moment.
            if established
                && let Ok(request) = http::Request::get(&list_path).body(Vec::new())
                && client.request_text(request).await.is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > store_core::conformance::deadline(CRD_READY_TIMEOUT) {
                return Err(Error::Timeout {
                    what: format!("CRD {name} to be served"),
                    after: store_core::conformance::deadline(CRD_READY_TIMEOUT),
                });
            }
            // kube-apiserver gives no event for "now serving"; poll briefly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a namespace named `<prefix>-<random>` and returns its name.
    /// Namespaces are never deleted: without kube-controller-manager a real
    /// control plane cannot finish deleting one.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let suffix: String = (0..6)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[fastrand::usize(..36)]))
            .collect();
        let name = format!("{prefix}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(self.client()?);
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| Error::Request {
                what: format!("creating namespace {name}"),
                source,
            })?;
        Ok(name)
    }
}
