//! Where keys live: which object (shard) holds a key, the name it has in that
//! object's data map, and how values are written there.
//!
//! Two layouts:
//! - **native**: objects `<store>-<shard>` of kind `StoreShard`; a key is its
//!   own name in `spec.data`; values are the JSON text the front-end encodes;
//!   keys are spread over shards by a stable hash (FNV-1a) of the key.
//! - **Pepr**: the single `PeprStore` object `pepr-<uuid>-store`; a key `k` of
//!   capability `cap` is `cap-v2-k` in the top-level `data` map, next to the
//!   `__pepr_do_not_delete__` placeholder; values are plain strings, as Pepr
//!   writes them.
//!
//! Data-map keys are raw strings; only JSON-Patch paths escape them
//! ([`pointer_segment`], RFC 6901), so no key can reach outside its map.

use std::borrow::Cow;

use store_core::backend::Entry;
use store_core::{Payload, Version};

/// The data-map key Pepr keeps so its `data` map is never empty.
pub const PEPR_PLACEHOLDER: &str = "__pepr_do_not_delete__";

/// The value Pepr gives its placeholder key.
pub(crate) const PEPR_PLACEHOLDER_VALUE: &str = "k-thx-bye";

/// Escapes one JSON-Pointer segment (RFC 6901): `~` as `~0`, `/` as `~1`.
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Reverses [`pointer_segment`]; `None` for a `~` not followed by `0` or `1`.
pub fn unescape_pointer_segment(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The capability whose keys a Pepr capability named `capability` would share,
/// if there is one.
///
/// Pepr keys are `<capability>-v2-<key>`, so a name that extends another one
/// with `-v2` (`a-v2`, `a-v2-b`) reads and writes the other's keys:
/// `a-v2-v2-x` is key `v2-x` of `a` and key `x` of `a-v2`. Two capabilities
/// share a data-map key only when one of them is such a name, so refusing
/// these names keeps every capability to its own keys.
pub fn pepr_capability_overlap(capability: &str) -> Option<&str> {
    capability
        .match_indices("-v2")
        .map(|(at, _)| at)
        .find(|&at| {
            let rest = &capability[at + 3..];
            at > 0 && (rest.is_empty() || rest.starts_with('-'))
        })
        .map(|at| &capability[..at])
}

/// FNV-1a, 64 bit: stable across processes, versions and architectures, which a
/// shard choice must be.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Which of a store's objects holds a key: the layout's choice, without the
/// layout (the count of objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route(u32);

impl Route {
    /// The position of `key`'s object among the layout's objects.
    pub(crate) fn of(self, key: &str) -> usize {
        match self.0 {
            0 | 1 => 0,
            count => usize::try_from(fnv1a(key.as_bytes()) % u64::from(count)).unwrap_or(0),
        }
    }
}

/// How one store's keys map onto objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `StoreShard` objects `<store>-<n>`, `n` in `0..shards`.
    Native {
        /// The store's name (also the value of the store label).
        store: String,
        /// How many shard objects the store has.
        shards: u32,
    },
    /// One `PeprStore` object shared with TypeScript Pepr pods.
    Pepr {
        /// The object's name, `pepr-<uuid>-store`.
        object: String,
        /// The capability whose keys this store sees.
        capability: String,
    },
}

impl Layout {
    /// Names of every object of the store, shard order.
    pub fn objects(&self) -> Vec<String> {
        match self {
            Layout::Native { store, shards } => {
                (0..*shards).map(|n| format!("{store}-{n}")).collect()
            }
            Layout::Pepr { object, .. } => vec![object.clone()],
        }
    }

    /// Which object holds `key` (an index into [`objects`](Self::objects)).
    pub fn shard_of(&self, key: &str) -> usize {
        self.route().of(key)
    }

    /// How keys are routed to objects.
    pub(crate) fn route(&self) -> Route {
        match self {
            Layout::Native { shards, .. } => Route((*shards).max(1)),
            Layout::Pepr { .. } => Route(1),
        }
    }

    /// The JSON pointer of the data map inside an object.
    pub fn data_pointer(&self) -> &'static str {
        match self {
            Layout::Native { .. } => "/spec/data",
            Layout::Pepr { .. } => "/data",
        }
    }

    /// How kube-apiserver names a data-map entry in a validation error's
    /// `field` (`data.<map key>`, the key raw).
    pub fn field_path(&self, map_key: &str) -> String {
        match self {
            Layout::Native { .. } => format!("spec.data.{map_key}"),
            Layout::Pepr { .. } => format!("data.{map_key}"),
        }
    }

    /// The data map of an object's JSON, if it has one.
    pub fn data_of<'a>(
        &self,
        object: &'a serde_json::Value,
    ) -> Option<&'a serde_json::Map<String, serde_json::Value>> {
        object.pointer(self.data_pointer())?.as_object()
    }

    /// The data-map key for a store key.
    pub fn map_key(&self, key: &str) -> String {
        match self {
            Layout::Native { .. } => key.to_owned(),
            Layout::Pepr { capability, .. } => format!("{capability}-v2-{key}"),
        }
    }

    /// The store key for a data-map key, `None` for entries that are not this
    /// store's keys (the Pepr placeholder, other capabilities' keys, v1 keys).
    pub fn store_key<'a>(&self, map_key: &'a str) -> Option<&'a str> {
        match self {
            Layout::Native { .. } => Some(map_key),
            Layout::Pepr { capability, .. } => map_key
                .strip_prefix(capability.as_str())?
                .strip_prefix("-v2-")
                .filter(|k| !k.is_empty()),
        }
    }

    /// The JSON pointer of a store key's entry.
    pub fn pointer(&self, key: &str) -> String {
        format!(
            "{}/{}",
            self.data_pointer(),
            pointer_segment(&self.map_key(key))
        )
    }

    /// The string stored for an encoded value.
    ///
    /// Pepr stores strings: a JSON string value is stored as its text (what a
    /// TypeScript `setItem(key, "yep")` stores); any other value as its JSON text
    /// (what `setItem(key, JSON.stringify(value))` stores).
    pub fn stored_value(&self, payload: &Payload) -> String {
        self.stored_text(payload.as_str()).into_owned()
    }

    /// [`stored_value`](Self::stored_value) of an encoded value's text,
    /// borrowed where the layout stores it unchanged.
    pub(crate) fn stored_text<'a>(&self, payload: &'a str) -> Cow<'a, str> {
        match self {
            Layout::Native { .. } => Cow::Borrowed(payload),
            Layout::Pepr { .. } => match serde_json::from_str::<serde_json::Value>(payload) {
                Ok(serde_json::Value::String(text)) => Cow::Owned(text),
                _ => Cow::Borrowed(payload),
            },
        }
    }

    /// The encoded value for a stored string (the inverse of
    /// [`stored_value`](Self::stored_value)).
    ///
    /// In the Pepr layout every value is text, so it reads as a JSON string of
    /// that text: a `String` read returns exactly what was stored, and the
    /// store decodes any other type from the text as JSON (the backend
    /// advertises [`Capabilities::text_values`](store_core::Capabilities::text_values)).
    pub fn payload(&self, stored: &str) -> Payload {
        Payload::from(&*self.payload_text(stored))
    }

    /// [`payload`](Self::payload)'s text, borrowed where the layout stores
    /// values unchanged.
    pub(crate) fn payload_text<'a>(&self, stored: &'a str) -> Cow<'a, str> {
        match self {
            Layout::Native { .. } => Cow::Borrowed(stored),
            Layout::Pepr { .. } => {
                Cow::Owned(serde_json::Value::String(stored.to_owned()).to_string())
            }
        }
    }

    /// Whether `entry` holds `stored`: its payload is this layout's encoding
    /// of that string. Compared as it is encoded, never copied: a watch event
    /// checks every key of its object this way.
    pub(crate) fn holds(&self, entry: &Entry, stored: &str) -> bool {
        let payload = entry.value().as_str();
        match self {
            Layout::Native { .. } => payload == stored,
            Layout::Pepr { .. } => {
                let mut rest = Matching(payload.as_bytes());
                serde_json::to_writer(&mut rest, stored).is_ok() && rest.0.is_empty()
            }
        }
    }

    /// An entry for `key` holding `stored` (copied once, into the entry).
    pub(crate) fn entry(&self, key: &str, stored: &str, version: Version) -> Entry {
        Entry::new(key, &self.payload_text(stored), version)
    }
}

/// Takes bytes written to it only while they match what it holds.
struct Matching<'a>(&'a [u8]);

impl std::io::Write for Matching<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.0.strip_prefix(bytes) {
            Some(rest) => {
                self.0 = rest;
                Ok(bytes.len())
            }
            None => Err(std::io::Error::other("differs")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepr(capability: &str) -> Layout {
        Layout::Pepr {
            object: "pepr-static-test-store".into(),
            capability: capability.into(),
        }
    }

    #[test]
    fn pointer_segments_escape_tilde_before_slash() {
        assert_eq!(pointer_segment("a/b~c"), "a~1b~0c");
        assert_eq!(pointer_segment("~1"), "~01");
        assert_eq!(pointer_segment("https://onReady"), "https:~1~1onReady");
        for raw in ["a/b~c", "~1", "~0/", "..", "日本語", ""] {
            assert_eq!(
                unescape_pointer_segment(&pointer_segment(raw)).as_deref(),
                Some(raw)
            );
        }
        assert_eq!(unescape_pointer_segment("~2"), None);
        assert_eq!(unescape_pointer_segment("~"), None);
    }

    #[test]
    fn shard_choice_is_stable_and_spreads_keys() {
        let layout = Layout::Native {
            store: "s".into(),
            shards: 8,
        };
        // Pinned values: a change here would move existing keys to other shards.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[layout.shard_of(&format!("key/{i}"))] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_eq!(layout.objects()[7], "s-7");
    }

    #[test]
    fn a_capability_never_sees_keys_of_a_capability_it_prefixes() {
        let hello = pepr("hello");
        assert_eq!(hello.store_key("hello-v2-k"), Some("k"));
        assert_eq!(hello.store_key("hello-pepr-v2-k"), None);
        assert_eq!(
            hello.store_key("hello-k"),
            None,
            "v1 keys are migrated, not read"
        );
        assert_eq!(hello.store_key(PEPR_PLACEHOLDER), None);
        assert_eq!(hello.store_key("hello-v2-"), None);
        let hello_pepr = pepr("hello-pepr");
        assert_eq!(hello_pepr.store_key("hello-pepr-v2-k"), Some("k"));
        assert_eq!(hello_pepr.store_key("hello-v2-k"), None);
    }

    #[test]
    fn pepr_values_are_plain_strings_and_read_back_as_their_text() {
        let layout = pepr("cap");
        assert_eq!(layout.stored_value(&Payload::from("\"yep\"")), "yep");
        assert_eq!(layout.payload("yep").as_str(), "\"yep\"");
        assert_eq!(
            layout.payload("42").as_str(),
            "\"42\"",
            "TypeScript stored a string"
        );
        assert_eq!(
            layout.stored_value(&Payload::from(r#"{"a":1}"#)),
            r#"{"a":1}"#
        );
        assert_eq!(
            layout.payload(r#"{"a":1}"#).as_str(),
            r#""{\"a\":1}""#,
            "object text is text too"
        );
        assert_eq!(layout.pointer("a/b"), "/data/cap-v2-a~1b");
    }

    #[test]
    fn an_entry_holds_exactly_the_string_it_was_made_of() {
        for layout in [
            pepr("cap"),
            Layout::Native {
                store: "s".into(),
                shards: 1,
            },
        ] {
            let stored = "y\u{e9}\"s\n{";
            let entry = layout.entry("k", stored, Version(1));
            assert!(layout.holds(&entry, stored));
            for other in ["", "y", "y\u{e9}\"s", "y\u{e9}\"s\n{}", "ye\"s\n{"] {
                assert!(!layout.holds(&entry, other), "{other:?}");
            }
        }
    }
}

/// Arbitrary JSON fed to the decoding of store objects (`cache::parse_object`
/// and the diff in `cache::Cache`), which only the crate can reach.
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::{Value, json};

    use super::*;
    use crate::cache::{Cache, parse_object};

    fn config(default: u32) -> Config {
        let requested = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Config {
            cases: default.max(requested),
            failure_persistence: None,
            ..Config::default()
        }
    }

    fn text() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a",
            "b",
            "/",
            "~",
            "~1",
            "-",
            "v2",
            "-v2-",
            "cap",
            "cap-v2-",
            "cap-pepr-v2-",
            "",
            "é",
            "😀",
            "\0",
            "\n",
            PEPR_PLACEHOLDER,
        ]);
        prop::collection::vec(pieces, 0..5).prop_map(|p| p.concat())
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects shaped like store objects, with every field possibly wrong, and
    /// arbitrary JSON.
    fn object() -> impl Strategy<Value = Value> {
        let revision = prop_oneof![
            (0u64..1_000).prop_map(|r| json!(r.to_string())),
            Just(json!("18446744073709551616")),
            Just(json!("-1")),
            Just(json!("")),
            Just(json!("12abc")),
            json(),
        ];
        let data = prop_oneof![
            3 => prop::collection::btree_map(
                text(),
                prop_oneof![3 => text().prop_map(Value::from), 1 => json()],
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => json(),
        ];
        prop_oneof![
            4 => (revision, data, json(), any::<bool>()).prop_map(|(rv, data, labels, pepr)| {
                let metadata = json!({ "name": "s-0", "resourceVersion": rv, "labels": labels });
                if pepr {
                    json!({ "metadata": metadata, "data": data })
                } else {
                    json!({ "metadata": metadata, "spec": { "data": data } })
                }
            }),
            1 => json(),
        ]
    }

    fn layouts() -> [Layout; 3] {
        [
            Layout::Native {
                store: "s".into(),
                shards: 1,
            },
            Layout::Pepr {
                object: "pepr-x-store".into(),
                capability: "cap".into(),
            },
            Layout::Pepr {
                object: "pepr-x-store".into(),
                capability: "cap-pepr".into(),
            },
        ]
    }

    #[test]
    fn any_object_decodes_into_this_layouts_keys_or_a_typed_error() {
        let mut runner = TestRunner::new(config(512));
        runner
            .run(&object(), |object| {
                for layout in layouts() {
                    let revision_text = object
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str);
                    let seen = match parse_object(&layout, &object) {
                        Ok(seen) => seen,
                        Err(store_core::Error::Backend { .. }) => {
                            // Only a resourceVersion that is not a decimal revision is refused.
                            prop_assert!(revision_text.is_some_and(|t| t.parse::<u64>().is_err()));
                            continue;
                        }
                        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                    };
                    prop_assert!(revision_text.is_none_or(|t| t.parse::<u64>().is_ok()));
                    let map = layout.data_of(&object);
                    prop_assert_eq!(seen.has_data_map, map.is_some());
                    let mut expected: Vec<&str> = map
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, _)| layout.store_key(k))
                        .collect();
                    expected.sort_unstable();
                    let found: Vec<&str> = seen.keys().collect();
                    prop_assert_eq!(found, expected);
                    for &(key, ref stored) in &seen.data {
                        // Pepr's placeholder entry is never read as a key.
                        let native = matches!(layout, Layout::Native { .. });
                        prop_assert!(native || layout.map_key(key) != PEPR_PLACEHOLDER);
                        let raw = map.and_then(|m| m.get(&layout.map_key(key)));
                        match raw {
                            Some(Value::String(text)) => {
                                prop_assert_eq!(text.as_str(), &**stored);
                                prop_assert!(!seen.malformed.iter().any(|m| m == key));
                            }
                            Some(other) => {
                                let text = other.to_string();
                                prop_assert_eq!(text.as_str(), &**stored);
                                prop_assert!(seen.malformed.iter().any(|m| m == key));
                            }
                            None => prop_assert!(false, "{key:?} is not in the data map"),
                        }
                    }
                }
                Ok(())
            })
            .expect("decoding");
    }

    #[test]
    fn a_cache_fed_arbitrary_objects_lists_exactly_the_last_ones_keys() {
        let mut runner = TestRunner::new(config(128));
        runner
            .run(&prop::collection::vec(object(), 1..6), |objects| {
                for layout in layouts() {
                    let mut cache = Cache::new(&layout);
                    let mut last = None;
                    let mut highest = 0;
                    for object in &objects {
                        let Ok(seen) = parse_object(&layout, object) else {
                            continue;
                        };
                        if seen.name != "s-0" {
                            continue;
                        }
                        highest = highest.max(seen.revision);
                        let changes = cache.observe(&layout, seen.clone());
                        for change in &changes {
                            if let Some(payload) = change.value() {
                                // Every value handed on is this layout's reading of the stored text.
                                let stored = seen.get(change.key()).expect("a key of the object");
                                prop_assert_eq!(payload, &layout.payload(stored));
                            } else {
                                prop_assert!(seen.get(change.key()).is_none());
                            }
                        }
                        // The same object again changes nothing.
                        prop_assert!(cache.observe(&layout, seen.clone()).is_empty());
                        last = Some(seen);
                    }
                    let entries = cache.entries("");
                    let keys: Vec<&str> = entries.iter().map(Entry::key).collect();
                    let expected: Vec<&str> = last
                        .as_ref()
                        .map(|s| s.keys().collect())
                        .unwrap_or_default();
                    prop_assert_eq!(keys, expected);
                    for entry in &entries {
                        prop_assert!(entry.version().0 <= highest);
                        if matches!(layout, Layout::Pepr { .. }) {
                            // Pepr text always reads as JSON: structured text or a string.
                            prop_assert!(
                                serde_json::from_str::<Value>(entry.value().as_str()).is_ok()
                            );
                        }
                    }
                }
                Ok(())
            })
            .expect("cache");
    }
}
