//! The `store` command on a Redis store (`--redis URL --store NAME`), against
//! a real `redis-server` started for each test: reading and writing a store
//! that an application uses, dump and restore, watch, stat, and bad input
//! getting one clear line, the right exit code and no credentials.

mod support;

use std::process::Output;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use store_cli::{Cli, Failure};
use store_core::Store;
use store_redis::RedisBackend;
use store_redis_testing::{RedisServer, free_port};
use support::{jsonl, seeded, wait_for};

/// Runs `store --redis <url> --prefix app <args>` in-process, returning what
/// it printed.
async fn store_cmd(url: &str, args: &[&str]) -> Result<String, Failure> {
    let mut argv = vec!["store", "--redis", url, "--prefix", "app"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("a valid command line");
    let mut out = Vec::new();
    store_cli::run(cli, &mut out).await?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

/// Runs the `store` binary with `args`.
async fn store_bin(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_store"))
            .args(&args)
            .env_remove("STORE_REDIS_URL")
            .output()
            .expect("the binary runs")
    })
    .await
    .expect("ran")
}

/// The store `name` under prefix `app`, with a few keys, written by an
/// application.
async fn app_store(url: &str, name: &str) -> Store {
    let backend = RedisBackend::builder(url, name)
        .prefix("app")
        .build()
        .await
        .expect("backend");
    seeded(backend).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_by_an_application_can_be_read_and_changed() {
    let server = RedisServer::start();
    let url = server.url();
    let app = app_store(&url, "ops").await;

    let listed = store_cmd(&url, &["--store", "ops", "ls", "-o", "jsonl"])
        .await
        .expect("ls");
    let rows = jsonl(&listed);
    let keys: Vec<&str> = rows.iter().filter_map(|r| r["key"].as_str()).collect();
    assert_eq!(keys, ["exempt-namespaces", "policy", "token"]);
    assert!(rows.iter().all(|r| r["shard"] == "{app:ops}"));
    assert!(!listed.contains("hunter2"), "ls shows no value");

    let hidden = store_cmd(&url, &["--store", "ops", "get", "token"])
        .await
        .expect("get");
    assert!(!hidden.contains("hunter2"), "{hidden}");
    let shown = store_cmd(&url, &["--store", "ops", "get", "policy", "--show-values"])
        .await
        .expect("get");
    assert!(shown.contains(r#""denied_tag": "latest""#), "{shown}");

    store_cmd(&url, &["--store", "ops", "set", "replicas", "3"])
        .await
        .expect("set");
    wait_for("the application to see the new key", || {
        app.get::<u32>("replicas")
            .ok()
            .flatten()
            .is_some_and(|n| *n == 3)
    })
    .await;
    let version = app
        .get_versioned::<u32>("replicas")
        .expect("get")
        .expect("set")
        .version
        .0
        .to_string();
    let stale = store_cmd(
        &url,
        &["--store", "ops", "set", "replicas", "4", "--if-absent"],
    )
    .await;
    assert!(matches!(stale, Err(Failure::Conflict(_))), "{stale:?}");
    store_cmd(
        &url,
        &[
            "--store",
            "ops",
            "set",
            "replicas",
            "4",
            "--if-version",
            &version,
        ],
    )
    .await
    .expect("compare-and-set");
    wait_for("the application to see the update", || {
        app.get::<u32>("replicas")
            .ok()
            .flatten()
            .is_some_and(|n| *n == 4)
    })
    .await;

    store_cmd(&url, &["--store", "ops", "rm", "replicas"])
        .await
        .expect("rm");
    wait_for("the application to see the removal", || {
        app.get::<u32>("replicas").ok().flatten().is_none()
    })
    .await;
    let missing = store_cmd(&url, &["--store", "ops", "get", "replicas"]).await;
    assert!(
        matches!(&missing, Err(Failure::NotFound(m)) if m.contains("Redis store `ops`")),
        "{missing:?}"
    );
    let bad = store_cmd(&url, &["--store", "ops", "set", "k", "not json"]).await;
    assert!(matches!(bad, Err(Failure::BadInput(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_and_restore_round_trip_and_restore_is_idempotent() {
    let server = RedisServer::start();
    let url = server.url();
    let app = app_store(&url, "src").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("src.jsonl");
    let file_arg = file.to_string_lossy().into_owned();
    store_cmd(&url, &["--store", "src", "dump", &file_arg])
        .await
        .expect("dump");
    let dumped = std::fs::read_to_string(&file).expect("dump file");
    assert_eq!(dumped.lines().count(), 3);
    assert!(dumped.contains("hunter2-cli-secret"), "a dump keeps values");

    // The data is lost; the dump brings it back, and again changes nothing.
    app.clear().await.expect("clear");
    wait_for("the store to be empty", || app.is_empty()).await;
    let restored = store_cmd(
        &url,
        &["--store", "src", "restore", &file_arg, "-o", "json"],
    )
    .await
    .expect("restore");
    assert_eq!(jsonl(&restored)[0][0]["written"], 3);
    wait_for("the restored keys", || app.len() == 3).await;
    let before = app
        .get_versioned::<Value>("policy")
        .expect("get")
        .expect("restored");
    assert_eq!(*before.value, json!({"denied_tag": "latest"}));
    store_cmd(&url, &["--store", "src", "restore", &file_arg])
        .await
        .expect("restore again");
    let after = app
        .get_versioned::<Value>("policy")
        .expect("get")
        .expect("kept");
    assert_eq!(
        before.version, after.version,
        "restoring again changes nothing"
    );

    // --keep-existing leaves what is there.
    app.set_and_wait("token", &"newer").await.expect("set");
    let kept = store_cmd(
        &url,
        &[
            "--store",
            "src",
            "restore",
            &file_arg,
            "--keep-existing",
            "-o",
            "json",
        ],
    )
    .await
    .expect("restore");
    assert_eq!(jsonl(&kept)[0][0]["kept"], 3);
    assert_eq!(
        app.get::<String>("token")
            .expect("get")
            .as_deref()
            .map(String::as_str),
        Some("newer")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_changes_as_they_happen() {
    let server = RedisServer::start();
    let url = server.url();
    let app = app_store(&url, "watched").await;
    let writer = async {
        // Until the watch has printed both changes, keep the changes coming.
        for i in 0..200u32 {
            app.set_and_wait("jobs/1", &i).await.expect("set");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let watching = store_cmd(
        &url,
        &[
            "--store", "watched", "watch", "jobs/", "--count", "2", "-o", "jsonl",
        ],
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_shows_keys_bytes_revision_and_persistence() {
    let server = RedisServer::start();
    let url = server.url();
    let app = app_store(&url, "ops").await;
    let printed = store_cmd(&url, &["--store", "ops", "stat", "-o", "jsonl"])
        .await
        .expect("stat");
    let rows = jsonl(&printed);
    assert_eq!(rows.len(), 1, "{printed}");
    let row = &rows[0];
    assert_eq!(row["store"], "ops");
    assert_eq!(row["slot"], "{app:ops}");
    assert_eq!(row["keys"], 3);
    assert!(row["bytes"].as_u64().is_some_and(|b| b > 40), "{row}");
    assert_eq!(row["revision"], app.snapshot().revision.0.to_string());
    // The test server runs `appendonly yes` with `appendfsync everysec`.
    assert_eq!(row["appendonly"], "yes");
    assert_eq!(row["appendfsync"], "everysec");
    assert_eq!(row["crash-safe"], "no");
    let table = store_cmd(&url, &["--store", "ops", "stat"])
        .await
        .expect("stat");
    assert!(table.starts_with("STORE"), "{table}");
    assert!(!table.contains("hunter2"), "{table}");
}

/// The binary itself: one line on standard error, the documented exit code,
/// and never the password of the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_line_its_exit_code_and_no_credentials() {
    let server = RedisServer::start_with_args(&["--requirepass", "right-pw-7f3a"]);
    let good = format!("redis://:right-pw-7f3a@127.0.0.1:{}", server.port());
    let wrong = format!("redis://:wrong-pw-91c2@127.0.0.1:{}", server.port());
    let _app = app_store(&good, "ops").await;
    let run = |url: &str, args: &[&str]| {
        let mut argv = vec!["--redis".to_owned(), url.to_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        store_bin(argv)
    };
    let one_line = |output: &Output, code: i32, starts: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(starts), "{stderr}");
        assert!(
            !stderr.contains("-pw-") && !String::from_utf8_lossy(&output.stdout).contains("-pw-"),
            "a password was printed: {stderr}"
        );
    };

    let listed = run(&good, &["--prefix", "app", "--store", "ops", "ls"]).await;
    assert_eq!(listed.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("policy"));
    one_line(
        &run(&good, &["--prefix", "app", "--store", "nope", "ls"]).await,
        3,
        "store: no Redis store `nope` at redis://***@127.0.0.1",
    );
    one_line(
        &run(&wrong, &["--prefix", "app", "--store", "ops", "ls"]).await,
        2,
        "store: Redis at redis://***@127.0.0.1",
    );
    one_line(
        &run(
            &good,
            &["--prefix", "app", "--store", "ops", "migrate-pepr"],
        )
        .await,
        2,
        "store: migrate-pepr",
    );
    one_line(
        &run(&good, &["--prefix", "app", "ls"]).await,
        2,
        "store: name the store on Redis",
    );
    one_line(
        &run(&good, &["--prefix", "a{b", "--store", "ops", "ls"]).await,
        2,
        "store: invalid key prefix",
    );
    one_line(
        &run("http://127.0.0.1:6379", &["--store", "ops", "ls"]).await,
        2,
        "store: invalid Redis URL",
    );
    // Nothing listens there.
    let closed = format!("redis://:nobody-pw-0@127.0.0.1:{}", free_port());
    one_line(
        &run(&closed, &["--store", "ops", "--timeout", "2s", "ls"]).await,
        6,
        "store: cannot reach Redis at redis://***@127.0.0.1",
    );
    // `--redis` with Kubernetes options is a usage error.
    let mixed = run(&good, &["--namespace", "x", "--store", "ops", "ls"]).await;
    assert_eq!(mixed.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&mixed.stderr).contains("-pw-"));
}
