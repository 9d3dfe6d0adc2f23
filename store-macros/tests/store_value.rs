//! `#[derive(StoreValue)]` against the memory backend.

use serde::{Deserialize, Serialize};
use store_core::{Error, Store, StoreValue};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, StoreValue)]
#[store(key = "settings/main")]
struct Settings {
    verbose: bool,
    level: u8,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, StoreValue)]
struct ExemptNamespaces(Vec<String>);

#[derive(Debug, PartialEq, Serialize, Deserialize, StoreValue)]
#[store(key = "mode")]
enum Mode {
    Active,
    Paused { until: u64 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize, StoreValue)]
#[store(key = "tenant/{tenant}/job/{job}")]
struct Job {
    retries: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, StoreValue)]
#[store(key = "wrapped")]
struct Wrapped<T> {
    inner: T,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema, StoreValue)]
#[store(key = "profile/{id}", schema)]
struct Profile {
    name: String,
    age: u8,
    tags: Vec<String>,
}

#[tokio::test]
async fn a_derived_type_round_trips_under_its_key() -> store_core::Result<()> {
    let store = Store::memory().await?;
    let value = Settings {
        verbose: true,
        level: 3,
    };
    store.set(Settings::key(), &value)?;
    assert_eq!(store.get(Settings::key())?.as_deref(), Some(&value));
    store.flush().await?;
    assert_eq!(store.keys(), vec!["settings/main".to_owned()]);

    store.set(Mode::key(), &Mode::Paused { until: 7 })?;
    assert_eq!(
        store.get(Mode::key())?.as_deref(),
        Some(&Mode::Paused { until: 7 })
    );

    store.set(Wrapped::<u32>::key(), &Wrapped { inner: 5 })?;
    assert_eq!(
        store.get(Wrapped::<u32>::key())?.as_deref(),
        Some(&Wrapped { inner: 5 })
    );
    Ok(())
}

#[test]
fn without_a_key_the_kebab_cased_type_name_is_used() {
    assert_eq!(ExemptNamespaces::KEY, "exempt-namespaces");
    assert_eq!(ExemptNamespaces::key().as_str(), "exempt-namespaces");
}

#[tokio::test]
async fn a_family_key_formats_parses_and_stores() -> store_core::Result<()> {
    let key = Job::key_for("acme", 42)?;
    assert_eq!(key.as_str(), "tenant/acme/job/42");
    assert_eq!(
        Job::parse_key::<(String, u64)>("tenant/acme/job/42"),
        Some(("acme".to_owned(), 42))
    );
    assert_eq!(
        Job::parse_key::<Vec<String>>("tenant/a/job/b"),
        Some(vec!["a".into(), "b".into()])
    );
    assert_eq!(Job::parse_key::<(String, u64)>("tenant/acme/job/x"), None);
    assert_eq!(Job::parse_key::<(String, u64)>("other/acme/job/42"), None);
    assert!(
        Job::key_for("a/job/b", 1).is_err(),
        "an argument holding the separator"
    );
    assert!(Job::key_for("", 1).is_err(), "an empty argument");

    let store = Store::memory().await?;
    store.set(&key, &Job { retries: 2 })?;
    store.set(Job::key_for("acme", 43)?, &Job { retries: 0 })?;
    assert_eq!(store.get(&key)?.as_deref(), Some(&Job { retries: 2 }));
    let mut jobs: Vec<(String, u64)> = store
        .keys()
        .iter()
        .filter_map(|k| Job::parse_key(k))
        .collect();
    jobs.sort();
    assert_eq!(jobs, vec![("acme".into(), 42), ("acme".into(), 43)]);
    Ok(())
}

#[tokio::test]
async fn a_stored_value_that_no_longer_fits_the_schema_names_the_key_and_path()
-> store_core::Result<()> {
    let store = Store::memory().await?;
    let key = Profile::key_for(7)?;
    let good = Profile {
        name: "ada".into(),
        age: 36,
        tags: vec!["x".into()],
    };
    store.set(&key, &good)?;
    assert_eq!(store.get(&key)?.as_deref(), Some(&good));

    // Written by an older version, without the type.
    let raw = serde_json::json!({ "name": "bob", "age": 36, "tags": ["a", 3] });
    store.set_and_wait(key.as_str(), &raw).await?;
    let err = store.get(&key).expect_err("tags[1] is not a string");
    assert!(
        matches!(&err, Error::Decode { key, .. } if key == "profile/7"),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("`tags[1]`"), "{message}");
    assert!(
        message.contains("expected string, found integer"),
        "{message}"
    );

    let out_of_range = serde_json::json!({ "name": "bob", "age": 300, "tags": [] });
    let err = Profile::validate(&out_of_range).expect_err("300 is not a u8");
    assert!(err.to_string().contains("`age`"), "{err}");
    Ok(())
}
