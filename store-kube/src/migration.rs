//! Pepr's v1-to-v2 key migration (`<capability>-<key>` to
//! `<capability>-v2-<key>`), done so that TypeScript Pepr pods starting at the
//! same time still complete their own.
//!
//! Pepr 1.1.4 migrates with one all-or-nothing patch, built from a read made
//! before it: `remove` of every v1 key it saw, `add` of its v2 copy, no `test`.
//! Removing a v1 key while such a patch is on its way fails the whole patch
//! (422), and Pepr never retries it, so its other capabilities stay v1. We
//! therefore migrate in two steps: at start-up, copy our v1 keys to v2 (a `test`
//! of each v1 value guards each copy, so other writers never fail it); then,
//! after a delay that covers a Pepr pod starting beside us, remove the
//! originals (again guarded per key). A v1 key Pepr removed first is simply done.
//!
//! A v1 key belongs to the longest declared capability it starts with, so
//! `hello-pepr-old` is `hello-pepr`'s even where `hello` is declared too.

use std::sync::Weak;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::{Map, Value, json};
use store_core::{Error, Result};

use crate::error::{self, NAME};
use crate::layout::pointer_segment;
use crate::shared::{Shared, now_millis};

/// How long one migration step keeps retrying refused or failed patches.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// The store key a v1 data-map key holds, if the key is `capability`'s: the
/// longest of `capability` and `others` that it starts with (followed by `-`)
/// must be `capability`.
pub(crate) fn v1_key<'a>(map_key: &'a str, capability: &str, others: &[String]) -> Option<&'a str> {
    let rest = map_key.strip_prefix(capability)?.strip_prefix('-')?;
    let longer_owner = others.iter().any(|other| {
        other.len() > capability.len()
            && map_key
                .strip_prefix(other.as_str())
                .is_some_and(|r| r.starts_with('-'))
    });
    // `v2-...` is a v2 key; `...-v2-...` is most likely the v2 key of a
    // capability nobody declared to us (`hello-pepr-v2-x` seen by `hello`).
    let v2 = rest.starts_with("v2-") || rest.contains("-v2-");
    (!rest.is_empty() && !longer_owner && !v2).then_some(rest)
}

/// One step's patch, or `None` when there is nothing left to do.
///
/// `copy`: every v1 key of ours with no v2 key yet gets one (`test` of the v1
/// value, `add` of the copy). Otherwise (removal): every v1 key of ours goes
/// (`test` of its value, `remove`).
/// A Pepr v1 key of one capability, and where the migration puts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeprV1Key {
    /// The v1 data-map key, `<capability>-<key>`.
    pub v1: String,
    /// Its v2 key, `<capability>-v2-<key>`.
    pub v2: String,
    /// Whether the v2 copy exists already (only the original's removal is left).
    pub copied: bool,
}

/// What the v1-to-v2 migration of `capability` finds in a `PeprStore`'s
/// `data`: each v1 key it owns (the longest of `capability`, `others` and the
/// capabilities seen in v2 keys that it starts with must be `capability`),
/// its v2 key, and whether the copy is made already. Values that are not
/// strings are not Pepr's and are left out.
pub fn pepr_v1_keys(
    data: &Map<String, Value>,
    capability: &str,
    others: &[String],
) -> Vec<PeprV1Key> {
    // Capabilities our name prefixes that nobody declared show in their v2
    // keys (`hello-pepr-v2-x`): their v1 keys are theirs too.
    let mut owners = others.to_vec();
    let prefix = format!("{capability}-");
    for map_key in data.keys() {
        if let Some(rest) = map_key.strip_prefix(&prefix)
            && let Some(at) = rest.find("-v2-").filter(|at| *at > 0)
        {
            owners.push(format!("{prefix}{}", &rest[..at]));
        }
    }
    data.iter()
        .filter(|(_, value)| value.is_string())
        .filter_map(|(map_key, _)| {
            let rest = v1_key(map_key, capability, &owners)?;
            let v2 = format!("{capability}-v2-{rest}");
            Some(PeprV1Key {
                v1: map_key.clone(),
                copied: data.contains_key(&v2),
                v2,
            })
        })
        .collect()
}

fn step_patch(
    data: &Map<String, Value>,
    has_labels: bool,
    capability: &str,
    others: &[String],
    copy: bool,
) -> Option<(Vec<Value>, usize)> {
    let mut patch = Vec::new();
    let mut keys = 0;
    for key in pepr_v1_keys(data, capability, others) {
        let Some(text) = data.get(&key.v1).and_then(Value::as_str) else {
            continue;
        };
        let from = format!("/data/{}", pointer_segment(&key.v1));
        if copy {
            if key.copied {
                continue;
            }
            patch.push(json!({"op": "test", "path": from, "value": text}));
            let to = format!("/data/{}", pointer_segment(&key.v2));
            patch.push(json!({"op": "add", "path": to, "value": text}));
        } else {
            patch.push(json!({"op": "test", "path": from, "value": text}));
            patch.push(json!({"op": "remove", "path": from}));
        }
        keys += 1;
    }
    if keys == 0 {
        return None;
    }
    let stamp = now_millis().to_string();
    // An object without labels (made by hand) gets the map; a path into a
    // missing map would fail the patch every time.
    patch.push(if has_labels {
        json!({"op": "add", "path": "/metadata/labels/pepr.dev-cacheID", "value": stamp})
    } else {
        json!({"op": "add", "path": "/metadata/labels", "value": {"pepr.dev-cacheID": stamp}})
    });
    Some((patch, keys))
}

impl Shared {
    /// Runs one migration step until it is done: a patch refused because a v1
    /// key changed or went meanwhile is planned again on a fresh read;
    /// transient failures back off. Gives up with an error after
    /// [`STEP_DEADLINE`], or at once when the server refuses the object.
    pub(crate) async fn migrate_step(
        &self,
        object: &str,
        capability: &str,
        others: &[String],
        copy: bool,
    ) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
        let mut backoff = Duration::from_millis(20);
        let params = PatchParams {
            field_manager: Some(self.field_manager().to_owned()),
            ..PatchParams::default()
        };
        let mut attempts = 0usize;
        loop {
            attempts += 1;
            let outcome = async {
                let current = self
                    .call("get", "get", self.api.get(object))
                    .await
                    .map_err(error::from_kube)?;
                let json = crate::cache::to_json(&current)?;
                let Some(data) = json.get("data").and_then(Value::as_object) else {
                    return Ok(Some(0));
                };
                let has_labels = current.metadata.labels.is_some();
                let Some((patch, keys)) = step_patch(data, has_labels, capability, others, copy)
                else {
                    return Ok(Some(0));
                };
                let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch))
                    .map_err(|e| Error::backend(NAME, e))?;
                match self
                    .call(
                        "migrate",
                        "patch",
                        self.api.patch(object, &params, &Patch::Json::<()>(patch)),
                    )
                    .await
                {
                    Ok(_) => Ok(Some(keys)),
                    Err(e) if error::invalid_fields(&e).is_some() => Err(Error::backend(
                        NAME,
                        format!(
                            "the API server refused the Pepr v1 key migration of {object}: {}",
                            error::invalid_fields(&e)
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(_, reason)| reason)
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    )),
                    // A v1 key changed or went since the read: read again.
                    Err(e) if error::is_patch_rejected(&e) => Ok(None),
                    Err(e) => Err(error::from_kube(e)),
                }
            }
            .await;
            let retry = match outcome {
                Ok(Some(keys)) => {
                    if keys > 0 {
                        tracing::info!(
                            object,
                            capability,
                            keys,
                            step = if copy { "copied" } else { "removed originals" },
                            "migrated Pepr v1 keys to v2"
                        );
                    }
                    return Ok(keys);
                }
                Ok(None) => {
                    tracing::debug!(
                        object,
                        attempts,
                        "v1 migration patch refused; reading again"
                    );
                    Duration::ZERO
                }
                Err(e) if e.is_transient() => {
                    tracing::debug!(object, attempts, error = %e, "v1 migration failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    backoff
                }
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() + retry >= deadline {
                tracing::error!(
                    object,
                    capability,
                    attempts,
                    "Pepr v1 key migration did not finish"
                );
                return Err(Error::unavailable(
                    NAME,
                    format!(
                        "Pepr v1 key migration of {object} for capability {capability:?} \
                         did not finish after {attempts} attempts"
                    ),
                ));
            }
            tokio::time::sleep(retry).await;
        }
    }
}

/// Removes the v1 originals after `delay`, leaving any Pepr pod that read them
/// meanwhile time to send its own migration patch. Stops when the backend is
/// dropped.
pub(crate) fn remove_v1_later(
    inner: Weak<Shared>,
    mut stop: tokio::sync::watch::Receiver<()>,
    object: String,
    capability: String,
    others: Vec<String>,
    delay: Duration,
) {
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        let removal = inner.migrate_step(&object, &capability, &others, false);
        tokio::select! {
            result = removal => {
                if let Err(e) = result {
                    tracing::error!(object, capability, error = %e, "removing Pepr v1 keys failed; the next start-up tries again");
                }
            }
            _ = stop.changed() => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn others(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_v1_key_belongs_to_the_longest_capability_it_names() {
        let none = others(&[]);
        let hello = others(&["hello"]);
        let pepr = others(&["hello-pepr"]);
        let both = others(&["hello", "hello-pepr", "hello-pepr-x"]);
        assert_eq!(v1_key("hello-pepr-old", "hello-pepr", &hello), Some("old"));
        assert_eq!(v1_key("hello-pepr-old", "hello-pepr", &none), Some("old"));
        assert_eq!(v1_key("hello-pepr-old", "hello", &pepr), None);
        assert_eq!(v1_key("hello-old", "hello", &pepr), Some("old"));
        assert_eq!(v1_key("hello-old", "hello-pepr", &hello), None);
        assert_eq!(v1_key("hello-pepr-x-k", "hello-pepr", &both), None);
        assert_eq!(v1_key("hello-pepr-k", "hello-pepr", &both), Some("k"));
        // Undeclared, `hello-pepr` is indistinguishable from a key of `hello`.
        assert_eq!(v1_key("hello-pepr-old", "hello", &none), Some("pepr-old"));
        for not_v1 in [
            "hello-v2-k",
            "hello-pepr-v2-k",
            "hello-",
            "hello",
            "helloworld-k",
        ] {
            assert_eq!(v1_key(not_v1, "hello", &none), None, "{not_v1}");
        }
    }

    #[test]
    fn copying_tests_each_v1_value_and_removal_waits_for_nothing_else() {
        let data: Map<String, Value> = serde_json::from_value(json!({
            "cap-a": "1", "cap-b": "2", "cap-v2-b": "newer", "other-c": "3", "cap-n": 5,
        }))
        .expect("map");
        let (patch, keys) = step_patch(&data, true, "cap", &[], true).expect("work");
        assert_eq!(keys, 1, "only `a` lacks a v2 copy");
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/data/cap-a", "value": "1"})
        );
        assert_eq!(
            patch[1],
            json!({"op": "add", "path": "/data/cap-v2-a", "value": "1"})
        );
        let (patch, keys) = step_patch(&data, true, "cap", &[], false).expect("work");
        assert_eq!(keys, 2);
        assert!(patch.iter().all(|op| op["path"] != "/data/cap-v2-b"));
        assert!(step_patch(&data, true, "nobody", &[], true).is_none());
    }

    #[test]
    fn an_undeclared_capability_is_known_by_its_v2_keys() {
        let data: Map<String, Value> = serde_json::from_value(json!({
            "hello-old": "h", "hello-pepr-old": "p", "hello-pepr-v2-x": "v",
        }))
        .expect("map");
        let (patch, keys) = step_patch(&data, true, "hello", &[], true).expect("work");
        assert_eq!(keys, 1);
        assert_eq!(patch[1]["path"], "/data/hello-v2-old");
    }
}
