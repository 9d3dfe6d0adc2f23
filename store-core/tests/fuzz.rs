//! Property tests on what a caller can hand the store: arbitrary keys, key-family
//! arguments, JSON text and JSON values read back as typed values. Nothing may
//! panic; every refusal is a typed error naming the key.
//!
//! Case counts are small enough for CI; `PROPTEST_CASES=10000` raises them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store_conformance::support::proptest_config as config;
use store_core::backend::{Batch, Op};
use store_core::key::{KeyError, MAX_KEY_LEN, check, validate};
use store_core::{Backend, Error, KeyFamily, MemoryBackend, Payload, Store};

/// Characters that stress key handling: separators and escapes, every kind of
/// control character, multi-byte text, and anything else.
fn key_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'e'),
        3 => prop::sample::select(vec!['/', '~', '0', '1', '.', '-', ' ', '%', '\\', '{', '}', '"']),
        2 => prop::sample::select(vec![
            '\0', '\n', '\t', '\u{1f}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{a0}', 'é',
            '日', '😀', '\u{200b}', '\u{feff}', '\u{2028}', '\u{fffd}',
        ]),
        1 => any::<char>(),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(key_char(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

/// Keys around the length limit, in one-, two-, three- and four-byte characters.
fn long_key() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["x", "é", "日", "😀"]),
        (MAX_KEY_LEN - 8)..(MAX_KEY_LEN + 8),
    )
        .prop_map(|(unit, bytes)| unit.repeat(bytes / unit.len()))
}

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![4 => text(24), 1 => long_key()]
}

/// The key rules of `store_core::key`, written out independently.
fn expected_verdict(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    match key.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(KeyError::ControlCharacter { at }),
        None => Ok(()),
    }
}

/// Arbitrary JSON values, strings drawn from the same stressful characters.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(8), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON-ish text: valid documents, their prefixes, numbers out of range,
/// deep nesting, and noise.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        json_value().prop_flat_map(|v| {
            let text = v.to_string();
            let len = text.chars().count();
            (Just(text), 0..=len).prop_map(|(text, cut)| text.chars().take(cut).collect::<String>())
        }),
        prop::sample::select(vec![
            "1e999".to_owned(),
            "-1e999".to_owned(),
            "123456789012345678901234567890".to_owned(),
            "NaN".to_owned(),
            "Infinity".to_owned(),
            "\"\\ud800\"".to_owned(),
            "\"\\u00\"".to_owned(),
            "[".repeat(300),
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            "{\"a\":1,\"a\":2}".to_owned(),
            "1 2".to_owned(),
            String::new(),
        ]),
        text(40),
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    age: u8,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    nested: Option<Box<Profile>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Mode {
    On,
    Off,
    Level(u8),
    Named { name: String },
}

/// A read as `T` either succeeds or is a `Decode` error naming `key` and `T`.
fn typed_read_is_clean<T>(
    key: &str,
    result: store_core::Result<Option<Arc<T>>>,
) -> Result<(), TestCaseError>
where
    T: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(()),
        Err(Error::Decode {
            key: named,
            type_name,
            ..
        }) => {
            prop_assert_eq!(named.as_str(), key);
            prop_assert_eq!(type_name, std::any::type_name::<T>());
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "reading {key:?} as {} failed with {other:?}",
            std::any::type_name::<T>()
        ))),
    }
}

fn read_every_type(store: &Store, key: &str) -> Result<(), TestCaseError> {
    typed_read_is_clean(key, store.get::<u32>(key))?;
    typed_read_is_clean(key, store.get::<i8>(key))?;
    typed_read_is_clean(key, store.get::<f32>(key))?;
    typed_read_is_clean(key, store.get::<bool>(key))?;
    typed_read_is_clean(key, store.get::<String>(key))?;
    typed_read_is_clean(key, store.get::<char>(key))?;
    typed_read_is_clean(key, store.get::<Vec<u8>>(key))?;
    typed_read_is_clean(key, store.get::<(u8, String)>(key))?;
    typed_read_is_clean(key, store.get::<BTreeMap<String, u16>>(key))?;
    typed_read_is_clean(key, store.get::<Option<Profile>>(key))?;
    typed_read_is_clean(key, store.get::<Profile>(key))?;
    typed_read_is_clean(key, store.get::<Strict>(key))?;
    typed_read_is_clean(key, store.get::<Mode>(key))?;
    typed_read_is_clean(key, store.get::<()>(key))?;
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn open(backend: MemoryBackend) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(10))
        .open()
        .await
        .expect("store opens")
}

#[test]
fn the_key_check_agrees_with_the_written_rules_for_any_string() {
    let mut runner = TestRunner::new(config(1024));
    runner
        .run(&any_key(), |key| {
            let verdict = check(&key);
            prop_assert_eq!(verdict, expected_verdict(&key), "key {:?}", key);
            match validate(&key) {
                Ok(()) => prop_assert!(verdict.is_ok()),
                Err(Error::InvalidKey { key: named, reason }) => {
                    prop_assert_eq!(named, key);
                    prop_assert_eq!(Err(reason), verdict);
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
            Ok(())
        })
        .expect("key rules");
}

#[test]
fn keys_at_the_length_limit_are_accepted_and_one_byte_more_is_refused() {
    assert_eq!(check(&"k".repeat(MAX_KEY_LEN)), Ok(()));
    assert_eq!(
        check(&"k".repeat(MAX_KEY_LEN + 1)),
        Err(KeyError::TooLong {
            len: MAX_KEY_LEN + 1,
            max: MAX_KEY_LEN
        })
    );
    // The limit is in bytes: 512 two-byte characters fit, 513 do not.
    assert_eq!(check(&"é".repeat(512)), Ok(()));
    assert!(check(&"é".repeat(513)).is_err());
}

#[test]
fn every_key_the_rules_accept_round_trips_through_a_store_byte_for_byte() {
    let rt = runtime();
    let store = rt.block_on(open(MemoryBackend::new()));
    let mut runner = TestRunner::new(config(256));
    runner
        .run(&(any_key(), text(16)), |(key, value)| {
            rt.block_on(async {
                let set = store.set(key.as_str(), &value);
                let removed = store.remove(key.as_str());
                match expected_verdict(&key) {
                    Ok(()) => {
                        prop_assert!(set.is_ok(), "{set:?}");
                        prop_assert!(removed.is_ok(), "{removed:?}");
                        store
                            .set_and_wait(key.as_str(), &value)
                            .await
                            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                        let read = store
                            .get::<String>(key.as_str())
                            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                        prop_assert_eq!(read.as_deref(), Some(&value));
                        prop_assert!(store.keys().contains(&key));
                        store
                            .remove_and_wait(key.as_str())
                            .await
                            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                        prop_assert!(!store.keys().contains(&key));
                    }
                    Err(reason) => {
                        for result in [set, removed] {
                            prop_assert!(
                                matches!(&result, Err(Error::InvalidKey { key: k, reason: r }) if *k == key && *r == reason),
                                "{result:?}"
                            );
                        }
                        let read = store.get::<String>(key.as_str());
                        prop_assert!(matches!(read, Err(Error::InvalidKey { .. })), "{read:?}");
                        let waited = store.set_and_wait(key.as_str(), &value).await;
                        prop_assert!(
                            matches!(waited, Err(Error::InvalidKey { .. })),
                            "{waited:?}"
                        );
                    }
                }
                prop_assert!(store.is_empty(), "{:?}", store.keys());
                Ok(())
            })
        })
        .expect("keys round-trip");
}

#[test]
fn a_key_family_refuses_or_round_trips_any_argument_without_a_bordered_separator() {
    // `:` after the first placeholder cannot overlap itself, so every accepted
    // argument parses back.
    static FAMILY: KeyFamily<u8> = KeyFamily::new("user/{name}:{n}");
    let mut runner = TestRunner::new(config(512));
    runner
        .run(&(text(20), any::<u32>()), |(name, n)| {
            match FAMILY.key((name.as_str(), n)) {
                Ok(key) => {
                    prop_assert_eq!(
                        FAMILY.parse::<(String, u32)>(key.as_str()),
                        Some((name.clone(), n))
                    );
                    prop_assert!(FAMILY.matches(key.as_str()));
                }
                Err(Error::InvalidKey { .. }) => {
                    let made = format!("user/{name}:{n}");
                    prop_assert!(
                        name.is_empty() || name.contains(':') || check(&made).is_err(),
                        "{name:?} was refused"
                    );
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
            Ok(())
        })
        .expect("family round-trip");
}

/// `KeyFamily` documents that `key` and `parse` always round-trip. With a
/// separator that begins and ends with the same text (`/job/`), an argument
/// ending in a proper prefix of it (`a/job`) is accepted, and parsing splits
/// at the wrong place: `tenant/a/job/job/42` parses as `("a", "job/42")`.
#[test]
fn a_key_family_round_trips_every_argument_it_accepts() {
    static JOBS: KeyFamily<u8> = KeyFamily::new("tenant/{tenant}/job/{job}");
    let accepted = JOBS.key(("a/job", "42"));
    if let Ok(key) = accepted {
        assert_eq!(
            JOBS.parse::<Vec<String>>(key.as_str()),
            Some(vec!["a/job".to_owned(), "42".to_owned()]),
            "{key} does not parse back into its arguments"
        );
    }
    let mut runner = TestRunner::new(config(512));
    let arg = prop::collection::vec(prop::sample::select(vec!['a', '/', 'j', 'o', 'b']), 1..10)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    runner
        .run(&(arg.clone(), arg), |(tenant, job)| {
            if let Ok(key) = JOBS.key((tenant.as_str(), job.as_str())) {
                prop_assert_eq!(
                    JOBS.parse::<Vec<String>>(key.as_str()),
                    Some(vec![tenant.clone(), job.clone()])
                );
            }
            Ok(())
        })
        .expect("family round-trip");
}

#[test]
fn decoding_arbitrary_text_as_any_type_names_the_key_or_succeeds() {
    let mut runner = TestRunner::new(config(1024));
    runner
        .run(&(text(12), json_text()), |(key, text)| {
            let payload = Payload::from(text.as_str());
            let named = |r: store_core::Result<()>| -> Result<(), TestCaseError> {
                match r {
                    Ok(()) => Ok(()),
                    Err(Error::Decode { key: k, .. }) => {
                        prop_assert_eq!(&k, &key);
                        Ok(())
                    }
                    Err(other) => Err(TestCaseError::fail(format!("{other:?}"))),
                }
            };
            named(store_core::decode::<Value>(&key, &payload).map(drop))?;
            named(store_core::decode::<u64>(&key, &payload).map(drop))?;
            named(store_core::decode::<String>(&key, &payload).map(drop))?;
            named(store_core::decode::<Profile>(&key, &payload).map(drop))?;
            named(store_core::decode::<Mode>(&key, &payload).map(drop))?;
            named(store_core::decode::<Vec<Option<Strict>>>(&key, &payload).map(drop))?;
            // Text that is one valid JSON document decodes as a `Value`.
            if let Ok(expected) = serde_json::from_str::<Value>(&text) {
                prop_assert_eq!(
                    store_core::decode::<Value>(&key, &payload).ok(),
                    Some(expected)
                );
            }
            Ok(())
        })
        .expect("decode");
}

#[test]
fn any_json_value_set_under_a_key_reads_back_as_itself_or_as_a_decode_error_for_other_types() {
    let rt = runtime();
    let store = rt.block_on(open(MemoryBackend::new()));
    let mut runner = TestRunner::new(config(256));
    runner
        .run(&json_value(), |value| {
            rt.block_on(async {
                let key = "fuzz/value";
                store
                    .set_and_wait(key, &value)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let back = store
                    .get::<Value>(key)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                // What serde_json reads from its own text (floats may move by one
                // unit in the last place, see below).
                let value: Value = serde_json::from_str(&value.to_string())
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(back.as_deref(), Some(&value));
                read_every_type(&store, key)?;
                // The confirmed snapshot decodes the same way.
                let snapshot = store.snapshot();
                prop_assert_eq!(
                    snapshot.get::<Value>(key).ok().flatten(),
                    Some(value.clone())
                );
                match snapshot.get::<Strict>(key) {
                    Ok(_) => {}
                    Err(Error::Decode { key: k, .. }) => prop_assert_eq!(k, key),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
                Ok(())
            })
        })
        .expect("typed reads");
}

#[test]
fn text_a_backend_holds_that_is_not_json_reads_as_a_decode_error_naming_its_key() {
    let rt = runtime();
    let mut runner = TestRunner::new(config(64));
    runner
        .run(
            &prop::collection::vec((text(10), json_text()), 1..8),
            |entries| {
                rt.block_on(async {
                    let backend = MemoryBackend::new();
                    let mut written = BTreeMap::new();
                    for (i, (key, text)) in entries.into_iter().enumerate() {
                        // A backend stores what it is given; only the front-end checks keys.
                        let key = format!("raw/{i}/{key}");
                        if check(&key).is_ok() {
                            written.insert(key, text);
                        }
                    }
                    let ops = written
                        .iter()
                        .map(|(k, v)| Op::put(k.clone(), Payload::from(v.as_str())))
                        .collect();
                    backend
                        .apply(Batch { ops, atomic: false })
                        .await
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    let store = open(backend).await;
                    prop_assert_eq!(store.len(), written.len());
                    for key in written.keys() {
                        typed_read_is_clean(key, store.get::<Value>(key.as_str()))?;
                        read_every_type(&store, key)?;
                    }
                    Ok(())
                })
            },
        )
        .expect("raw payloads");
}

#[test]
fn a_value_nested_past_the_decoder_limit_is_stored_but_reads_as_a_decode_error() {
    let rt = runtime();
    rt.block_on(async {
        let store = open(MemoryBackend::new()).await;
        let mut deep = Value::Null;
        for _ in 0..200 {
            deep = Value::Array(vec![deep]);
        }
        store.set_and_wait("deep", &deep).await.expect("set");
        assert!(
            matches!(store.get::<Value>("deep"), Err(Error::Decode { ref key, .. }) if key == "deep"),
            "{:?}",
            store.get::<Value>("deep")
        );
    });
}

/// serde_json's default number parser reads some floats one unit in the last
/// place off (its `float_roundtrip` feature fixes that), so an `f64` written
/// and read back is not always the same `f64`.
#[test]
fn every_finite_f64_reads_back_exactly() {
    let rt = runtime();
    rt.block_on(async {
        let store = open(MemoryBackend::new()).await;
        let value = 1.482_596_047_693_409_8e97_f64;
        store.set_and_wait("f", &value).await.expect("set");
        assert_eq!(store.get::<f64>("f").expect("get").as_deref(), Some(&value));
    });
    let mut runner = TestRunner::new(config(1024));
    runner
        .run(
            &any::<f64>().prop_filter("finite", |f| f.is_finite()),
            |f| {
                let text =
                    serde_json::to_string(&f).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back = store_core::decode::<f64>("f", &Payload::from(text))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back.to_bits(), f.to_bits());
                Ok(())
            },
        )
        .expect("f64 round-trip");
}
