//! `#[on_ready]` hooks registered at link time. Each test opens a store with
//! its own name and its hooks name that store, so tests do not see each
//! other's hooks.

use std::sync::Mutex;

use store_core::{Error, Store, on_ready};

static RAN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

fn ran(hook: &'static str) {
    RAN.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
}

mod first {
    use super::*;

    #[on_ready(store = "ordered", order = 20)]
    async fn last(store: &Store) -> store_core::Result<()> {
        ran("last");
        let seen = store
            .get::<Vec<String>>("trail")?
            .as_deref()
            .cloned()
            .unwrap_or_default();
        store
            .set_and_wait("trail", &[seen, vec!["last".to_owned()]].concat())
            .await?;
        Ok(())
    }

    #[on_ready(store = "ordered", order = -5)]
    pub(crate) async fn first(store: &Store) -> Result<(), std::io::Error> {
        ran("first");
        store
            .set_and_wait("trail", &vec!["first".to_owned()])
            .await
            .map_err(std::io::Error::other)?;
        Ok(())
    }
}

mod second {
    use super::*;

    #[on_ready(order = 10, store = "ordered")]
    async fn middle(store: &Store) -> Result<(), String> {
        ran("middle");
        let mut seen = store
            .get::<Vec<String>>("trail")
            .map_err(|e| e.to_string())?
            .as_deref()
            .cloned()
            .unwrap_or_default();
        seen.push("middle".to_owned());
        store
            .set_and_wait("trail", &seen)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    #[on_ready(store = "failing")]
    async fn refuse_to_start(_store: &Store) -> Result<(), String> {
        Err("no quorum".to_owned())
    }
}

#[tokio::test]
async fn hooks_from_two_modules_run_in_order_before_ready() -> store_core::Result<()> {
    let store = Store::builder().name("ordered").open().await?;
    store.ready().await?;
    assert_eq!(
        store.get::<Vec<String>>("trail")?.as_deref(),
        Some(&vec![
            "first".to_owned(),
            "middle".to_owned(),
            "last".to_owned()
        ])
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_hook_names_itself_in_the_start_up_error() {
    let opened = async {
        let store = Store::builder().name("failing").open().await?;
        store.ready().await
    };
    match opened.await {
        Err(Error::Hook { hook, source }) => {
            assert_eq!(hook, "refuse_to_start");
            assert_eq!(source.to_string(), "no quorum");
        }
        other => panic!("expected a hook error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hook_function_can_still_be_called_directly() -> store_core::Result<()> {
    let store = Store::builder()
        .name("direct")
        .linked_hooks(false)
        .open()
        .await?;
    first::first(&store).await.map_err(|e| Error::Hook {
        hook: "first".into(),
        source: std::sync::Arc::new(e),
    })?;
    assert!(
        RAN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&"first")
    );
    Ok(())
}

#[tokio::test]
async fn a_store_that_names_no_hooks_runs_none_of_them() -> store_core::Result<()> {
    let store = Store::builder().name("unhooked").open().await?;
    store.ready().await?;
    assert!(store.get::<Vec<String>>("trail")?.is_none());
    Ok(())
}
