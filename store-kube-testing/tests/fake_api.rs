//! The fake API server's protocol, observed through kube-rs clients. Every
//! case runs on the fake and on a real control plane (`on_a_real_control_plane`
//! skips with a notice unless binaries are provisioned: `cargo xtask envtest`),
//! so each assertion here is something kube-apiserver does too.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions, VersionMatch, WatchEvent, WatchParams,
};
use kube::{Resource, ResourceExt};
use serde_json::json;
use store_kube_testing::{FakeApiServer, TestCluster, on_both_tiers};
use support::{
    Gadget, GadgetSpec, WidgetSpec, WidgetStatus, api_error, next_event, raw, setup, unique,
    widget, within,
};

fn sized(size: i64) -> WidgetSpec {
    WidgetSpec {
        size: Some(size),
        ..WidgetSpec::default()
    }
}

/// Creates widgets `{prefix}0` to `{prefix}{n - 1}`, widget `i` of size `i`.
async fn create_widgets(f: &support::Fixture, prefix: &str, n: i64) {
    for i in 0..n {
        f.widgets
            .create(
                &PostParams::default(),
                &widget(&format!("{prefix}{i}"), sized(i)),
            )
            .await
            .expect("create");
    }
}

fn labelled(name: &str, labels: &[(&str, &str)]) -> support::Widget {
    let mut w = widget(name, sized(1));
    w.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    w
}

fn rv(object: &impl Resource) -> String {
    object
        .meta()
        .resource_version
        .clone()
        .expect("a resourceVersion")
}

async fn objects_get_server_owned_metadata_on_create(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|uid| uid.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some(f.namespace.as_str()));
    let fetched = f.widgets.get("a").await.expect("get");
    assert_eq!(fetched.metadata.uid, meta.uid);
    assert_eq!(rv(&fetched), rv(&created));
    let listed = f.widgets.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    let list_rv: u64 = listed
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()
        .expect("numeric");
    assert!(list_rv >= rv(&created).parse::<u64>().expect("numeric"));
}
on_both_tiers!(objects_get_server_owned_metadata_on_create);

async fn a_duplicate_create_gets_409_already_exists(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let error = api_error(
        f.widgets
            .create(&PostParams::default(), &widget("a", sized(2)))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (409, "AlreadyExists"));
}
on_both_tiers!(a_duplicate_create_gets_409_already_exists);

async fn generate_name_gets_a_random_suffix(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut w = widget("", sized(1));
    w.metadata.name = None;
    w.metadata.generate_name = Some("gen-".to_owned());
    let created = f
        .widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    let name = created.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}
on_both_tiers!(generate_name_gets_a_random_suffix);

async fn a_missing_object_gets_404_not_found(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let error = api_error(f.widgets.get("missing").await);
    assert_eq!((error.code, error.reason.as_str()), (404, "NotFound"));
    let patch = Patch::Merge(json!({ "spec": { "size": 1 } }));
    let error = api_error(
        f.widgets
            .patch("missing", &PatchParams::default(), &patch)
            .await,
    );
    assert_eq!(error.code, 404);
    let error = api_error(f.widgets.delete("missing", &DeleteParams::default()).await);
    assert_eq!(error.code, 404);
}
on_both_tiers!(a_missing_object_gets_404_not_found);

async fn creating_in_a_missing_namespace_gets_404(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let nowhere: Api<support::Widget> = Api::namespaced(f.client.clone(), &unique("missing"));
    let error = api_error(
        nowhere
            .create(&PostParams::default(), &widget("a", sized(1)))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (404, "NotFound"));
}
on_both_tiers!(creating_in_a_missing_namespace_gets_404);

async fn an_invalid_name_gets_422_invalid(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let error = api_error(
        f.widgets
            .create(&PostParams::default(), &widget("Bad_Name", sized(1)))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
}
on_both_tiers!(an_invalid_name_gets_422_invalid);

async fn a_stale_resource_version_on_replace_gets_409(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let mut first = f.widgets.get("a").await.expect("get");
    let mut second = first.clone();
    first.spec.size = Some(2);
    f.widgets
        .replace("a", &PostParams::default(), &first)
        .await
        .expect("replace");
    second.spec.size = Some(3);
    let error = api_error(
        f.widgets
            .replace("a", &PostParams::default(), &second)
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert!(
        error.message.contains("the object has been modified"),
        "{}",
        error.message
    );
    assert_eq!(f.widgets.get("a").await.expect("get").spec.size, Some(2));
}
on_both_tiers!(a_stale_resource_version_on_replace_gets_409);

async fn a_replace_without_a_resource_version_gets_422(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let error = api_error(
        f.widgets
            .replace("a", &PostParams::default(), &widget("a", sized(2)))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
}
on_both_tiers!(a_replace_without_a_resource_version_gets_422);

async fn a_stale_resource_version_in_a_patch_gets_409(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let stale = rv(&created);
    f.widgets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 2 } })),
        )
        .await
        .expect("patch");
    let merge =
        Patch::Merge(json!({ "metadata": { "resourceVersion": stale }, "spec": { "size": 3 } }));
    let error = api_error(f.widgets.patch("a", &PatchParams::default(), &merge).await);
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    let json: json_patch::Patch = serde_json::from_value(json!([
        { "op": "replace", "path": "/metadata/resourceVersion", "value": stale },
        { "op": "replace", "path": "/spec/size", "value": 4 },
    ]))
    .expect("patch document");
    let error = api_error(
        f.widgets
            .patch("a", &PatchParams::default(), &Patch::<()>::Json(json))
            .await,
    );
    assert_eq!(error.code, 409);
    assert_eq!(f.widgets.get("a").await.expect("get").spec.size, Some(2));
}
on_both_tiers!(a_stale_resource_version_in_a_patch_gets_409);

async fn a_failed_json_patch_test_gets_422_and_changes_nothing(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let failing: json_patch::Patch = serde_json::from_value(json!([
        { "op": "replace", "path": "/spec/size", "value": 2 },
        { "op": "test", "path": "/spec/size", "value": 99 },
    ]))
    .expect("patch document");
    let error = api_error(
        f.widgets
            .patch("a", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
    let after = f.widgets.get("a").await.expect("get");
    assert_eq!((after.spec.size, rv(&after)), (Some(1), rv(&created)));
    let passing: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/spec/size", "value": 1 },
        { "op": "replace", "path": "/spec/size", "value": 2 },
    ]))
    .expect("patch document");
    let patched = f
        .widgets
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(passing))
        .await
        .expect("patch");
    assert_eq!(patched.spec.size, Some(2));
}
on_both_tiers!(a_failed_json_patch_test_gets_422_and_changes_nothing);

async fn a_json_patch_of_more_than_10000_operations_gets_413(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let operation = json!({ "op": "test", "path": "/spec/size", "value": 1 });
    let at_limit: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(vec![operation.clone(); 10_000]))
            .expect("patch");
    f.widgets
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(at_limit))
        .await
        .expect("10000 operations are allowed");
    let over: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(vec![operation; 10_001])).expect("patch");
    let error = api_error(
        f.widgets
            .patch("a", &PatchParams::default(), &Patch::<()>::Json(over))
            .await,
    );
    assert_eq!(
        (error.code, error.reason.as_str()),
        (413, "RequestEntityTooLarge")
    );
}
on_both_tiers!(a_json_patch_of_more_than_10000_operations_gets_413);

async fn a_merge_patch_merges_maps_and_null_deletes(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut w = widget("a", sized(1));
    w.spec.tags = Some(BTreeMap::from([
        ("a".into(), "1".into()),
        ("b".into(), "2".into()),
    ]));
    w.spec.color = Some("red".into());
    f.widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    let patch = Patch::Merge(json!({ "spec": { "color": null, "tags": { "a": null, "c": "3" } } }));
    let patched = f
        .widgets
        .patch("a", &PatchParams::default(), &patch)
        .await
        .expect("patch");
    assert_eq!(patched.spec.color, None);
    assert_eq!(
        patched.spec.tags,
        Some(BTreeMap::from([
            ("b".into(), "2".into()),
            ("c".into(), "3".into())
        ]))
    );
    assert_eq!(patched.spec.size, Some(1));
}
on_both_tiers!(a_merge_patch_merges_maps_and_null_deletes);

async fn generation_counts_spec_changes_only(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let pp = PatchParams::default();
    let labelled = f
        .widgets
        .patch(
            "a",
            &pp,
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await
        .expect("label");
    assert_eq!(labelled.metadata.generation, Some(1));
    let status = f
        .widgets
        .patch_status(
            "a",
            &pp,
            &Patch::Merge(json!({ "status": { "phase": "Ready" } })),
        )
        .await
        .expect("status");
    assert_eq!(status.metadata.generation, Some(1));
    let spec = f
        .widgets
        .patch("a", &pp, &Patch::Merge(json!({ "spec": { "size": 2 } })))
        .await
        .expect("spec");
    assert_eq!(spec.metadata.generation, Some(2));
}
on_both_tiers!(generation_counts_spec_changes_only);

async fn the_status_subresource_is_separate_from_the_main_resource(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut w = widget("a", sized(1));
    w.status = Some(WidgetStatus {
        phase: Some("Ignored".into()),
    });
    let created = f
        .widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    assert_eq!(created.status, None, "status is dropped on create");
    let pp = PatchParams::default();
    let status = f
        .widgets
        .patch_status(
            "a",
            &pp,
            &Patch::Merge(json!({ "status": { "phase": "Ready" }, "spec": { "size": 5 } })),
        )
        .await
        .expect("status patch");
    assert_eq!(
        status.status.and_then(|s| s.phase).as_deref(),
        Some("Ready")
    );
    assert_eq!(
        status.spec.size,
        Some(1),
        "the status endpoint ignores spec"
    );
    let main = f
        .widgets
        .patch(
            "a",
            &pp,
            &Patch::Merge(json!({ "status": { "phase": "Lost" }, "spec": { "size": 2 } })),
        )
        .await
        .expect("main patch");
    assert_eq!(
        main.status.and_then(|s| s.phase).as_deref(),
        Some("Ready"),
        "the main endpoint ignores status"
    );
    assert_eq!(main.spec.size, Some(2));
}
on_both_tiers!(the_status_subresource_is_separate_from_the_main_resource);

async fn a_write_that_changes_nothing_makes_no_version_and_no_event(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let version = rv(&created);
    let mut events = f
        .widgets
        .watch(&WatchParams::default().disable_bookmarks(), &version)
        .await
        .expect("watch")
        .boxed();
    let replaced = f
        .widgets
        .replace("a", &PostParams::default(), &created)
        .await
        .expect("replace");
    assert_eq!(rv(&replaced), version, "an identical replace");
    let pp = PatchParams::default();
    let merged = f
        .widgets
        .patch("a", &pp, &Patch::Merge(json!({ "spec": { "size": 1 } })))
        .await
        .expect("merge");
    assert_eq!(rv(&merged), version, "a merge patch of equal values");
    let test_only: json_patch::Patch =
        serde_json::from_value(json!([{ "op": "test", "path": "/spec/size", "value": 1 }]))
            .expect("patch");
    let tested = f
        .widgets
        .patch("a", &pp, &Patch::<()>::Json(test_only))
        .await
        .expect("test-only patch");
    assert_eq!(rv(&tested), version, "a JSON patch of tests only");
    let apply = PatchParams::apply("applier");
    let config = json!({ "apiVersion": "fake.store-kube.test/v1", "kind": "Widget", "spec": { "color": "red" } });
    let applied = f
        .widgets
        .patch("a", &apply, &Patch::Apply(&config))
        .await
        .expect("apply");
    let reapplied = f
        .widgets
        .patch("a", &apply, &Patch::Apply(&config))
        .await
        .expect("re-apply");
    assert_eq!(
        rv(&reapplied),
        rv(&applied),
        "re-applying the same configuration"
    );
    // The first event after the no-ops is the apply that changed something.
    match next_event(&mut events).await {
        WatchEvent::Modified(w) => assert_eq!(rv(&w), rv(&applied)),
        other => panic!("expected the apply's MODIFIED event, got {other:?}"),
    }
    let changed = f
        .widgets
        .patch("a", &pp, &Patch::Merge(json!({ "spec": { "size": 2 } })))
        .await
        .expect("change");
    match next_event(&mut events).await {
        WatchEvent::Modified(w) => assert_eq!(rv(&w), rv(&changed)),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}
on_both_tiers!(a_write_that_changes_nothing_makes_no_version_and_no_event);

async fn deletes_honour_uid_and_resource_version_preconditions(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let wrong_uid = DeleteParams::default().preconditions(Preconditions {
        uid: Some("00000000-0000-0000-0000-000000000000".into()),
        resource_version: None,
    });
    let error = api_error(f.widgets.delete("a", &wrong_uid).await);
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    let wrong_version = DeleteParams::default().preconditions(Preconditions {
        uid: None,
        resource_version: Some("1".into()),
    });
    let error = api_error(f.widgets.delete("a", &wrong_version).await);
    assert_eq!(error.code, 409);
    let right = DeleteParams::default().preconditions(Preconditions {
        uid: created.metadata.uid.clone(),
        resource_version: Some(rv(&created)),
    });
    let deleted = f.widgets.delete("a", &right).await.expect("delete");
    let status = deleted.right().expect("a Status for a completed deletion");
    assert_eq!(status.details.map(|d| d.uid), created.metadata.uid);
    assert_eq!(api_error(f.widgets.get("a").await).code, 404);
}
on_both_tiers!(deletes_honour_uid_and_resource_version_preconditions);

async fn finalizers_hold_a_deleted_object_until_they_are_removed(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut w = widget("a", sized(1));
    w.metadata.finalizers = Some(vec!["fake.store-kube.test/hold".into()]);
    let created = f
        .widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    let mut events = f
        .widgets
        .watch(&WatchParams::default().disable_bookmarks(), &rv(&created))
        .await
        .expect("watch")
        .boxed();
    let pending = f
        .widgets
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = pending
        .left()
        .expect("the object, still held by its finalizer");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2));
    assert!(f.widgets.get("a").await.is_ok());
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Modified(_)
    ));
    f.widgets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .expect("remove finalizers");
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Deleted(_)
    ));
    assert_eq!(api_error(f.widgets.get("a").await).code, 404);
}
on_both_tiers!(finalizers_hold_a_deleted_object_until_they_are_removed);

async fn server_side_apply_conflicts_with_another_manager_unless_forced(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let config = |size: i64| json!({ "apiVersion": "fake.store-kube.test/v1", "kind": "Widget", "metadata": { "name": "a" }, "spec": { "size": size } });
    let created = f
        .widgets
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(config(1)))
        .await
        .expect("apply creates");
    assert_eq!(created.spec.size, Some(1));
    let error = api_error(
        f.widgets
            .patch("a", &PatchParams::apply("bob"), &Patch::Apply(config(2)))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert!(
        error.message.contains("conflict with \"alice\""),
        "{}",
        error.message
    );
    let causes = error.details.map(|d| d.causes).unwrap_or_default();
    assert_eq!(causes.first().map(|c| c.field.as_str()), Some(".spec.size"));
    let forced = f
        .widgets
        .patch(
            "a",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(config(2)),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.spec.size, Some(2));
    let managers: Vec<(String, String)> = forced
        .managed_fields()
        .iter()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        [("bob".to_owned(), "Apply".to_owned())],
        "alice lost her only field"
    );
    let fields = forced.managed_fields()[0]
        .fields_v1
        .clone()
        .expect("fieldsV1")
        .0;
    assert_eq!(fields["f:spec"]["f:size"], json!({}));
}
on_both_tiers!(server_side_apply_conflicts_with_another_manager_unless_forced);

async fn server_side_apply_removes_fields_the_manager_stops_applying(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let apply = PatchParams::apply("owner");
    let both = json!({ "apiVersion": "fake.store-kube.test/v1", "kind": "Widget", "metadata": { "name": "a" }, "spec": { "size": 1, "color": "red" } });
    f.widgets
        .patch("a", &apply, &Patch::Apply(&both))
        .await
        .expect("apply");
    let one = json!({ "apiVersion": "fake.store-kube.test/v1", "kind": "Widget", "metadata": { "name": "a" }, "spec": { "size": 1 } });
    let after = f
        .widgets
        .patch("a", &apply, &Patch::Apply(&one))
        .await
        .expect("apply");
    assert_eq!((after.spec.size, after.spec.color), (Some(1), None));
}
on_both_tiers!(server_side_apply_removes_fields_the_manager_stops_applying);

async fn managed_fields_keep_one_entry_per_manager(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut w = widget("a", sized(1));
    w.spec.color = Some("red".into());
    let pp = PostParams {
        field_manager: Some("creator".into()),
        ..PostParams::default()
    };
    f.widgets.create(&pp, &w).await.expect("create");
    let patcher = PatchParams {
        field_manager: Some("patcher".into()),
        ..PatchParams::default()
    };
    f.widgets
        .patch(
            "a",
            &patcher,
            &Patch::Merge(json!({ "spec": { "color": "blue" } })),
        )
        .await
        .expect("patch");
    let again = f
        .widgets
        .patch(
            "a",
            &patcher,
            &Patch::Merge(json!({ "spec": { "color": "green" } })),
        )
        .await
        .expect("patch");
    let entries = again.managed_fields();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let by = |manager: &str| {
        entries
            .iter()
            .find(|e| e.manager.as_deref() == Some(manager))
            .and_then(|e| e.fields_v1.clone())
            .map(|f| f.0)
            .unwrap_or_default()
    };
    assert_eq!(by("patcher")["f:spec"]["f:color"], json!({}));
    assert!(by("creator")["f:spec"].get("f:color").is_none());
    assert_eq!(by("creator")["f:spec"]["f:size"], json!({}));
    assert!(
        entries
            .iter()
            .all(|e| e.operation.as_deref() == Some("Update"))
    );
}
on_both_tiers!(managed_fields_keep_one_entry_per_manager);

async fn strategic_merge_patch_on_a_custom_resource_gets_415(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let patch = Patch::Strategic(json!({ "spec": { "size": 2 } }));
    let error = api_error(f.widgets.patch("a", &PatchParams::default(), &patch).await);
    assert_eq!(
        (error.code, error.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
}
on_both_tiers!(strategic_merge_patch_on_a_custom_resource_gets_415);

async fn label_and_field_selectors_select_like_the_api_server(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let pp = PostParams::default();
    for (name, labels) in [
        ("web-1", vec![("app", "web"), ("tier", "front")]),
        ("web-2", vec![("app", "web"), ("tier", "back")]),
        ("db-1", vec![("app", "db")]),
        ("bare", vec![]),
    ] {
        f.widgets
            .create(&pp, &labelled(name, &labels))
            .await
            .expect("create");
    }
    let names = |selector: &'static str| {
        let widgets = f.widgets.clone();
        async move {
            let list = widgets
                .list(&ListParams::default().labels(selector))
                .await
                .expect(selector);
            let mut names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
            names.sort();
            names
        }
    };
    assert_eq!(names("app=web").await, ["web-1", "web-2"]);
    assert_eq!(names("app==db").await, ["db-1"]);
    assert_eq!(names("app!=web").await, ["bare", "db-1"]);
    assert_eq!(names("tier in (front,side)").await, ["web-1"]);
    assert_eq!(names("tier notin (front)").await, ["bare", "db-1", "web-2"]);
    assert_eq!(names("tier").await, ["web-1", "web-2"]);
    assert_eq!(names("!app").await, ["bare"]);
    assert_eq!(names("app=web,tier=back").await, ["web-2"]);
    let by_name = f
        .widgets
        .list(&ListParams::default().fields("metadata.name=db-1"))
        .await
        .expect("field selector");
    assert_eq!(by_name.items.len(), 1);
    let error = api_error(
        f.widgets
            .list(&ListParams::default().fields("spec.size=1"))
            .await,
    );
    assert_eq!(error.code, 400);
    let error = api_error(
        f.widgets
            .list(&ListParams::default().labels("app in (web"))
            .await,
    );
    assert_eq!(error.code, 400);
}
on_both_tiers!(label_and_field_selectors_select_like_the_api_server);

async fn lists_paginate_with_limit_and_continue(cluster: &TestCluster) {
    let f = setup(cluster).await;
    create_widgets(&f, "w", 5).await;
    let first = f
        .widgets
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    // Pages after the first show the snapshot of the first.
    f.widgets
        .create(&PostParams::default(), &widget("w9", sized(9)))
        .await
        .expect("create");
    let second = f
        .widgets
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    let token = second.metadata.continue_.clone().expect("a continue token");
    let third = f
        .widgets
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 3");
    assert!(
        third
            .metadata
            .continue_
            .as_deref()
            .is_none_or(str::is_empty)
    );
    let names: Vec<String> = [first.items, second.items, third.items]
        .concat()
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(names, ["w0", "w1", "w2", "w3", "w4"]);
}
on_both_tiers!(lists_paginate_with_limit_and_continue);

async fn metadata_only_reads_carry_the_metadata_alone(cluster: &TestCluster) {
    let f = setup(cluster).await;
    create_widgets(&f, "m", 3).await;
    let url = support::Widget::url_path(&(), Some(&f.namespace));
    let list = kube::core::Request::new(&url)
        .list_metadata(&ListParams::default())
        .expect("a request");
    let list = raw(&f.client, list).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(
        list.body["kind"], "PartialObjectMetadataList",
        "{}",
        list.text
    );
    assert_eq!(list.body["apiVersion"], "meta.k8s.io/v1");
    assert!(list.body["metadata"]["resourceVersion"].is_string());
    let items = list.body["items"].as_array().expect("items");
    let names: Vec<&str> = items
        .iter()
        .map(|item| item["metadata"]["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["m0", "m1", "m2"]);
    for item in items {
        assert_eq!(item["kind"], "PartialObjectMetadata");
        assert!(item["metadata"]["resourceVersion"].is_string());
        assert!(item["metadata"]["managedFields"].is_array());
        assert!(item.get("spec").is_none(), "{item}");
    }
    let one = kube::core::Request::new(&url)
        .get_metadata("m1", &kube::api::GetParams::default())
        .expect("a request");
    let one = raw(&f.client, one).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body["kind"], "PartialObjectMetadata");
    assert_eq!(one.body["metadata"]["name"], "m1");
    assert!(one.body.get("spec").is_none(), "{}", one.text);
    // None selected: `items` is `null`, not `[]`.
    let none = kube::core::Request::new(&url)
        .list_metadata(&ListParams::default().labels("absent=yes"))
        .expect("a request");
    let none = raw(&f.client, none).await;
    assert_eq!(none.status, 200, "{}", none.text);
    assert!(none.body["items"].is_null(), "{}", none.text);
    // kube-rs reads both.
    let typed = f
        .widgets
        .list_metadata(&ListParams::default())
        .await
        .expect("a metadata list");
    assert_eq!(typed.items.len(), 3);
}
on_both_tiers!(metadata_only_reads_carry_the_metadata_alone);

async fn an_exact_list_shows_an_earlier_revision(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    f.widgets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 2 } })),
        )
        .await
        .expect("patch");
    let exact = ListParams::default()
        .at(&rv(&created))
        .matching(VersionMatch::Exact);
    let then = f.widgets.list(&exact).await.expect("exact list");
    assert_eq!(then.items[0].spec.size, Some(1));
    assert_eq!(
        then.metadata.resource_version.as_deref(),
        Some(rv(&created).as_str())
    );
    let now = f
        .widgets
        .list(&ListParams::default())
        .await
        .expect("latest list");
    assert_eq!(now.items[0].spec.size, Some(2));
    let any = f
        .widgets
        .list(&ListParams::default().match_any())
        .await
        .expect("any list");
    assert_eq!(any.items.len(), 1);
}
on_both_tiers!(an_exact_list_shows_an_earlier_revision);

async fn a_watch_sees_added_modified_and_deleted_in_order(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let before = f.widgets.list(&ListParams::default()).await.expect("list");
    let start = before
        .metadata
        .resource_version
        .clone()
        .expect("list version");
    let mut events = f
        .widgets
        .watch(&WatchParams::default().disable_bookmarks(), &start)
        .await
        .expect("watch")
        .boxed();
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let patched = f
        .widgets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 2 } })),
        )
        .await
        .expect("patch");
    f.widgets
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    match next_event(&mut events).await {
        WatchEvent::Added(w) => assert_eq!(rv(&w), rv(&created)),
        other => panic!("expected ADDED, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Modified(w) => assert_eq!((rv(&w), w.spec.size), (rv(&patched), Some(2))),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Deleted(w) => {
            let deleted_at: u64 = rv(&w).parse().expect("numeric");
            assert!(deleted_at > rv(&patched).parse::<u64>().expect("numeric"));
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
}
on_both_tiers!(a_watch_sees_added_modified_and_deleted_in_order);

async fn a_watch_from_zero_starts_with_the_current_objects(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let mut events = f
        .widgets
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .expect("watch")
        .boxed();
    match next_event(&mut events).await {
        WatchEvent::Added(w) => assert_eq!(w.name_any(), "a"),
        other => panic!("expected a synthetic ADDED, got {other:?}"),
    }
}
on_both_tiers!(a_watch_from_zero_starts_with_the_current_objects);

async fn a_selective_watch_sees_objects_enter_and_leave_its_selector(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let params = WatchParams::default()
        .labels("watched=yes")
        .disable_bookmarks();
    let mut events = f
        .widgets
        .watch(&params, &rv(&created))
        .await
        .expect("watch")
        .boxed();
    let pp = PatchParams::default();
    f.widgets
        .patch(
            "a",
            &pp,
            &Patch::Merge(json!({ "metadata": { "labels": { "watched": "yes" } } })),
        )
        .await
        .expect("label");
    f.widgets
        .patch(
            "a",
            &pp,
            &Patch::Merge(json!({ "metadata": { "labels": { "watched": null } } })),
        )
        .await
        .expect("unlabel");
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Added(_)
    ));
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Deleted(_)
    ));
}
on_both_tiers!(a_selective_watch_sees_objects_enter_and_leave_its_selector);

async fn a_watch_from_a_compacted_version_gets_410_gone(cluster: &TestCluster) {
    let f = setup(cluster).await;
    create_widgets(&f, "w", 6).await;
    let mut events = f
        .widgets
        .watch(&WatchParams::default().disable_bookmarks(), "1")
        .await
        .expect("the watch starts; the error arrives as an event")
        .boxed();
    match next_event(&mut events).await {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
}
on_both_tiers!(
    a_watch_from_a_compacted_version_gets_410_gone,
    FakeApiServer::builder().history_window(5)
);

async fn an_exact_list_at_a_compacted_version_gets_410_gone(cluster: &TestCluster) {
    let f = setup(cluster).await;
    create_widgets(&f, "w", 6).await;
    let exact = ListParams::default().at("2").matching(VersionMatch::Exact);
    // etcd compaction is periodic on the real tier (every few seconds in the
    // harness): wait for it, on a deadline.
    let error = within("revision 2 to be compacted", async {
        loop {
            match f.widgets.list(&exact).await {
                Err(kube::Error::Api(status)) => return status,
                Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
    })
    .await;
    assert_eq!((error.code, error.reason.as_str()), (410, "Expired"));
}
on_both_tiers!(
    an_exact_list_at_a_compacted_version_gets_410_gone,
    FakeApiServer::builder().history_window(5)
);

async fn bookmarks_arrive_on_watches_that_allow_them(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let before = f.widgets.list(&ListParams::default()).await.expect("list");
    let start = before
        .metadata
        .resource_version
        .clone()
        .expect("list version");
    // kube-apiserver sends a bookmark two seconds before the watch times out,
    // and only one newer than the watch's start.
    let mut events = f
        .widgets
        .watch(&WatchParams::default().timeout(4), &start)
        .await
        .expect("watch")
        .boxed();
    let created = f
        .widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Added(_)
    ));
    match next_event(&mut events).await {
        WatchEvent::Bookmark(bookmark) => {
            let at: u64 = bookmark.metadata.resource_version.parse().expect("numeric");
            assert!(at >= rv(&created).parse::<u64>().expect("numeric"));
        }
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
}
on_both_tiers!(bookmarks_arrive_on_watches_that_allow_them);

async fn a_watch_ends_after_its_timeout(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut events = f
        .widgets
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), "0")
        .await
        .expect("watch")
        .boxed();
    assert!(
        within("the watch to time out", events.next())
            .await
            .is_none()
    );
}
on_both_tiers!(a_watch_ends_after_its_timeout);

async fn a_request_body_over_3_mib_gets_413(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut w = widget("big", sized(1));
    w.spec.payload = Some("x".repeat(3 * 1024 * 1024 + 1));
    let error = api_error(f.widgets.create(&PostParams::default(), &w).await);
    assert_eq!(
        (error.code, error.reason.as_str()),
        (413, "RequestEntityTooLarge")
    );
}
on_both_tiers!(a_request_body_over_3_mib_gets_413);

async fn an_object_over_1_5_mib_gets_500_etcdserver_request_is_too_large(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let mut fits = widget("fits", sized(1));
    fits.spec.payload = Some("x".repeat(1_400_000));
    f.widgets
        .create(&PostParams::default(), &fits)
        .await
        .expect("1.4 MB fits");
    let mut w = widget("big", sized(1));
    w.spec.payload = Some("x".repeat(1_600_000));
    let error = api_error(f.widgets.create(&PostParams::default(), &w).await);
    assert_eq!(error.code, 500);
    assert!(
        error.message.contains("etcdserver: request is too large"),
        "{}",
        error.message
    );
    assert_eq!(api_error(f.widgets.get("big").await).code, 404);
}
on_both_tiers!(an_object_over_1_5_mib_gets_500_etcdserver_request_is_too_large);

async fn cluster_scoped_resources_are_served(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let name = unique("gadget");
    let created = f
        .gadgets
        .create(
            &PostParams::default(),
            &Gadget::new(&name, GadgetSpec { value: "v".into() }),
        )
        .await
        .expect("create");
    assert_eq!(created.metadata.namespace, None);
    assert_eq!(f.gadgets.get(&name).await.expect("get").spec.value, "v");
    let listed = f
        .gadgets
        .list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    f.gadgets
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(api_error(f.gadgets.get(&name).await).code, 404);
}
on_both_tiers!(cluster_scoped_resources_are_served);

async fn delete_collection_removes_only_selected_objects(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let pp = PostParams::default();
    f.widgets
        .create(&pp, &labelled("a", &[("doomed", "yes")]))
        .await
        .expect("create");
    f.widgets
        .create(&pp, &labelled("b", &[("doomed", "yes")]))
        .await
        .expect("create");
    f.widgets
        .create(&pp, &labelled("c", &[]))
        .await
        .expect("create");
    f.widgets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("doomed=yes"),
        )
        .await
        .expect("delete collection");
    let left = f.widgets.list(&ListParams::default()).await.expect("list");
    let names: Vec<String> = left.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["c"]);
}
on_both_tiers!(delete_collection_removes_only_selected_objects);

async fn a_crd_posted_over_http_is_served_and_discovered(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let group = format!("{}.fake.store-kube.test", unique("g"));
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("things.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "things", "singular": "thing", "kind": "Thing", "shortNames": ["th"] },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
            }],
        },
    }))
    .expect("CRD");
    let crds: Api<CustomResourceDefinition> = Api::all(f.client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Thing"), "things");
    let things: Api<DynamicObject> =
        Api::namespaced_with(f.client.clone(), &f.namespace, &resource);
    within("the new resource to be served", async {
        while things.list(&ListParams::default()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut thing = DynamicObject::new("t", &resource);
    thing.data = json!({ "spec": { "anything": ["goes"] } });
    things
        .create(&PostParams::default(), &thing)
        .await
        .expect("create thing");
    let discovery = kube::Discovery::new(f.client.clone())
        .filter(&[&group])
        .run()
        .await
        .expect("discovery");
    let (found, capabilities) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(&group, "v1", "Thing"))
        .expect("discovered");
    assert_eq!(found.plural, "things");
    assert_eq!(capabilities.scope, kube::discovery::Scope::Namespaced);
}
on_both_tiers!(a_crd_posted_over_http_is_served_and_discovered);

async fn malformed_requests_get_kubernetes_status_errors(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let collection = format!(
        "/apis/fake.store-kube.test/v1/namespaces/{}/widgets",
        f.namespace
    );
    let item = format!("{collection}/a");
    let request = |method: &str, uri: &str, content_type: Option<&str>, body: &[u8]| {
        let mut builder = http::Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
        }
        builder.body(body.to_vec()).expect("request")
    };
    let json = Some("application/json");
    let merge = Some("application/merge-patch+json");
    let json_patch = Some("application/json-patch+json");
    let cases: Vec<(http::Request<Vec<u8>>, u16, &str)> = vec![
        (request("POST", &collection, json, b"{not json"), 400, "BadRequest"),
        (request("POST", &collection, json, br#"{"apiVersion":"fake.store-kube.test/v1","kind":"Widget","metadata":{"name":"t"#), 400, "BadRequest"),
        (request("POST", &collection, json, br#"{"apiVersion":"fake.store-kube.test/v1","metadata":{"name":"k"}}"#), 400, "BadRequest"),
        (request("POST", &collection, json, br#"{"apiVersion":"fake.store-kube.test/v1","kind":"Gizmo","metadata":{"name":"k"},"spec":{}}"#), 422, "Invalid"),
        (request("POST", &collection, json, br#"{"apiVersion":"fake.store-kube.test/v2","kind":"Widget","metadata":{"name":"v"},"spec":{}}"#), 400, "BadRequest"),
        (
            request("POST", &collection, json, br#"{"apiVersion":"fake.store-kube.test/v1","kind":"Widget","metadata":{"name":"x","namespace":"elsewhere"},"spec":{}}"#),
            400,
            "BadRequest",
        ),
        (request("POST", &collection, Some("text/plain"), b"{}"), 415, "UnsupportedMediaType"),
        (request("PUT", &item, json, br#"{"apiVersion":"fake.store-kube.test/v1","kind":"Widget","metadata":{"name":"other","resourceVersion":"1"},"spec":{}}"#), 400, "BadRequest"),
        (request("PUT", &collection, json, b"{}"), 400, "BadRequest"),
        (request("PATCH", &item, json, b"{}"), 415, "UnsupportedMediaType"),
        (request("PATCH", &item, merge, b"{\"spec\":"), 500, ""),
        (request("PATCH", &item, merge, b"[1]"), 422, "Invalid"),
        (request("PATCH", &item, json_patch, b"{\"op\":1}"), 400, "BadRequest"),
        (request("PATCH", &item, json_patch, b"[{"), 400, "BadRequest"),
        (request("PATCH", &item, json_patch, br#"[{"op":"nope","path":"/a"}]"#), 422, "Invalid"),
        (request("PATCH", &item, json_patch, br#"[{"op":"remove","path":"/spec/missing"}]"#), 422, "Invalid"),
        (request("PATCH", &item, Some("application/apply-patch+yaml"), b"{}"), 422, "Invalid"),
        (request("DELETE", &item, json, b"{not json"), 500, ""),
        (request("GET", &format!("{collection}?labelSelector=a%20in%20(b"), None, b""), 400, "BadRequest"),
        (request("GET", &format!("{collection}?fieldSelector=spec.size%3D1"), None, b""), 400, "BadRequest"),
        (request("GET", &format!("{collection}?timeoutSeconds=soon"), None, b""), 400, "BadRequest"),
        (request("GET", &format!("{collection}?limit=abc"), None, b""), 400, "BadRequest"),
        (request("GET", &format!("{collection}?resourceVersion=abc"), None, b""), 500, ""),
        (request("GET", &format!("{collection}?resourceVersionMatch=Exact"), None, b""), 422, "Invalid"),
    ];
    for (request, code, reason) in cases {
        let description = format!("{} {}", request.method(), request.uri());
        let answer = raw(&f.client, request).await;
        assert_eq!(
            answer.body["kind"], "Status",
            "{description}: {}",
            answer.text
        );
        let got = (answer.status, answer.body["reason"].as_str().unwrap_or(""));
        assert_eq!(got, (code, reason), "{description}: {}", answer.text);
    }
    // Unknown resources: kube-apiserver answers a plain-text 404 page, the
    // fake a NotFound Status.
    for path in [
        "/apis/fake.store-kube.test/v1/namespaces/x/nonexistents",
        "/apis/nonexistent.group/v1/things",
        "/apis/fake.store-kube.test/v1/widgets/a",
    ] {
        let answer = raw(&f.client, request("GET", path, None, b"")).await;
        assert_eq!(answer.status, 404, "{path}");
        if cluster.is_fake() {
            assert_eq!(answer.body["reason"], "NotFound", "{path}");
        }
    }
    assert_eq!(
        f.widgets.get("a").await.expect("still served").spec.size,
        Some(1)
    );
}
on_both_tiers!(malformed_requests_get_kubernetes_status_errors);

/// A CRD (its own group, so cases never share it) whose schema has
/// defaults, an enum and bounds.
fn checked_crd() -> (CustomResourceDefinition, ApiResource) {
    let group = format!("{}.fake.store-kube.test", unique("schema"));
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("checks.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "checks", "singular": "check", "kind": "Check" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "replicas": { "type": "integer", "default": 1, "maximum": 5 },
                                "mode": { "type": "string", "enum": ["fast", "safe"] },
                                "label": { "type": "string", "maxLength": 5 },
                                "note": { "type": "string", "nullable": true },
                                "free": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                            },
                        },
                    },
                } },
            }],
        },
    }))
    .expect("CRD");
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Check"), "checks");
    (crd, resource)
}

async fn the_schema_prunes_unknown_fields_and_fills_defaults(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let (crd, resource) = checked_crd();
    cluster.apply_crd(&crd).await.expect("CRD");
    let checks: Api<DynamicObject> =
        Api::namespaced_with(f.client.clone(), &f.namespace, &resource);
    let mut check = DynamicObject::new("a", &resource);
    check.data =
        json!({ "spec": { "mode": "fast", "junk": 1, "free": { "kept": true } }, "junk": 2 });
    let created = checks
        .create(&PostParams::default(), &check)
        .await
        .expect("create");
    assert_eq!(
        created.data,
        json!({ "spec": { "mode": "fast", "replicas": 1, "free": { "kept": true } } })
    );
    let patched = checks
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": null, "more": 1 } })),
        )
        .await
        .expect("patch");
    assert_eq!(
        patched.data["spec"]["replicas"], 1,
        "a removed field gets its default again"
    );
    assert!(patched.data["spec"].get("more").is_none());
    // Metadata is decoded as ObjectMeta: unknown fields there go too.
    let body = json!({
        "apiVersion": format!("{}/v1", resource.group),
        "kind": "Check",
        "metadata": { "name": "m", "junk": true },
        "spec": {},
    });
    let uri = format!(
        "/apis/{}/v1/namespaces/{}/checks",
        resource.group, f.namespace
    );
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string().into_bytes())
        .expect("request");
    let answer = raw(&f.client, request).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert!(
        answer.body["metadata"].get("junk").is_none(),
        "{}",
        answer.text
    );
}
on_both_tiers!(the_schema_prunes_unknown_fields_and_fills_defaults);

// kube-apiserver 1.20.2 reads an empty string in a non-nullable string field
// as `null`, whatever the write: create, JSON patch, merge patch.
async fn an_empty_string_is_refused_as_null_where_the_schema_says_string(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let (crd, resource) = checked_crd();
    cluster.apply_crd(&crd).await.expect("CRD");
    let checks: Api<DynamicObject> =
        Api::namespaced_with(f.client.clone(), &f.namespace, &resource);
    let expected = format!(
        "Check.{} \"e\" is invalid: spec.label: Invalid value: \"null\": spec.label in body must be of type string: \"null\"",
        resource.group
    );
    let mut empty = DynamicObject::new("e", &resource);
    empty.data = json!({ "spec": { "label": "" } });
    let error = api_error(checks.create(&PostParams::default(), &empty).await);
    assert_eq!(
        (error.code, error.message.as_str()),
        (422, expected.as_str())
    );
    let causes = error.details.map(|d| d.causes).unwrap_or_default();
    assert_eq!(causes.len(), 1);
    assert_eq!(
        (causes[0].field.as_str(), causes[0].reason.as_str()),
        ("spec.label", "FieldValueInvalid")
    );

    empty.data = json!({ "spec": { "label": "x", "note": "", "free": { "blank": "" } } });
    let created = checks
        .create(&PostParams::default(), &empty)
        .await
        .expect("a nullable or schemaless empty string is taken");
    assert_eq!(created.data["spec"]["note"], json!(""));
    assert_eq!(created.data["spec"]["free"]["blank"], json!(""));
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{ "op": "replace", "path": "/spec/label", "value": "" }]))
            .expect("patch");
    let error = api_error(
        checks
            .patch("e", &PatchParams::default(), &Patch::Json::<()>(patch))
            .await,
    );
    assert_eq!(
        (error.code, error.message.as_str()),
        (422, expected.as_str())
    );
    let error = api_error(
        checks
            .patch(
                "e",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "label": "" } })),
            )
            .await,
    );
    assert_eq!(
        (error.code, error.message.as_str()),
        (422, expected.as_str())
    );
}
on_both_tiers!(an_empty_string_is_refused_as_null_where_the_schema_says_string);

async fn objects_that_break_the_schema_get_422_with_a_cause_per_field(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let (crd, resource) = checked_crd();
    cluster.apply_crd(&crd).await.expect("CRD");
    let checks: Api<DynamicObject> =
        Api::namespaced_with(f.client.clone(), &f.namespace, &resource);
    let mut check = DynamicObject::new("a", &resource);
    check.data = json!({ "spec": { "replicas": 9, "mode": "reckless", "label": "too long" } });
    let error = api_error(checks.create(&PostParams::default(), &check).await);
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
    let causes = error.details.map(|d| d.causes).unwrap_or_default();
    let mut fields: Vec<(String, String)> = causes
        .iter()
        .map(|c| (c.field.clone(), c.reason.clone()))
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("spec.label".to_owned(), "FieldValueInvalid".to_owned()),
            ("spec.mode".to_owned(), "FieldValueNotSupported".to_owned()),
            ("spec.replicas".to_owned(), "FieldValueInvalid".to_owned()),
        ]
    );
    let mut wrong_type = DynamicObject::new("b", &resource);
    wrong_type.data = json!({ "spec": { "replicas": "three" } });
    let error = api_error(checks.create(&PostParams::default(), &wrong_type).await);
    assert_eq!(
        error.message,
        format!(
            "Check.{} \"b\" is invalid: spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            resource.group
        )
    );
    let mut missing = DynamicObject::new("c", &resource);
    missing.data = json!({});
    let error = api_error(checks.create(&PostParams::default(), &missing).await);
    assert_eq!(
        error.message,
        format!(
            "Check.{} \"c\" is invalid: spec: Required value",
            resource.group
        )
    );
    let mut fine = DynamicObject::new("d", &resource);
    fine.data = json!({ "spec": { "replicas": 2 } });
    checks
        .create(&PostParams::default(), &fine)
        .await
        .expect("a valid object");
    let error = api_error(
        checks
            .patch(
                "d",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": 6 } })),
            )
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
}
on_both_tiers!(objects_that_break_the_schema_get_422_with_a_cause_per_field);

/// Runs kubectl with the cluster's kubeconfig; `None` when it is not installed.
async fn kubectl(
    cluster: &TestCluster,
    args: &[&str],
    stdin: &str,
) -> Option<std::process::Output> {
    use std::io::Write;
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => panic!("kubectl: {error}"),
        };
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).expect("kubectl stdin");
        }
        Some(child.wait_with_output().expect("kubectl output"))
    })
    .await
    .expect("join")
}

async fn kubectl_works_against_the_kubeconfig(cluster: &TestCluster) {
    let f = setup(cluster).await;
    f.widgets
        .create(&PostParams::default(), &widget("a", sized(1)))
        .await
        .expect("create");
    let Some(listed) = kubectl(
        cluster,
        &["get", "widgets", "-n", &f.namespace, "-o", "json"],
        "",
    )
    .await
    else {
        eprintln!("kubectl is not installed: skipping");
        return;
    };
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let list: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("JSON from kubectl");
    assert_eq!(list["items"][0]["metadata"]["name"], "a");
    let manifest = format!(
        "apiVersion: fake.store-kube.test/v1\nkind: Widget\nmetadata:\n  name: b\n  namespace: {}\nspec:\n  size: 3\n",
        f.namespace
    );
    let applied = kubectl(cluster, &["apply", "--server-side", "-f", "-"], &manifest)
        .await
        .expect("kubectl");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let b = f.widgets.get("b").await.expect("applied by kubectl");
    assert_eq!(b.spec.size, Some(3));
    assert_eq!(b.managed_fields()[0].manager.as_deref(), Some("kubectl"));
}
on_both_tiers!(kubectl_works_against_the_kubeconfig);

/// A create body without `apiVersion` and `kind`: kube-apiserver decodes a
/// custom resource as unstructured JSON, which needs its kind, but a built-in
/// type into its Go type, defaulting both from the URL.
async fn a_create_body_without_its_kind(cluster: &TestCluster) {
    let f = setup(cluster).await;
    let post = |url: &str, body: serde_json::Value| {
        http::Request::post(url)
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .expect("a request")
    };
    let url = support::Widget::url_path(&(), Some(&f.namespace));
    let mut body = serde_json::to_value(widget("no-kind", sized(1))).expect("json");
    if let Some(object) = body.as_object_mut() {
        object.remove("kind");
        object.remove("apiVersion");
    }
    let refused = raw(&f.client, post(&url, body)).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.text.contains("Object 'Kind' is missing"),
        "{}",
        refused.text
    );
    let name = format!("{}-no-kind", f.namespace);
    let created = raw(
        &f.client,
        post("/api/v1/namespaces", json!({"metadata": {"name": name}})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["kind"], "Namespace", "{}", created.text);
    assert_eq!(created.body["apiVersion"], "v1");
    assert_eq!(created.body["metadata"]["name"], json!(name));
}
on_both_tiers!(a_create_body_without_its_kind);
