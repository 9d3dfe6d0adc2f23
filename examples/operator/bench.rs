//! `--bench-admission`: admission latency as kube-apiserver sees it, and the
//! admissions per second one replica answers, on a real control plane.
//!
//! Latency: Pods created through the API server in a namespace the webhooks
//! (validating and mutating, one replica) are registered for, interleaved
//! with the same creates in a namespace they are not; the overhead is the
//! difference of the percentiles. Meanwhile both replicas write to the store
//! 100 times a second. Throughput: concurrent keep-alive HTTPS clients post
//! reviews straight to one replica.

use std::time::Instant;

use super::*;

/// Pods created in each namespace (after the warm-up).
const CREATES: usize = 1000;

/// Creates before measuring, in each namespace.
const WARM_UP: usize = 30;

/// Store writes per second, spread over the replicas.
const WRITES_PER_SECOND: u64 = 100;

/// Concurrent clients posting reviews for the throughput figure.
const CLIENTS: usize = 16;

/// How long the throughput run lasts.
const THROUGHPUT_RUN: Duration = Duration::from_secs(5);

pub(crate) async fn bench_admission() -> Result<(), BoxError> {
    let plane = ControlPlane::start().await?;
    let cluster = TestCluster::from_control_plane(Arc::new(plane));
    cluster
        .apply_crd(&store_kube::resource::store_shard_crd())
        .await?;
    let admin = cluster.client()?;
    let create_namespace = |name: &str, routed: Option<&str>| {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        namespace.metadata.labels =
            routed.map(|replica| BTreeMap::from([(WEBHOOK_LABEL.to_owned(), replica.to_owned())]));
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        async move { namespaces.create(&PostParams::default(), &namespace).await }
    };
    create_namespace(NAME, None).await?;
    let replicas = vec![
        Replica::start(0, cluster.client()?).await?,
        Replica::start(1, cluster.client()?).await?,
    ];
    let answering = &replicas[0];
    let url = answering.listener.url();
    WebhookSpec {
        name: &answering.name,
        target: Target::Url(&url),
        ca_pem: Some(&answering.listener.certificates.ca_pem),
        namespace_selector: routed_to(&answering.name),
        failure_policy: FailurePolicy::Fail,
    }
    .register(admin.clone())
    .await?;
    create_namespace("bench-webhooks", Some(&answering.name)).await?;
    create_namespace("bench-plain", None).await?;

    let writers: Vec<JoinHandle<()>> = replicas
        .iter()
        .map(|replica| {
            let store = replica.store.clone();
            let key = format!("load-{}", replica.name);
            let every =
                Duration::from_micros(1_000_000 * replicas.len() as u64 / WRITES_PER_SECOND);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                for count in 0u64.. {
                    ticks.tick().await;
                    if store.set(key.as_str(), &count).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let writes_before = replicas[0]
        .store
        .get::<u64>("load-operator-0")?
        .map_or(0, |n| *n);

    let with: Api<Pod> = Api::namespaced(admin.clone(), "bench-webhooks");
    let without: Api<Pod> = Api::namespaced(admin.clone(), "bench-plain");
    // The API server calls the webhooks a moment after they are registered.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let probe = pod("probe", "nginx:1.27");
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        if let Ok(created) = with.create(&params, &probe).await
            && created.annotations().contains_key(ADMITTED_BY_ANNOTATION)
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the webhooks were never called".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut with_times = Vec::with_capacity(CREATES);
    let mut without_times = Vec::with_capacity(CREATES);
    for index in 0..WARM_UP + CREATES {
        for (api, times, hooked) in [
            (&with, &mut with_times, true),
            (&without, &mut without_times, false),
        ] {
            let started = Instant::now();
            let created = api
                .create(
                    &PostParams::default(),
                    &pod(&format!("pod-{index}"), "nginx:1.27"),
                )
                .await?;
            let took = started.elapsed();
            if hooked && !created.annotations().contains_key(ADMITTED_BY_ANNOTATION) {
                return Err("a Pod was created without the webhooks".into());
            }
            if index >= WARM_UP {
                times.push(took);
            }
        }
    }
    let writes_after = replicas[0]
        .store
        .get::<u64>("load-operator-0")?
        .map_or(0, |n| *n);
    let handled = handling_times(answering).await?;

    let throughput = throughput(answering).await?;
    for writer in writers {
        writer.abort();
    }

    let (p50_with, p99_with) = (
        percentile(&mut with_times, 50),
        percentile(&mut with_times, 99),
    );
    let (p50_without, p99_without) = (
        percentile(&mut without_times, 50),
        percentile(&mut without_times, 99),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "pod creates through the API server, {CREATES} each, store writes at {WRITES_PER_SECOND}/s"
    );
    println!(
        "(replica 0 wrote {} of its share meanwhile)",
        writes_after.saturating_sub(writes_before)
    );
    println!("| | p50 | p99 |");
    println!("| --- | --- | --- |");
    println!(
        "| create, no webhooks | {:.2} ms | {:.2} ms |",
        ms(p50_without),
        ms(p99_without)
    );
    println!(
        "| create, both webhooks | {:.2} ms | {:.2} ms |",
        ms(p50_with),
        ms(p99_with)
    );
    println!(
        "| webhook overhead | {:.2} ms | {:.2} ms |",
        ms(p50_with) - ms(p50_without),
        ms(p99_with) - ms(p99_without)
    );
    println!("{handled}");
    println!(
        "peak: one replica answered {:.0} admissions/s ({CLIENTS} keep-alive HTTPS clients, validate and mutate alternating, {}s)",
        throughput,
        THROUGHPUT_RUN.as_secs()
    );
    for replica in replicas {
        replica.stop().await?;
    }
    Ok(())
}

fn pod(name: &str, image: &str) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.to_owned());
    pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: "main".to_owned(),
            image: Some(image.to_owned()),
            ..Default::default()
        }],
        ..Default::default()
    });
    pod
}

/// The `p`th percentile (nearest rank).
fn percentile(times: &mut [Duration], p: usize) -> Duration {
    times.sort_unstable();
    let rank = (times.len() * p).div_ceil(100).max(1);
    times.get(rank - 1).copied().unwrap_or_default()
}

/// Admissions per second one replica answers, every answer checked.
async fn throughput(replica: &Replica) -> Result<f64> {
    let client = replica.client()?;
    let started = Instant::now();
    let until = started + THROUGHPUT_RUN;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CLIENTS {
        let client = client.clone();
        workers.spawn(async move {
            let mut connection = client.connect().await?;
            let mut answered = 0u64;
            while Instant::now() < until {
                let endpoint = if answered.is_multiple_of(2) {
                    Endpoint::Validate
                } else {
                    Endpoint::Mutate
                };
                let body = pod_review(
                    &format!("{worker}-{answered}"),
                    "web",
                    "bench",
                    "nginx:1.27",
                )
                .to_string()
                .into_bytes();
                let (code, answer) = connection
                    .request(hyper::Method::POST, endpoint.path(), body)
                    .await?;
                if code != hyper::StatusCode::OK || !read_answer(&answer)?.allowed {
                    return Err(demo_error(format!("unexpected answer {code}")));
                }
                answered += 1;
            }
            Ok::<u64, Error>(answered)
        });
    }
    let mut total = 0;
    while let Some(done) = workers.join_next().await {
        total += done.map_err(|e| demo_error(e.to_string()))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The webhook's own handling times so far, from its `/metrics` histogram:
/// the share of requests answered within 1 ms and within 5 ms, per endpoint.
async fn handling_times(replica: &Replica) -> Result<String> {
    let (_, text) = replica
        .client()?
        .request(hyper::Method::GET, "/metrics", Vec::new())
        .await?;
    let text = String::from_utf8_lossy(&text);
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let mut lines = Vec::new();
    for endpoint in ["mutate", "validate"] {
        let count = value(&format!(
            "{DURATION_METRIC}_count{{endpoint=\"{endpoint}\"}}"
        ));
        let within = |le: &str| {
            let bucket = value(&format!(
                "{DURATION_METRIC}_bucket{{endpoint=\"{endpoint}\",le=\"{le}\"}}"
            ));
            100.0 * bucket / count.max(1.0)
        };
        lines.push(format!(
            "webhook-side handling of /{endpoint} ({count} requests): {:.1}% within 1 ms, {:.1}% within 5 ms",
            within("0.001"),
            within("0.005")
        ));
    }
    Ok(lines.join("\n"))
}
