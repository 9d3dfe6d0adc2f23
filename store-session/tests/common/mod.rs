//! A conformance harness for the durable tier, generic over the inner backend.
//!
//! Every scope the suite opens becomes one session scope on a single shared
//! inner backend, with the scope kinds taken in turn, and the neighbouring
//! prefixes (the session's other scopes, sessions whose names extend or escape
//! into this one) are seeded with keys the suite also uses. A leak through
//! listing, watching or clearing shows up as a wrong count or a value that does
//! not decode.

#![allow(
    dead_code,
    reason = "each test file uses its own part of these helpers"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use store_conformance::Harness;
use store_core::backend::{Batch, Op};
use store_core::{Backend, Payload};
use store_session::ScopeKind;
use store_session::layout;
use store_session::{ScopedBackend, SharedWatch};

pub(crate) mod redis;
pub(crate) mod replicas;

/// Keys the conformance cases write; seeded next door as strings.
const NOISE_KEYS: [&str; 7] = [
    "k", "counter", "user/1", "user/2", "n/00001", "from-a", "both",
];

pub(crate) struct ScopedHarness<B> {
    inner: Arc<B>,
    prefixes: Mutex<HashMap<String, String>>,
    next: AtomicUsize,
    /// Scopes share one watch, as the durable scopes of a registry do; without
    /// it each scope watches the inner backend itself.
    shared: Option<tokio::sync::OnceCell<SharedWatch<B>>>,
}

impl<B: Backend> ScopedHarness<B> {
    /// Every scope with a watch of its own.
    pub(crate) fn new(inner: B) -> Self {
        ScopedHarness {
            inner: Arc::new(inner),
            prefixes: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            shared: None,
        }
    }

    /// Every scope fed by one [`SharedWatch`], as in a registry.
    pub(crate) fn shared(inner: B) -> Self {
        ScopedHarness {
            shared: Some(tokio::sync::OnceCell::new()),
            ..Self::new(inner)
        }
    }

    fn kinds(scope: &str) -> [ScopeKind; 4] {
        [
            ScopeKind::Global,
            ScopeKind::Realm(scope.to_owned()),
            ScopeKind::Local {
                realm: None,
                env: scope.to_owned(),
            },
            ScopeKind::Local {
                realm: Some("realm/~x".to_owned()),
                env: scope.to_owned(),
            },
        ]
    }

    /// Writes the noise once now, then keeps rewriting it for a while in the
    /// background so neighbours' changes also reach the scope's watch.
    async fn seed_neighbours(&self, scope: &str, mine: &str) {
        let mut prefixes: Vec<String> = Self::kinds(scope)
            .iter()
            .map(|kind| layout::scope_prefix("", scope, 0, kind))
            .filter(|p| p != mine)
            .collect();
        for session in [
            format!("{scope}x"),
            format!("{scope}/"),
            format!("{scope}~"),
        ] {
            prefixes.push(layout::scope_prefix("", &session, 0, &ScopeKind::Global));
        }
        prefixes.push(layout::scope_prefix("", scope, 1, &ScopeKind::Global));
        let noise = move |round: usize| Batch {
            ops: prefixes
                .iter()
                .flat_map(|p| {
                    NOISE_KEYS.iter().map(move |k| {
                        Op::put(
                            format!("{p}{k}"),
                            Payload::from(format!("\"noise {round}\"")),
                        )
                    })
                })
                .collect(),
            atomic: false,
        };
        self.inner
            .apply(noise(0))
            .await
            .expect("seeding neighbouring scopes");
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            for round in 1..200 {
                tokio::time::sleep(Duration::from_millis(3)).await;
                let Some(inner) = inner.upgrade() else { return };
                if inner.apply(noise(round)).await.is_err() {
                    return;
                }
            }
        });
    }
}

impl<B: Backend> Harness for ScopedHarness<B> {
    type Backend = ScopedBackend<B>;

    async fn open(&self, scope: &str) -> ScopedBackend<B> {
        let (prefix, fresh) = {
            let mut prefixes = self.prefixes.lock().unwrap_or_else(PoisonError::into_inner);
            match prefixes.get(scope) {
                Some(prefix) => (prefix.clone(), false),
                None => {
                    let turn = self.next.fetch_add(1, Ordering::Relaxed) % 4;
                    let kind = Self::kinds(scope)[turn].clone();
                    let prefix = layout::scope_prefix("", scope, 0, &kind);
                    prefixes.insert(scope.to_owned(), prefix.clone());
                    (prefix, true)
                }
            }
        };
        if fresh {
            self.seed_neighbours(scope, &prefix).await;
        }
        match &self.shared {
            Some(cell) => cell
                .get_or_init(|| async {
                    SharedWatch::start(Arc::clone(&self.inner), "")
                        .await
                        .expect("the shared watch starts")
                })
                .await
                .scoped(prefix),
            None => ScopedBackend::new(Arc::clone(&self.inner), prefix),
        }
    }
}
