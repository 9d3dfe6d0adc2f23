//! The shared state.

use super::*;

/// The namespaces the controller exempted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, StoreValue)]
#[store(key = "exempt-namespaces", schema)]
pub(crate) struct ExemptNamespaces {
    /// Namespace name to the uid of the namespace object that was exempted.
    pub(crate) namespaces: BTreeMap<String, String>,
}

impl ExemptNamespaces {
    /// The exempted names, from a store's local view.
    pub(crate) fn names(store: &Store) -> Result<BTreeSet<String>> {
        Ok(store
            .get(Self::key())?
            .map(|exempt| exempt.namespaces.keys().cloned().collect())
            .unwrap_or_default())
    }
}

/// What the admission handler refuses outside exempt namespaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, StoreValue)]
#[store(key = "policy", schema)]
pub(crate) struct Policy {
    /// Image tags refused; an image without a tag counts as `latest`.
    pub(crate) denied_tags: BTreeSet<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            denied_tags: BTreeSet::from(["latest".to_owned()]),
        }
    }
}

impl Policy {
    /// The denied tag `image` carries, if any. An image pinned by digest has none.
    pub(crate) fn denied_tag<'a>(&self, image: &'a str) -> Option<&'a str> {
        if image.contains('@') {
            return None;
        }
        let name = image.rsplit('/').next().unwrap_or(image);
        let tag = name.split_once(':').map_or("latest", |(_, tag)| tag);
        self.denied_tags.contains(tag).then_some(tag)
    }

    pub(crate) fn describe(&self) -> String {
        let tags: Vec<&str> = self.denied_tags.iter().map(String::as_str).collect();
        format!("denied tags {}", tags.join(", "))
    }
}

/// Seeds the default policy once: the first replica's compare-and-set on
/// absence wins, the others see a conflict and keep what is there. An
/// unknown outcome means the same here: a write conditional on absence whose
/// retry conflicted found a policy there, this replica's or another's.
pub(crate) async fn seed_policy(store: Store) -> Result<()> {
    if store.get(Policy::key())?.is_some() {
        return Ok(());
    }
    match store
        .compare_and_set(Policy::key(), Precondition::Absent, &Policy::default())
        .await
    {
        Ok(_) | Err(Error::Conflict { .. } | Error::OutcomeUnknown { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The operator's store in `namespace` (default: the client's), not yet
/// started: callers add hooks, then `open` it or `start` it and serve its
/// webhook while it syncs.
pub(crate) async fn store_builder(
    client: kube::Client,
    namespace: Option<&str>,
    name: &str,
) -> Result<StoreBuilder> {
    let backend = KubeBackend::builder(client, STORE);
    let backend = match namespace {
        Some(namespace) => backend.namespace(namespace),
        None => backend,
    };
    Ok(Store::builder()
        .name(name)
        .timeout(DEADLINE)
        .backend(backend.build().await?)
        .on_ready("seed-policy", seed_policy))
}
