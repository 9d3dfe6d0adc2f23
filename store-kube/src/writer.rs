//! Turning a batch of store writes into JSON Patch requests, one object at a
//! time.
//!
//! Preconditions become `test` operations: "at version v" tests the value the
//! key had at v; "absent" tests the object's resourceVersion, since JSON Patch
//! cannot test for a missing member. A precondition already false against
//! what we know is decided here, without a request, so it never sinks the
//! rest of the batch; when a `test` fails on the server (422 naming no field),
//! the planner runs again on the object as it is now and only the writes
//! whose preconditions really failed drop out. A 422 from the schema names
//! the fields it refuses; the backend settles the writes to those keys as
//! `Rejected` and plans the rest again. Sizes are projected before sending so a full
//! object refuses the write that would overflow it, not the whole batch.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use store_core::backend::{Entry, Op, OpKind, Outcome, Precondition, SharedKey};
use store_core::{Error, Version};

use crate::cache::{Data, Seen, Shard, Stored};
use crate::layout::{Layout, PEPR_PLACEHOLDER, PEPR_PLACEHOLDER_VALUE};

/// Limits on one patch request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Serialized object size a write may grow an object to.
    pub(crate) object_budget: usize,
    /// The largest stored value.
    pub(crate) max_value: usize,
    /// JSON Patch operations per request (the API server takes at most 10,000).
    pub(crate) max_patch_ops: usize,
    /// Request body bytes (the API server takes at most 3 MiB).
    pub(crate) max_body: usize,
}

/// etcd's default `--max-request-bytes`: the largest write it takes.
pub(crate) const ETCD_MAX_REQUEST: usize = 1_572_864;

/// What an object's JSON may not use of [`ETCD_MAX_REQUEST`]. kube-apiserver
/// 1.20.2 on etcd's defaults took objects of up to 1,572,685 bytes of JSON as
/// read back and refused the next byte (500 `etcdserver: request is too
/// large`): the request also carries the etcd key about three times (under
/// 400 bytes each for the longest names). The rest covers metadata the server
/// adds on a write (a field manager's first `managedFields` entry).
pub(crate) const OBJECT_MARGIN: usize = 4 * 1024;

/// The JSON size a write may grow one store object to by default: etcd's
/// request limit less a margin, as measured on kube-apiserver 1.20.2 with
/// etcd (see [`KubeBackendBuilder::object_budget`](crate::KubeBackendBuilder::object_budget)).
pub const DEFAULT_OBJECT_BUDGET: usize = ETCD_MAX_REQUEST - OBJECT_MARGIN;

impl Default for Limits {
    fn default() -> Self {
        let object_budget = DEFAULT_OBJECT_BUDGET;
        Limits {
            object_budget,
            max_value: object_budget - 16 * 1024,
            max_patch_ops: 9_000,
            max_body: 2 * 1024 * 1024,
        }
    }
}

/// What we believe an object holds now.
#[derive(Debug, Clone, Default)]
pub(crate) struct Base {
    pub(crate) revision: u64,
    pub(crate) data: Data,
    pub(crate) malformed: HashSet<String>,
    pub(crate) size: usize,
    pub(crate) has_data_map: bool,
    pub(crate) has_labels: bool,
}

impl Base {
    pub(crate) fn from_seen(seen: Seen<'_>) -> Self {
        Base {
            revision: seen.revision,
            data: seen.to_data(),
            malformed: seen.malformed.into_iter().collect(),
            size: seen.size,
            has_data_map: seen.has_data_map,
            has_labels: seen.has_labels,
        }
    }

    pub(crate) fn from_shard(layout: &Layout, shard: &Shard) -> Self {
        let stored = |entry: &Entry| match layout.stored_text(entry.value().as_str()) {
            // The entry's own allocation, shared.
            Cow::Borrowed(_) => entry.value().clone(),
            Cow::Owned(text) => Stored::from(text),
        };
        Base {
            revision: shard.revision,
            data: shard
                .data
                .iter()
                .map(|entry| (SharedKey::from(entry.key()), stored(entry)))
                .collect(),
            malformed: HashSet::new(),
            size: shard.size,
            has_data_map: true,
            has_labels: true,
        }
    }
}

/// One request's worth of work.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The JSON Patch to send (empty: nothing to send).
    pub(crate) patch: Vec<Value>,
    /// Batch indices of the writes in `patch`, with the value each put stores.
    pub(crate) sent: Vec<(usize, Option<String>)>,
    /// Writes settled without a request.
    pub(crate) decided: Vec<(usize, Outcome)>,
    /// How many of the given writes this plan covers (sent or decided); the rest
    /// go in the next request.
    pub(crate) covered: usize,
}

/// Length of a string once JSON-encoded.
fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len() + 2, |s| s.len())
}

/// Bytes a key with this stored value adds to an object: the entry in the data
/// map, and the key again in `managedFields` (`"f:<key>":{}`).
pub(crate) fn entry_cost(map_key: &str, stored: &str) -> usize {
    json_len(map_key) + 1 + json_len(stored) + 1 + json_len(map_key) + 8
}

/// Plans the next request for `writes` (batch index, op) against `base`.
pub(crate) fn plan(
    layout: &Layout,
    watched: Option<&Shard>,
    base: &Base,
    writes: &[(usize, Op)],
    limits: &Limits,
    now_millis: u128,
) -> Plan {
    let mut plan = Plan::default();
    let mut projected: HashMap<&str, Option<String>> = HashMap::new();
    let mut size = base.size;
    let mut body = 2usize;
    let mut guard_added = false;
    let mut preamble: Vec<Value> = Vec::new();
    if !base.has_data_map {
        preamble.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": base.revision.to_string()}));
        preamble.push(json!({"op": "add", "path": layout.data_pointer(), "value": {}}));
        guard_added = true;
    }
    let mut ops: Vec<Value> = Vec::new();
    for (index, op) in writes {
        let key = op.key.as_str();
        let current: Option<&str> = match projected.get(key) {
            Some(value) => value.as_deref(),
            None => base.data.get(key).map(Stored::as_str),
        };
        let mut these: Vec<Value> = Vec::new();
        let pointer = layout.pointer(key);
        match op.precondition {
            None => {}
            Some(Precondition::Version(expected)) => {
                let watched_version = watched.and_then(|s| s.version(key));
                let expected_value = watched
                    .filter(|_| watched_version == Some(expected))
                    .and_then(|s| s.stored(layout, key));
                match expected_value {
                    Some(value) if current == Some(&*value) && !base.malformed.contains(key) => {
                        these.push(json!({"op": "test", "path": pointer, "value": &*value}));
                    }
                    Some(_) => {
                        plan.decided.push((
                            *index,
                            Outcome::Conflict {
                                actual: current.map(|_| {
                                    Version(base.revision.max(watched_version.map_or(0, |v| v.0)))
                                }),
                            },
                        ));
                        plan.covered += 1;
                        continue;
                    }
                    None => {
                        plan.decided.push((
                            *index,
                            Outcome::Conflict {
                                actual: watched_version,
                            },
                        ));
                        plan.covered += 1;
                        continue;
                    }
                }
            }
            Some(Precondition::Absent) => {
                if current.is_some() {
                    let actual = watched
                        .and_then(|s| s.version(key))
                        .unwrap_or(Version(base.revision));
                    plan.decided.push((
                        *index,
                        Outcome::Conflict {
                            actual: Some(actual),
                        },
                    ));
                    plan.covered += 1;
                    continue;
                }
                if !guard_added {
                    these.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": base.revision.to_string()}));
                    guard_added = true;
                }
            }
        }
        let stored = match &op.kind {
            OpKind::Put { value, .. } => {
                let stored = layout.stored_value(value);
                if json_len(&stored) > limits.max_value {
                    plan.decided.push((
                        *index,
                        Outcome::Failed(Error::ValueTooLarge {
                            key: key.to_owned(),
                            size: json_len(&stored),
                            limit: limits.max_value,
                        }),
                    ));
                    plan.covered += 1;
                    continue;
                }
                let map_key = layout.map_key(key);
                let old = current.map_or(0, |c| entry_cost(&map_key, c));
                let new = entry_cost(&map_key, &stored);
                if new > old && size + (new - old) > limits.object_budget {
                    plan.decided.push((
                        *index,
                        Outcome::Failed(Error::StoreFull {
                            key: key.to_owned(),
                            needed: new - old,
                            available: limits.object_budget.saturating_sub(size),
                        }),
                    ));
                    plan.covered += 1;
                    continue;
                }
                size = (size + new).saturating_sub(old);
                these.push(json!({"op": "add", "path": pointer, "value": stored}));
                Some(stored)
            }
            OpKind::Delete => {
                if let Some(old) = current {
                    size = size.saturating_sub(entry_cost(&layout.map_key(key), old));
                    these.push(json!({"op": "remove", "path": pointer}));
                } else {
                    // Maybe created meanwhile by someone we have not heard from yet:
                    // add-then-remove deletes it either way and never fails.
                    these.push(json!({"op": "add", "path": pointer, "value": ""}));
                    these.push(json!({"op": "remove", "path": pointer}));
                }
                None
            }
        };
        let these_body: usize = these.iter().map(|v| v.to_string().len() + 1).sum();
        let full = preamble.len() + ops.len() + these.len() + 3 > limits.max_patch_ops
            || body + these_body > limits.max_body;
        if full && !plan.sent.is_empty() {
            break;
        }
        body += these_body;
        ops.extend(these);
        projected.insert(key, stored.clone());
        plan.sent.push((*index, stored));
        plan.covered += 1;
    }
    if plan.sent.is_empty() {
        return plan;
    }
    let mut patch = preamble;
    patch.extend(ops);
    let stamp = now_millis.to_string();
    match layout {
        Layout::Pepr { .. } => {
            // Puts back the placeholder Pepr keeps in every object, should
            // someone have removed it (a no-op otherwise).
            patch.push(json!({"op": "add", "path": format!("/data/{PEPR_PLACEHOLDER}"), "value": PEPR_PLACEHOLDER_VALUE}));
            if base.has_labels {
                patch.push(json!({"op": "add", "path": "/metadata/labels/pepr.dev-cacheID", "value": stamp}));
            } else {
                patch.push(json!({"op": "add", "path": "/metadata/labels", "value": {"pepr.dev-cacheID": stamp}}));
            }
        }
        Layout::Native { .. } => {
            // Derived from the data alone, so a write that changes no key changes
            // nothing and makes no new version.
            let (mut keys, mut bytes) = (0usize, 0usize);
            let mut count = |key: &str, value: &str| {
                keys += 1;
                bytes += key.len() + value.len();
            };
            for (key, value) in &base.data {
                if !projected.contains_key(&**key) {
                    count(key, value.as_str());
                }
            }
            for (key, value) in &projected {
                if let Some(value) = value {
                    count(key, value);
                }
            }
            patch.push(json!({"op": "add", "path": "/spec/keys", "value": keys}));
            patch.push(json!({"op": "add", "path": "/spec/bytes", "value": bytes}));
        }
    }
    plan.patch = patch;
    plan
}

#[cfg(test)]
mod tests {
    use store_core::backend::SharedKey;

    use super::*;

    #[test]
    fn the_memory_backend_twin_refuses_what_this_backend_refuses() {
        assert_eq!(Limits::default().max_value, store_core::KUBE_MAX_VALUE_SIZE);
    }
    use store_core::Payload;

    fn layout() -> Layout {
        Layout::Native {
            store: "s".into(),
            shards: 1,
        }
    }

    fn base(data: &[(&str, &str)]) -> Base {
        Base {
            revision: 10,
            data: data
                .iter()
                .map(|(k, v)| (SharedKey::from(*k), Stored::from(*v)))
                .collect(),
            size: 500,
            has_data_map: true,
            has_labels: true,
            ..Base::default()
        }
    }

    fn shard(data: &[(&str, &str, u64)]) -> Shard {
        Shard {
            revision: 10,
            data: {
                let mut entries: Vec<Entry> = data
                    .iter()
                    .map(|(k, v, r)| Entry::new(k, v, Version(*r)))
                    .collect();
                entries.sort_by(|a, b| a.key().cmp(b.key()));
                entries.into()
            },
            size: 500,
            declared_shards: Some(1),
            ..Shard::default()
        }
    }

    fn ops(patch: &[Value]) -> Vec<String> {
        patch
            .iter()
            .map(|v| {
                format!(
                    "{} {}",
                    v["op"].as_str().unwrap_or("?"),
                    v["path"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[test]
    fn a_failed_precondition_is_decided_without_sinking_the_batch() {
        let watched = shard(&[("a", "1", 7)]);
        let writes = vec![
            (
                0,
                Op::put("a", Payload::from("2")).when(Precondition::Version(Version(6))),
            ),
            (1, Op::put("b", Payload::from("3"))),
            (
                2,
                Op::put("a", Payload::from("4")).when(Precondition::Absent),
            ),
        ];
        let plan = plan(
            &layout(),
            Some(&watched),
            &base(&[("a", "1")]),
            &writes,
            &Limits::default(),
            1,
        );
        assert!(matches!(
            plan.decided[..],
            [
                (
                    0,
                    Outcome::Conflict {
                        actual: Some(Version(7))
                    }
                ),
                (2, Outcome::Conflict { .. })
            ]
        ));
        assert_eq!(plan.sent.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
        assert_eq!(ops(&plan.patch)[0], "add /spec/data/b");
    }

    #[test]
    fn a_version_precondition_tests_the_value_and_absence_tests_the_resource_version() {
        let watched = shard(&[("a", "1", 7)]);
        let writes = vec![
            (
                0,
                Op::put("a", Payload::from("2")).when(Precondition::Version(Version(7))),
            ),
            (
                1,
                Op::put("n/x", Payload::from("1")).when(Precondition::Absent),
            ),
            (2, Op::delete("gone")),
        ];
        let plan = plan(
            &layout(),
            Some(&watched),
            &base(&[("a", "1")]),
            &writes,
            &Limits::default(),
            1,
        );
        assert_eq!(
            ops(&plan.patch),
            [
                "test /spec/data/a",
                "add /spec/data/a",
                "test /metadata/resourceVersion",
                "add /spec/data/n~1x",
                "add /spec/data/gone",
                "remove /spec/data/gone",
                "add /spec/keys",
                "add /spec/bytes",
            ]
        );
        assert_eq!(plan.patch[2]["value"], "10");
    }

    #[test]
    fn a_full_object_refuses_only_the_write_that_overflows_it() {
        let limits = Limits {
            object_budget: 700,
            ..Limits::default()
        };
        let big = format!("\"{}\"", "x".repeat(150));
        let writes: Vec<_> = (0..3)
            .map(|i| (i, Op::put(format!("k{i}"), Payload::from(big.as_str()))))
            .collect();
        let plan = plan(&layout(), None, &base(&[]), &writes, &limits, 1);
        assert_eq!(plan.sent.len(), 1);
        assert!(matches!(
            &plan.decided[..],
            [
                (1, Outcome::Failed(Error::StoreFull { .. })),
                (2, Outcome::Failed(Error::StoreFull { .. }))
            ]
        ));
    }

    #[test]
    fn a_patch_stops_below_the_operation_limit_and_the_rest_waits() {
        let limits = Limits {
            max_patch_ops: 10,
            ..Limits::default()
        };
        let writes: Vec<_> = (0..20)
            .map(|i| (i, Op::put(format!("k{i}"), Payload::from("1"))))
            .collect();
        let plan = plan(&layout(), None, &base(&[]), &writes, &limits, 1);
        assert!(plan.patch.len() <= 10, "{}", plan.patch.len());
        assert_eq!(plan.covered, plan.sent.len());
        assert!(plan.covered < 20);
    }

    #[test]
    fn the_pepr_layout_keeps_the_placeholder_and_bumps_the_cache_id_label() {
        let layout = Layout::Pepr {
            object: "pepr-x-store".into(),
            capability: "cap".into(),
        };
        let writes = vec![(0, Op::put("a/b", Payload::from("\"yep\"")))];
        let plan = plan(&layout, None, &base(&[]), &writes, &Limits::default(), 1234);
        assert_eq!(
            plan.patch[0],
            json!({"op": "add", "path": "/data/cap-v2-a~1b", "value": "yep"})
        );
        assert_eq!(
            plan.patch[1],
            json!({"op": "add", "path": "/data/__pepr_do_not_delete__", "value": "k-thx-bye"})
        );
        assert_eq!(
            plan.patch[2],
            json!({"op": "add", "path": "/metadata/labels/pepr.dev-cacheID", "value": "1234"})
        );
    }
}
