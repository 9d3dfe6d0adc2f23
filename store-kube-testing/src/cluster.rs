//! [`TestCluster`]: one handle over both tiers, so a test written once as
//! `async fn case(cluster: &TestCluster)` runs on the fake and on a real
//! control plane.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

use super::control_plane::ControlPlane;
use super::error::{Error, Result};
use super::server::FakeApiServer;

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
    /// use. [`Error::AssetsMissing`] when no binaries are provisioned: mark
    /// the test `#[ignore]`d where none are (see [the crate docs](crate#the-same-test-on-both-tiers)),
    /// so that it says it did not run rather than passing.
    pub async fn real() -> Result<Self> {
        let plane = SHARED_CONTROL_PLANE
            .get_or_try_init(|| async { ControlPlane::start().await.map(Arc::new) })
            .await?;
        Ok(Self::from_control_plane(Arc::clone(plane)))
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

    /// Creates or updates a CRD and returns once its resource is served, on
    /// either tier.
    pub async fn apply_crd(&self, crd: &CustomResourceDefinition) -> Result<()> {
        match &self.tier {
            Tier::Fake(server) => server.apply_crd(crd),
            Tier::Real(plane) => plane.apply_crd(crd).await,
        }
    }

    /// [`apply_crd`](Self::apply_crd) for each of a set of CRDs, such as the
    /// ones an operator under test needs installed.
    pub async fn apply_crds(&self, crds: &[CustomResourceDefinition]) -> Result<()> {
        for crd in crds {
            self.apply_crd(crd).await?;
        }
        Ok(())
    }

    /// Creates a namespace named `<prefix>-<random>` and returns its name.
    /// Namespaces are never deleted: without kube-controller-manager a real
    /// control plane cannot finish deleting one.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let name = crate::unique_name(prefix);
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
