//! A store on a backend that keeps its whole state as a shared index: the
//! view holds the index it lists and the ones its watch events carry, applies
//! changes that come without one beside it, and tells subscribers only what
//! changed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use store_conformance::support::eventually;
use store_core::backend::{
    Applied, Batch, Change, Entry, Listing, SharedIndex, WatchEvent, WatchStream,
};
use store_core::{Backend, Capabilities, Error, Result, Revision, Store, Version};
use tokio::sync::mpsc;

fn index(entries: &[&Entry]) -> SharedIndex {
    let by_key: BTreeMap<String, Entry> = entries
        .iter()
        .map(|entry| (entry.key().to_owned(), (*entry).clone()))
        .collect();
    SharedIndex::new(by_key)
}

/// Lists one index, then hands on the watch events a test sends.
struct Indexed {
    listed: SharedIndex,
    events: Mutex<Option<mpsc::UnboundedReceiver<WatchEvent>>>,
    lists: AtomicUsize,
}

impl Backend for Indexed {
    fn name(&self) -> &'static str {
        "indexed"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.listed.get(key).cloned())
    }
    async fn list(&self, _prefix: &str) -> Result<Listing> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        Err(Error::unavailable("indexed", "lists only as an index"))
    }
    async fn list_index(&self) -> Result<Option<(SharedIndex, Revision)>> {
        Ok(Some((self.listed.clone(), Revision(1))))
    }
    async fn apply(&self, _batch: Batch) -> Result<Applied> {
        Err(Error::unavailable("indexed", "read-only"))
    }
    async fn watch(&self, _from: Revision) -> Result<WatchStream> {
        let events = self.events.lock().expect("lock").take();
        Ok(match events {
            Some(events) => Box::pin(futures_util::stream::unfold(events, |mut events| async {
                let event = events.recv().await?;
                Some((Ok(event), events))
            })),
            None => Box::pin(futures_util::stream::pending()),
        })
    }
}

fn value(store: &Store, key: &str) -> Option<u32> {
    store.get::<u32>(key).expect("decodes").as_deref().copied()
}

#[tokio::test]
async fn a_store_reads_the_backend_s_index_and_tells_only_what_changed() {
    let a = Entry::new("a", "1", Version(1));
    let (send, events) = mpsc::unbounded_channel();
    let backend = Arc::new(Indexed {
        listed: index(&[&a]),
        events: Mutex::new(Some(events)),
        lists: AtomicUsize::new(0),
    });
    let store = Store::builder()
        .backend(Arc::clone(&backend))
        .timeout(Duration::from_secs(30))
        .open()
        .await
        .expect("opens");
    store.ready().await.expect("ready");
    assert_eq!(value(&store, "a"), Some(1));
    assert_eq!(
        backend.lists.load(Ordering::SeqCst),
        0,
        "never listed entries"
    );
    let mut changes = store.subscribe();

    // The index is the backend's word on its whole state: the view takes it
    // whole. Here it holds `c`, which no change names, to show that; the
    // subscribers hear of what the changes name.
    let b = Entry::new("b", "2", Version(2));
    let c = Entry::new("c", "3", Version(2));
    send.send(WatchEvent::Changes {
        revision: Revision(2),
        changes: vec![Change::Put(b.clone())],
        index: Some(index(&[&a, &b, &c])),
    })
    .expect("sent");
    eventually("the view to take the index", || {
        value(&store, "c") == Some(3)
    })
    .await;
    assert_eq!(value(&store, "b"), Some(2));
    let told = changes.next().await.expect("an event").expect("not lagged");
    assert_eq!((told.key(), told.revision()), ("b", Revision(2)));

    // Without an index, the view applies the change itself.
    send.send(WatchEvent::Changes {
        revision: Revision(3),
        changes: vec![Change::Removed("a".into())],
        index: None,
    })
    .expect("sent");
    eventually("the removal", || value(&store, "a").is_none()).await;
    assert_eq!(
        (store.len(), store.keys()),
        (2, vec!["b".into(), "c".into()])
    );
    let told = changes.next().await.expect("an event").expect("not lagged");
    assert!(told.key() == "a" && told.is_removal());

    // The next index replaces what the view applied beside the last one.
    let d = Entry::new("d", "4", Version(4));
    send.send(WatchEvent::Changes {
        revision: Revision(4),
        changes: vec![
            Change::Put(d.clone()),
            Change::Removed("b".into()),
            Change::Removed("c".into()),
        ],
        index: Some(index(&[&d])),
    })
    .expect("sent");
    eventually("the last index", || store.keys() == ["d"]).await;
    assert_eq!(store.len(), 1);
    let mut told = Vec::new();
    for _ in 0..3 {
        let event = changes.next().await.expect("an event").expect("not lagged");
        told.push((event.key().to_owned(), event.is_removal()));
    }
    told.sort();
    assert_eq!(
        told,
        [("b".into(), true), ("c".into(), true), ("d".into(), false)]
    );
    store.close().await.expect("closes");
}
