//! `stat` (how full each object of a store is) and `migrate-pepr` (what Pepr's
//! v1-to-v2 key migration would move, and doing it).

use std::time::Duration;

use serde_json::{Value, json};
use store_kube::layout::Layout;
use store_kube::{DEFAULT_OBJECT_BUDGET, pepr_v1_keys};

use crate::args::Target;
use crate::failure::Failure;
use crate::open::{self, Opened, Place};
use crate::output::Printer;

/// Each object of the store: its keys, its JSON size against the default
/// object budget, and its resource version; then the store's totals.
/// On Redis: see [`crate::redis::stat`].
pub(crate) async fn stat(opened: &Opened, printer: &mut Printer<'_>) -> Result<(), Failure> {
    let (layout, objects) = match &opened.place {
        Place::Kube {
            layout, objects, ..
        } => (layout, objects),
        Place::Redis(backend) => return crate::redis::stat(opened, backend, printer).await,
    };
    let snapshot = opened.store.snapshot();
    let names = layout.objects();
    let mut keys = vec![0usize; names.len()];
    for key in snapshot.entries.keys() {
        if let Some(count) = keys.get_mut(layout.shard_of(key)) {
            *count += 1;
        }
    }
    let mut rows = Vec::with_capacity(names.len() + 1);
    let mut total_bytes = 0usize;
    for (name, keys) in names.iter().zip(&keys) {
        let object = objects.get_opt(name).await?;
        let bytes = object
            .as_ref()
            .and_then(|o| serde_json::to_vec(o).ok())
            .map_or(0, |json| json.len());
        total_bytes += bytes;
        rows.push(json!({
            "object": name,
            "keys": keys,
            "bytes": bytes,
            "fill": format!("{:.1}%", percent(bytes)),
            "version": object.and_then(|o| o.metadata.resource_version),
        }));
    }
    rows.push(json!({
        "object": "total",
        "keys": snapshot.entries.len(),
        "bytes": total_bytes,
        "fill": format!("{:.1}%", percent(total_bytes) / names.len().max(1) as f64),
        "version": snapshot.revision.0.to_string(),
    }));
    printer.rows(&["OBJECT", "KEYS", "BYTES", "FILL", "VERSION"], &rows)
}

/// Share of the default object budget, in percent.
fn percent(bytes: usize) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "a percentage to one decimal")]
    let share = bytes as f64 / DEFAULT_OBJECT_BUDGET as f64;
    share * 100.0
}

/// The v1 keys of the target's capability and what the migration does with
/// each; with `apply`, runs it (copies now, removes the originals after
/// `removal_delay`) and waits until no v1 key of the capability is left.
pub(crate) async fn migrate_pepr(
    target: &Target,
    others: &[String],
    apply: bool,
    removal_delay: Duration,
    printer: &mut Printer<'_>,
) -> Result<(), Failure> {
    if target.redis.is_some() {
        return Err(Failure::BadInput(
            "migrate-pepr moves keys of a Pepr store in Kubernetes; a Redis store has none \
             (drop `--redis`, give `--pepr UUID --capability NAME`)"
                .to_owned(),
        ));
    }
    let (_, layout, _, api) = open::locate(target).await?;
    let Layout::Pepr { object, capability } = layout else {
        return Err(Failure::BadInput(
            "migrate-pepr needs a Pepr store: `--pepr UUID --capability NAME`".to_owned(),
        ));
    };
    let plan = |data: &Value| {
        data.as_object()
            .map(|data| pepr_v1_keys(data, &capability, others))
            .unwrap_or_default()
    };
    let current = api.get(&object).await?;
    let keys = plan(&current.data["data"]);
    if apply && !keys.is_empty() {
        let opened = open::open_with(target, |builder| {
            builder
                .pepr_capabilities(others.iter().cloned())
                .pepr_v1_removal_delay(removal_delay)
        })
        .await?;
        let limit = removal_delay + Duration::from_secs(60);
        let until = tokio::time::Instant::now() + limit;
        loop {
            let now = api.get(&object).await?;
            if plan(&now.data["data"]).is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= until {
                return Err(Failure::Other(format!(
                    "v1 keys of `{capability}` were still there after {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(opened);
    }
    let rows: Vec<Value> = keys
        .iter()
        .map(|key| {
            let action = match (apply, key.copied) {
                (true, _) => "migrated",
                (false, false) => "copy, then remove the original",
                (false, true) => "remove the original (copied)",
            };
            json!({"v1": key.v1, "v2": key.v2, "action": action})
        })
        .collect();
    printer.rows(&["V1", "V2", "ACTION"], &rows)
}
