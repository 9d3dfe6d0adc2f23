//! The `store` command end to end, on the fake API server and on a real
//! control plane: reading and writing a store that a Rust replica uses,
//! dump and restore, Pepr's layout, and bad input getting one clear line and
//! the right exit code.

mod support;

use std::time::Duration;

use clap::Parser;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use store_cli::{Cli, Failure};
use store_core::Store;
use store_kube::KubeBackend;
use store_kube::resource::{pepr_store_crd, pepr_store_resource, store_shard_crd};
use store_kube_testing::{TestCluster, on_both_tiers};
use support::{jsonl, seeded, wait_for};

/// Runs `store <args>` in-process against `cluster`, returning what it printed.
async fn store_cmd(cluster: &TestCluster, args: &[impl AsRef<str>]) -> Result<String, Failure> {
    let kubeconfig = cluster.kubeconfig_path().to_string_lossy().into_owned();
    let mut argv = vec!["store", "--kubeconfig", kubeconfig.as_str()];
    argv.extend(args.iter().map(AsRef::as_ref));
    let cli = Cli::try_parse_from(argv).expect("a valid command line");
    let mut out = Vec::new();
    store_cli::run(cli, &mut out).await?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

/// A native store with a few keys, written by a Rust replica as an
/// application would.
async fn app_store(cluster: &TestCluster, namespace: &str, name: &str) -> Store {
    let backend = KubeBackend::builder(cluster.client().expect("client"), name)
        .namespace(namespace)
        .shards(3)
        .build()
        .await
        .expect("backend");
    seeded(backend).await
}

async fn a_store_written_by_an_application_can_be_read_and_changed(cluster: &TestCluster) {
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let ns = cluster.create_namespace("cli").await.expect("namespace");
    let app = app_store(cluster, &ns, "app").await;
    let target = ["-n", ns.as_str(), "--store", "app"];
    let with = |more: &[&str]| -> Vec<String> {
        target.iter().chain(more).map(|s| (*s).to_owned()).collect()
    };

    // ls: every key with version, size and shard; values never shown.
    let table = store_cmd(cluster, &with(&["ls"])).await.expect("ls");
    let header = table.lines().next().expect("a header");
    assert!(
        header.starts_with("KEY") && header.contains("SHARD"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(!table.contains("hunter2"), "{table}");
    let rows = jsonl(
        &store_cmd(cluster, &with(&["ls", "-o", "jsonl"]))
            .await
            .expect("ls"),
    );
    let token = rows
        .iter()
        .find(|r| r["key"] == "token")
        .expect("token listed");
    assert_eq!(token["bytes"], "\"hunter2-cli-secret\"".len());
    assert!(token["shard"].as_str().expect("shard").starts_with("app-"));
    assert!(token["version"].as_u64().expect("version") > 0);
    let only = jsonl(
        &store_cmd(cluster, &with(&["ls", "pol", "-o", "jsonl"]))
            .await
            .expect("ls"),
    );
    assert_eq!(only.len(), 1);

    // get: redacted unless asked, pretty JSON when asked.
    let redacted = store_cmd(cluster, &with(&["get", "token"]))
        .await
        .expect("get");
    assert!(
        !redacted.contains("hunter2") && redacted.contains("bytes"),
        "{redacted}"
    );
    let shown = store_cmd(cluster, &with(&["get", "policy", "--show-values"]))
        .await
        .expect("get");
    assert_eq!(
        serde_json::from_str::<Value>(&shown).expect("JSON"),
        json!({"denied_tag": "latest"})
    );

    // set and rm go through the store: the application sees them.
    store_cmd(
        cluster,
        &with(&["set", "policy", r#"{"denied_tag":"dev"}"#]),
    )
    .await
    .expect("set");
    store_cmd(cluster, &with(&["set", "note", "plain words", "--string"]))
        .await
        .expect("set --string");
    store_cmd(cluster, &with(&["rm", "token"]))
        .await
        .expect("rm");
    wait_for("the application to see the tool's writes", || {
        app.get::<Value>("policy").ok().flatten().as_deref() == Some(&json!({"denied_tag": "dev"}))
            && app
                .get::<String>("note")
                .ok()
                .flatten()
                .as_deref()
                .map(String::as_str)
                == Some("plain words")
            && app.get::<String>("token").ok().flatten().is_none()
    })
    .await;

    // Preconditions.
    let version = app
        .get_versioned::<Value>("policy")
        .expect("get")
        .expect("present")
        .version
        .0
        .to_string();
    let conflict = store_cmd(cluster, &with(&["set", "policy", "1", "--if-absent"])).await;
    assert!(
        matches!(conflict, Err(Failure::Conflict(_))),
        "{conflict:?}"
    );
    let stale = store_cmd(cluster, &with(&["set", "policy", "1", "--if-version", "1"])).await;
    assert!(matches!(stale, Err(Failure::Conflict(_))), "{stale:?}");
    store_cmd(
        cluster,
        &with(&["set", "policy", "2", "--if-version", version.as_str()]),
    )
    .await
    .expect("the current version holds");

    // Bad input: one clear error each, nothing written.
    let bad_json = store_cmd(cluster, &with(&["set", "policy", "{not json"])).await;
    assert!(
        matches!(&bad_json, Err(Failure::BadInput(m)) if m.contains("not JSON")),
        "{bad_json:?}"
    );
    let bad_key = store_cmd(cluster, &with(&["set", "bad\u{1}key", "1"])).await;
    assert!(matches!(bad_key, Err(Failure::Refused(_))), "{bad_key:?}");
    let missing = store_cmd(cluster, &with(&["get", "never-written"])).await;
    assert!(matches!(missing, Err(Failure::NotFound(_))), "{missing:?}");
    let unknown = store_cmd(cluster, &["-n", ns.as_str(), "--store", "nope", "ls"]).await;
    assert!(
        matches!(&unknown, Err(Failure::NotFound(m)) if m.contains("no store `nope`")),
        "{unknown:?}"
    );
    let unnamed = store_cmd(cluster, &["-n", ns.as_str(), "ls"]).await;
    assert!(matches!(unnamed, Err(Failure::BadInput(_))), "{unnamed:?}");
    assert_eq!(
        app.get::<Value>("policy").expect("get").as_deref(),
        Some(&json!(2)),
        "refused writes changed nothing"
    );
}

async fn dump_and_restore_round_trip_and_restore_is_idempotent(cluster: &TestCluster) {
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let ns = cluster.create_namespace("cli").await.expect("namespace");
    let _app = app_store(cluster, &ns, "src").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("src.jsonl");
    let file_arg = file.to_string_lossy().into_owned();
    store_cmd(
        cluster,
        &[
            "-n",
            ns.as_str(),
            "--store",
            "src",
            "dump",
            file_arg.as_str(),
        ],
    )
    .await
    .expect("dump");
    let dumped = std::fs::read_to_string(&file).expect("dump file");
    assert_eq!(dumped.lines().count(), 3);
    assert!(dumped.contains("hunter2-cli-secret"), "a dump keeps values");

    // Into a fresh store, twice: the second run changes nothing.
    let target = app_store(cluster, &ns, "dst").await;
    target.clear().await.expect("clear");
    target.set_and_wait("existing", &1).await.expect("set");
    let args = [
        "-n",
        ns.as_str(),
        "--store",
        "dst",
        "restore",
        file_arg.as_str(),
    ];
    store_cmd(cluster, &args).await.expect("restore");
    wait_for("the restored keys", || target.len() == 4).await;
    let before = target
        .get_versioned::<Value>("policy")
        .expect("get")
        .expect("restored");
    let again = store_cmd(cluster, &[&args[..], &["-o", "json"]].concat())
        .await
        .expect("again");
    assert_eq!(jsonl(&again)[0][0]["written"], 3);
    let after = target
        .get_versioned::<Value>("policy")
        .expect("get")
        .expect("kept");
    assert_eq!(
        before.version, after.version,
        "restoring again changes nothing"
    );
    assert_eq!(*after.value, json!({"denied_tag": "latest"}));

    // --keep-existing leaves what is there.
    target.set_and_wait("token", &"newer").await.expect("set");
    let kept = store_cmd(
        cluster,
        &[&args[..], &["--keep-existing", "-o", "json"]].concat(),
    )
    .await
    .expect("restore");
    assert_eq!(jsonl(&kept)[0][0]["kept"], 3);
    assert_eq!(
        target
            .get::<String>("token")
            .expect("get")
            .as_deref()
            .map(String::as_str),
        Some("newer")
    );

    // A bad line refuses the whole file before anything is written.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"key\":\"a\",\"value\":1}\nnot json\n").expect("write");
    let bad_arg = bad.to_string_lossy().into_owned();
    let refused = store_cmd(
        cluster,
        &[
            "-n",
            ns.as_str(),
            "--store",
            "dst",
            "restore",
            bad_arg.as_str(),
        ],
    )
    .await;
    assert!(
        matches!(&refused, Err(Failure::BadInput(m)) if m.contains("line 2") && m.contains("nothing was written")),
        "{refused:?}"
    );
    assert!(target.get::<i32>("a").expect("get").is_none());
}

async fn watch_prints_changes_as_they_happen(cluster: &TestCluster) {
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let ns = cluster.create_namespace("cli").await.expect("namespace");
    let app = app_store(cluster, &ns, "watched").await;
    let writer = async {
        // Until the watch has printed both changes, keep the changes coming.
        for i in 0..200u32 {
            app.set_and_wait("jobs/1", &i).await.expect("set");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let args = [
        "-n",
        ns.as_str(),
        "--store",
        "watched",
        "watch",
        "jobs/",
        "--count",
        "2",
        "-o",
        "jsonl",
    ];
    let watching = store_cmd(cluster, &args);
    let printed = tokio::select! {
        printed = watching => printed.expect("watch"),
        () = writer => panic!("the watch printed nothing while 200 changes were made"),
    };
    let lines = jsonl(&printed);
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l["key"] == "jobs/1" && l["op"] == "set" && l.get("value").is_none())
    );
    assert!(lines[0]["revision"].as_u64() < lines[1]["revision"].as_u64());
}

/// Module `uuid`'s `PeprStore` object in a fresh namespace, as a Pepr pod
/// leaves it: the placeholder and `data`. Returns the namespace and the API.
async fn pepr_object(
    cluster: &TestCluster,
    uuid: &str,
    data: Value,
) -> (String, Api<DynamicObject>) {
    cluster.apply_crd(&pepr_store_crd()).await.expect("CRD");
    let ns = cluster.create_namespace("cli").await.expect("namespace");
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().expect("client"),
        &ns,
        &pepr_store_resource(),
    );
    let mut data = data;
    data["__pepr_do_not_delete__"] = json!("k-thx-bye");
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "pepr.dev/v1",
        "kind": "PeprStore",
        "metadata": {
            "name": format!("pepr-{uuid}-store"),
            "namespace": ns,
            "labels": { "pepr.dev-cacheID": "1" }
        },
        "data": data,
    }))
    .expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
    (ns, api)
}

/// Looking into a Pepr store also changes nothing in it: its v1 keys are
/// left for `migrate-pepr` (or the next writer) to move.
async fn a_pepr_store_reads_as_its_text(cluster: &TestCluster) {
    let (ns, api) = pepr_object(
        cluster,
        "cli",
        json!({
            "hello-v2-json": "{\"n\":1}",
            "hello-v2-text": "yep",
            "hello-old": "v1",
            "other-v2-x": "not hello's"
        }),
    )
    .await;
    let version = || async {
        let object = api.get("pepr-cli-store").await.expect("get");
        (
            object.metadata.resource_version,
            object.data["data"].clone(),
        )
    };
    let before = version().await;
    let target = ["-n", ns.as_str(), "--pepr", "cli", "--capability", "hello"];
    let ls = jsonl(
        &store_cmd(cluster, &[&target[..], &["ls", "-o", "jsonl"]].concat())
            .await
            .expect("ls"),
    );
    let keys: Vec<&str> = ls.iter().filter_map(|r| r["key"].as_str()).collect();
    assert_eq!(keys, ["json", "text"]);
    let json_value = store_cmd(
        cluster,
        &[&target[..], &["get", "json", "--show-values", "-o", "json"]].concat(),
    )
    .await
    .expect("get");
    assert_eq!(jsonl(&json_value)[0]["value"], json!({"n": 1}));
    let text = store_cmd(
        cluster,
        &[&target[..], &["get", "text", "--show-values", "-o", "json"]].concat(),
    )
    .await
    .expect("get");
    assert_eq!(jsonl(&text)[0]["value"], "yep");
    for command in [&["stat"][..], &["dump", "-"], &["watch", "--count", "0"]] {
        store_cmd(cluster, &[&target[..], command].concat())
            .await
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }
    assert_eq!(version().await, before, "reading wrote to the store");
}

async fn stat_shows_each_object_against_its_budget(cluster: &TestCluster) {
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let ns = cluster.create_namespace("cli").await.expect("namespace");
    let _app = app_store(cluster, &ns, "stats").await;
    let rows = jsonl(
        &store_cmd(
            cluster,
            &["-n", ns.as_str(), "--store", "stats", "stat", "-o", "jsonl"],
        )
        .await
        .expect("stat"),
    );
    assert_eq!(rows.len(), 4, "three shards and the total: {rows:?}");
    for (i, row) in rows[..3].iter().enumerate() {
        assert_eq!(row["object"], format!("stats-{i}"));
        assert!(row["bytes"].as_u64().expect("bytes") > 100, "{row}");
        assert!(row["fill"].as_str().expect("fill").ends_with('%'), "{row}");
    }
    let total = &rows[3];
    assert_eq!(total["object"], "total");
    assert_eq!(total["keys"], 3);
    let shard_keys: u64 = rows[..3]
        .iter()
        .map(|r| r["keys"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(shard_keys, 3);
    let table = store_cmd(cluster, &["-n", ns.as_str(), "--store", "stats", "stat"])
        .await
        .expect("stat");
    assert!(table.starts_with("OBJECT"), "{table}");
}

async fn migrate_pepr_shows_then_moves_only_the_capabilitys_v1_keys(cluster: &TestCluster) {
    let (ns, api) = pepr_object(
        cluster,
        "mig",
        json!({
            "hello-old": "v1 of hello",
            "hello-pepr-mine": "v1 of hello-pepr",
            "other-x": "v1 of other"
        }),
    )
    .await;
    let target = ["-n", ns.as_str(), "--pepr", "mig", "--capability", "hello"];
    let data = || async { api.get("pepr-mig-store").await.expect("get").data["data"].clone() };

    let dry = jsonl(
        &store_cmd(
            cluster,
            &[
                &target[..],
                &["migrate-pepr", "--others", "hello-pepr", "-o", "jsonl"],
            ]
            .concat(),
        )
        .await
        .expect("dry run"),
    );
    assert_eq!(dry.len(), 1, "{dry:?}");
    assert_eq!(dry[0]["v1"], "hello-old");
    assert_eq!(dry[0]["v2"], "hello-v2-old");
    assert_eq!(dry[0]["action"], "copy, then remove the original");
    let before = data().await;
    assert!(
        before.get("hello-v2-old").is_none(),
        "a dry run changes nothing"
    );

    let applied = jsonl(
        &store_cmd(
            cluster,
            &[
                &target[..],
                &[
                    "migrate-pepr",
                    "--others",
                    "hello-pepr",
                    "--apply",
                    "--removal-delay",
                    "0s",
                    "-o",
                    "jsonl",
                ],
            ]
            .concat(),
        )
        .await
        .expect("apply"),
    );
    assert_eq!(applied[0]["action"], "migrated");
    let after = data().await;
    assert_eq!(after["hello-v2-old"], "v1 of hello");
    assert!(after.get("hello-old").is_none(), "{after}");
    assert_eq!(after["hello-pepr-mine"], "v1 of hello-pepr", "not hello's");
    assert_eq!(after["other-x"], "v1 of other");

    let native = store_cmd(
        cluster,
        &["-n", ns.as_str(), "--store", "nope", "migrate-pepr"],
    )
    .await;
    assert!(matches!(native, Err(Failure::NotFound(_))), "{native:?}");
}

on_both_tiers!(
    a_store_written_by_an_application_can_be_read_and_changed,
    multi_thread
);
on_both_tiers!(
    dump_and_restore_round_trip_and_restore_is_idempotent,
    multi_thread
);
on_both_tiers!(watch_prints_changes_as_they_happen, multi_thread);
on_both_tiers!(a_pepr_store_reads_as_its_text, multi_thread);
on_both_tiers!(stat_shows_each_object_against_its_budget, multi_thread);
on_both_tiers!(
    migrate_pepr_shows_then_moves_only_the_capabilitys_v1_keys,
    multi_thread
);

/// The binary itself: one line on standard error and the documented exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_says_what_went_wrong_in_one_line_and_its_exit_code() {
    let cluster = TestCluster::fake().await.expect("fake");
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let run = |args: &'static [&'static str]| {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_store"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args)
                .output()
                .expect("the binary runs")
        })
    };
    let unknown = run(&["-n", "default", "--store", "nope", "ls"])
        .await
        .expect("ran");
    assert_eq!(unknown.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("store: no store `nope`"), "{stderr}");
    let usage = run(&["frobnicate"]).await.expect("ran");
    assert_eq!(usage.status.code(), Some(2));
    let completions = run(&["completions", "bash"]).await.expect("ran");
    assert_eq!(completions.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_store"));
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), `dump` and
/// `restore` draw a progress bar on standard error; piped, they print none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_and_restore_draw_a_progress_bar_on_a_terminal_only() {
    let cluster = TestCluster::fake().await.expect("fake");
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let ns = cluster.create_namespace("cli").await.expect("namespace");
    let _app = app_store(&cluster, &ns, "bars").await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("bars.jsonl");
    let store = |command: &str| {
        format!(
            "{} --kubeconfig {} -n {ns} --store bars {command} {}",
            env!("CARGO_BIN_EXE_store"),
            cluster.kubeconfig_path().display(),
            file.display(),
        )
    };
    let on_a_terminal = |command: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("script")
                .args(["--quiet", "--return", "--command", &command, "/dev/null"])
                .output()
                .expect("util-linux `script` runs (Debian's bsdutils)")
        })
    };
    for (command, what) in [("dump", "dump"), ("restore", "restore")] {
        let out = on_a_terminal(store(command)).await.expect("ran");
        let seen = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}: {seen}");
        assert!(
            seen.contains(&format!("{what} [")) && seen.contains("/3 keys"),
            "{command} drew no bar on a terminal: {seen:?}"
        );
    }
    let piped = std::process::Command::new(env!("CARGO_BIN_EXE_store"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["-n", &ns, "--store", "bars", "restore"])
        .arg(&file)
        .output()
        .expect("the binary runs");
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("keys"), "a bar on a pipe: {stderr:?}");
}
