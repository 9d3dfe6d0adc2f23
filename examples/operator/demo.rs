//! The demonstration: several replicas in one process.

use super::*;

/// One replica, as one pod of the Deployment would run it: its own client,
/// backend, store, controller, sweeper and HTTPS webhook server.
pub(crate) struct Replica {
    pub(crate) name: String,
    pub(crate) store: Store,
    pub(crate) reconciled: watch::Receiver<BTreeMap<String, String>>,
    pub(crate) webhook: Webhook,
    pub(crate) listener: Listener,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Replica {
    /// Starts replica `index` and waits until its store and webhook are ready.
    pub(crate) async fn start(index: usize, client: kube::Client) -> Result<Self> {
        let address = SocketAddr::from(([127, 0, 0, 1], 0));
        let replica = Self::start_on(index, client, address, None, |builder| builder).await?;
        replica.ready().await?;
        Ok(replica)
    }

    /// Starts replica `index` with its webhook server on `address`, serving
    /// `certificates` (or fresh ones), and returns at once: the webhook
    /// answers `503` until the store is ready. `hooks` may add on-ready hooks
    /// to the store.
    pub(crate) async fn start_on(
        index: usize,
        client: kube::Client,
        address: SocketAddr,
        certificates: Option<Certificates>,
        hooks: impl FnOnce(StoreBuilder) -> StoreBuilder,
    ) -> Result<Self> {
        let name = format!("operator-{index}");
        let (tcp, listener) = Listener::loopback(address, certificates).await?;
        let webhook = Webhook::new(&name);
        let server = webhook.serve(tcp, listener.certificates.server_config()?);
        let store = hooks(store_builder(client.clone(), Some(NAME), &name).await?).start();
        let ready = webhook.serve_when_ready(store.clone());
        let (reconciled, watching) = watch::channel(BTreeMap::new());
        let context = Arc::new(Context {
            store: store.clone(),
            reconciled,
        });
        let namespaces: Api<Namespace> = Api::all(client);
        let sweeper = sweep_every(store.clone(), namespaces.clone(), DEMO_SWEEP_EVERY);
        let tasks = vec![
            server,
            tokio::spawn(async move {
                // The controller and the sweeper write through the store: they
                // start once it is ready.
                if ready.await.is_ok_and(|ready| ready.is_ok()) {
                    tokio::join!(sweeper, run_controller(namespaces, context, false));
                }
            }),
        ];
        Ok(Self {
            name,
            store,
            reconciled: watching,
            webhook,
            listener,
            tasks,
        })
    }

    /// Waits until the store is ready and the webhook answers from it.
    pub(crate) async fn ready(&self) -> Result<()> {
        self.store.ready().await?;
        let mut ready = self.webhook.subscribe();
        match tokio::time::timeout(DEADLINE, ready.wait_for(Option::is_some)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout {
                waiting_for: format!("{}'s webhook to be ready", self.name),
                timeout: DEADLINE,
            }),
        }
    }

    /// A client for this replica's webhook server.
    pub(crate) fn client(&self) -> Result<WebhookClient> {
        WebhookClient::new(self.listener.address, &self.listener.certificates)
    }

    /// Posts a review of a one-container Pod to this replica's `/validate`
    /// over HTTPS; returns the answer as one line, and the decision for
    /// comparing replicas.
    pub(crate) async fn ask(
        &self,
        pod: &str,
        namespace: &str,
        image: &str,
    ) -> Result<(String, (bool, String))> {
        let uid = format!("{}-{pod}-{namespace}", self.name);
        let body = pod_review(&uid, pod, namespace, image)
            .to_string()
            .into_bytes();
        let (code, answer) = self
            .client()?
            .request(hyper::Method::POST, Endpoint::Validate.path(), body)
            .await?;
        if code != hyper::StatusCode::OK {
            return Err(demo_error(format!(
                "{} answered {code}: {}",
                self.name,
                String::from_utf8_lossy(&answer)
            )));
        }
        let Answer {
            allowed, reason, ..
        } = read_answer(&answer)?;
        let line = if allowed {
            format!("{} admits pod {pod} in {namespace} ({reason})", self.name)
        } else {
            format!("{} denies pod {pod} in {namespace}: {reason}", self.name)
        };
        Ok((line, (allowed, reason)))
    }

    pub(crate) async fn stop(self) -> Result<()> {
        self.webhook.not_ready();
        for task in &self.tasks {
            task.abort();
        }
        // Aborted tasks end at their next await; waiting for that drops their
        // watches and connections before the API server goes away.
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await
    }
}

/// Asks every replica the same question, prints the answers and checks they agree.
pub(crate) async fn ask_all(
    replicas: &[Replica],
    pod: &str,
    namespace: &str,
    image: &str,
) -> Result<()> {
    let mut answers = BTreeSet::new();
    for replica in replicas {
        let (line, decision) = replica.ask(pod, namespace, image).await?;
        println!("{line}");
        answers.insert(decision);
    }
    if answers.len() > 1 {
        return Err(demo_error(format!(
            "replicas disagree on pod {pod} in {namespace}"
        )));
    }
    Ok(())
}

/// Waits until every replica's controller reconciled the namespaces at these
/// versions (so no older write is still in flight), then until every
/// replica's view shows `exempt`.
pub(crate) async fn converge(
    replicas: &[Replica],
    versions: &BTreeMap<String, String>,
    exempt: &[&str],
) -> Result<()> {
    for replica in replicas {
        let mut reconciled = replica.reconciled.clone();
        let caught_up = reconciled.wait_for(|seen| {
            versions
                .iter()
                .all(|(name, version)| seen.get(name) == Some(version))
        });
        match tokio::time::timeout(DEADLINE, caught_up).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                return Err(Error::Timeout {
                    waiting_for: format!("{} to reconcile every namespace", replica.name),
                    timeout: DEADLINE,
                });
            }
        }
    }
    let wanted: BTreeSet<String> = exempt.iter().map(|name| (*name).to_owned()).collect();
    for replica in replicas {
        let what = format!("{} to see the exemptions", replica.name);
        until(&replica.store, &what, |store| {
            Ok(ExemptNamespaces::names(store)? == wanted)
        })
        .await?;
    }
    for replica in replicas {
        if ExemptNamespaces::names(&replica.store)? != wanted {
            return Err(demo_error(format!("{} moved on", replica.name)));
        }
    }
    let agree = if replicas.len() == 1 {
        "1 replica agrees".to_owned()
    } else {
        format!("{} replicas agree", replicas.len())
    };
    let plural = if wanted.len() == 1 { "" } else { "s" };
    println!(
        "converged: {agree} on {} exempt namespace{plural}: {}",
        wanted.len(),
        list(&wanted)
    );
    Ok(())
}

/// Waits until `check` holds on the store's local view, with a deadline.
pub(crate) async fn until(
    store: &Store,
    what: &str,
    check: impl Fn(&Store) -> Result<bool>,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut changes = store.subscribe();
    loop {
        if check(store)? {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, changes.next())
            .await
            .is_err()
        {
            return Err(Error::Timeout {
                waiting_for: what.to_owned(),
                timeout: DEADLINE,
            });
        }
    }
}

/// A cluster admin's hand: creates, relabels and deletes namespaces.
pub(crate) struct Admin {
    pub(crate) namespaces: Api<Namespace>,
}

impl Admin {
    pub(crate) async fn create(&self, name: &str, exempt: bool) -> Result<String> {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        if exempt {
            namespace.metadata.labels = Some(BTreeMap::from([(
                EXEMPT_LABEL.to_owned(),
                "true".to_owned(),
            )]));
        }
        let created = self
            .namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(kube_error)?;
        Ok(created.resource_version().unwrap_or_default())
    }

    pub(crate) async fn label(&self, name: &str, exempt: bool) -> Result<String> {
        let value = if exempt { json!("true") } else { Value::Null };
        let patch = json!({ "metadata": { "labels": { EXEMPT_LABEL: value } } });
        let patched = self
            .namespaces
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_error)?;
        Ok(patched.resource_version().unwrap_or_default())
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        self.namespaces
            .delete(name, &DeleteParams::default())
            .await
            .map_err(kube_error)?;
        Ok(())
    }
}

pub(crate) async fn demo(cluster: &TestCluster, count: usize) -> Result<()> {
    let failed = |e: store_kube_testing::Error| Error::backend("test cluster", e);
    cluster
        .apply_crd(&store_kube::resource::store_shard_crd())
        .await
        .map_err(failed)?;
    let admin = Admin {
        namespaces: Api::all(cluster.client().map_err(failed)?),
    };
    admin.create(NAME, false).await?;
    let mut replicas = Vec::with_capacity(count);
    for index in 0..count {
        let replica = Replica::start(index, cluster.client().map_err(failed)?).await?;
        println!(
            "replica {index} ready: store `{STORE}` in namespace {NAME}, webhook on {}",
            replica.listener.url()
        );
        replicas.push(replica);
    }

    let mut versions = BTreeMap::new();
    for (name, exempt) in [("team-a", true), ("team-b", false), ("team-c", true)] {
        versions.insert(name.to_owned(), admin.create(name, exempt).await?);
    }
    println!("created namespaces team-a (exempt), team-b, team-c (exempt)");
    converge(&replicas, &versions, &["team-a", "team-c"]).await?;
    ask_all(&replicas, "web", "team-a", "nginx:latest").await?;
    ask_all(&replicas, "web", "team-b", "nginx:latest").await?;

    versions.insert("team-a".to_owned(), admin.label("team-a", false).await?);
    versions.insert("team-b".to_owned(), admin.label("team-b", true).await?);
    println!("relabelled: team-a no longer exempt, team-b exempt");
    converge(&replicas, &versions, &["team-b", "team-c"]).await?;
    ask_all(&replicas, "web", "team-a", "nginx:latest").await?;
    ask_all(&replicas, "web", "team-b", "nginx:latest").await?;

    admin.delete("team-c").await?;
    println!("deleted namespace team-c");
    converge(&replicas, &BTreeMap::new(), &["team-b"]).await?;

    let (first, last) = match (replicas.first(), replicas.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(demo_error("no replicas")),
    };
    println!(
        "{}",
        last.ask("api", "team-a", "registry.example/api:edge")
            .await?
            .0
    );
    let written = first
        .store
        .update(Policy::key(), |current| {
            let mut next = current.cloned().unwrap_or_default();
            next.denied_tags.insert("edge".to_owned());
            next
        })
        .await?;
    println!(
        "{} writes the policy: {}",
        first.name,
        written.value.describe()
    );
    until(
        &last.store,
        "the policy to reach the last replica",
        |store| Ok(store.get(Policy::key())?.as_deref() == Some(&*written.value)),
    )
    .await?;
    println!(
        "{} sees the policy written on {}: {}",
        last.name,
        first.name,
        written.value.describe()
    );
    println!(
        "{}",
        last.ask("api", "team-a", "registry.example/api:edge")
            .await?
            .0
    );

    if !cluster.is_fake() {
        through_the_api_server(cluster, first).await?;
    }

    for replica in replicas {
        replica.stop().await?;
    }
    println!(
        "stopped {count} replica{}",
        if count == 1 { "" } else { "s" }
    );
    Ok(())
}

/// On a real control plane: registers the first replica's webhooks for a
/// namespace routed to it and creates Pods there as kubectl would.
async fn through_the_api_server(cluster: &TestCluster, replica: &Replica) -> Result<()> {
    let failed = |e: store_kube_testing::Error| Error::backend("test cluster", e);
    let client = cluster.client().map_err(failed)?;
    let url = replica.listener.url();
    let spec = WebhookSpec {
        name: &replica.name,
        target: Target::Url(&url),
        ca_pem: Some(&replica.listener.certificates.ca_pem),
        namespace_selector: routed_to(&replica.name),
        failure_policy: FailurePolicy::Fail,
    };
    spec.register(client.clone()).await?;
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some("team-d".to_owned());
    namespace.metadata.labels = Some(BTreeMap::from([(
        WEBHOOK_LABEL.to_owned(),
        replica.name.clone(),
    )]));
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(kube_error)?;
    println!(
        "registered {}'s webhooks at {url} for namespace team-d",
        replica.name
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team-d");
    let pod = |name: &str, image: &str| -> Result<Pod> {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "containers": [{ "name": name, "image": image }] },
        }))
        .map_err(|e| Error::backend("pod", e))
    };
    // kube-apiserver calls a webhook a moment after it is registered.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let admitted = loop {
        match pods
            .create(&PostParams::default(), &pod("web", "nginx:1.27")?)
            .await
        {
            Ok(created) if created.annotations().contains_key(ADMITTED_BY_ANNOTATION) => {
                break created;
            }
            Ok(_) => {
                return Err(demo_error(
                    "a Pod was admitted before the webhooks were called",
                ));
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(kube_error(e)),
        }
    };
    println!(
        "kube-apiserver admits pod web (nginx:1.27) in team-d, annotated {ADMITTED_BY_ANNOTATION}={}",
        admitted
            .annotations()
            .get(ADMITTED_BY_ANNOTATION)
            .map_or("", String::as_str)
    );
    match pods
        .create(&PostParams::default(), &pod("edge", "nginx:latest")?)
        .await
    {
        Err(kube::Error::Api(status)) => println!(
            "kube-apiserver refuses pod edge (nginx:latest) in team-d: {}",
            status.message
        ),
        Err(e) => return Err(kube_error(e)),
        Ok(_) => return Err(demo_error("kube-apiserver admitted nginx:latest in team-d")),
    }
    spec.unregister(client).await
}
