//! Value-size limits: a value over the limit is refused at the call without
//! being encoded whole, and the memory backend can refuse exactly what the
//! kube backend refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::ser::{Serialize, SerializeSeq, Serializer};
use store_core::{Error, KUBE_MAX_VALUE_SIZE, MemoryBackend, Store};

async fn open(backend: MemoryBackend) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(10))
        .open()
        .await
        .expect("store starts")
}

/// `items` strings of 1 KiB, counting how many were serialized.
struct Counted {
    items: usize,
    serialized: Arc<AtomicUsize>,
}

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let chunk = "x".repeat(1024);
        let mut seq = serializer.serialize_seq(Some(self.items))?;
        for _ in 0..self.items {
            self.serialized.fetch_add(1, Ordering::Relaxed);
            seq.serialize_element(&chunk)?;
        }
        seq.end()
    }
}

#[tokio::test]
async fn a_value_over_the_limit_is_refused_before_it_is_encoded_whole() {
    let store = Store::builder()
        .linked_hooks(false)
        .max_value_size(1024 * 1024)
        .open()
        .await
        .expect("store starts");
    let serialized = Arc::new(AtomicUsize::new(0));
    let value = Counted {
        items: 2048,
        serialized: Arc::clone(&serialized),
    };
    let err = store
        .set("big", &value)
        .expect_err("2 MiB over a 1 MiB limit");
    assert!(
        matches!(err, Error::ValueTooLarge { size, limit, .. } if size > limit && limit == 1024 * 1024),
        "{err:?}"
    );
    let done = serialized.load(Ordering::Relaxed);
    assert!(
        done <= 1025,
        "encoding stops once past the limit: {done} of 2048 items serialized"
    );
    assert_eq!(store.get::<Vec<String>>("big").expect("get"), None);

    let fits = Counted {
        items: 1000,
        serialized: Arc::new(AtomicUsize::new(0)),
    };
    store
        .set_and_wait("fits", &fits)
        .await
        .expect("under the limit");
}

#[tokio::test]
async fn the_memory_backend_has_no_value_limit_unless_asked() {
    let store = open(MemoryBackend::new()).await;
    let big = "x".repeat(2 * 1024 * 1024);
    store.set_and_wait("big", &big).await.expect("no limit");
}

#[tokio::test]
async fn a_memory_backend_with_kube_limits_refuses_what_the_kube_backend_refuses() {
    let backend = MemoryBackend::new().with_kube_limits();
    let store = open(backend.clone()).await;

    // Over the limit at the call, as on the kube backend.
    let big = "x".repeat(KUBE_MAX_VALUE_SIZE + 1);
    let err = store.set("big", &big).expect_err("over the kube limit");
    assert!(
        matches!(err, Error::ValueTooLarge { limit, .. } if limit == KUBE_MAX_VALUE_SIZE),
        "{err:?}"
    );

    // Under it as JSON, over it once stored as a string with its quotes
    // escaped: the write fails, as it would in a custom resource.
    let quoted: Vec<&str> = vec!["a"; KUBE_MAX_VALUE_SIZE / 5];
    let err = store
        .set_and_wait("quoted", &quoted)
        .await
        .expect_err("over the limit once escaped");
    assert!(
        matches!(&err, Error::ValueTooLarge { key, size, limit }
            if key == "quoted" && *size > *limit && *limit == KUBE_MAX_VALUE_SIZE),
        "{err:?}"
    );
    assert_eq!(store.get::<Vec<String>>("quoted").expect("get"), None);

    let fits = "x".repeat(KUBE_MAX_VALUE_SIZE - 1024);
    store.set_and_wait("fits", &fits).await.expect("fits");
    store.flush().await.expect("nothing else failed");
}
