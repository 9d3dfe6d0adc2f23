//! Replicas sharing one durable backend are one session everywhere: each case
//! runs on two registries over one memory backend, on two kube backends of
//! one store on the in-process fake API server and on a real control plane
//! (etcd and kube-apiserver; reported as ignored where none was found at
//! build time), and on two Redis backends of one store on a real
//! `redis-server` started for the case.

mod common;

use common::replicas::{
    Held, Pair, eventually, eventually_async, kube_pair, memory_pair, real_pair, redis_pair,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use store_core::Backend;
use store_session::{Error, Result, ScopeKind, layout};

/// One case on two registries over one memory backend (`on_memory`), on two
/// kube backends on the fake API server (`on_kube`) and on the real control
/// plane (`on_a_real_control_plane`), and on two Redis backends of one store
/// (`on_redis`).
macro_rules! on_memory_and_kube {
    ($case:ident) => {
        on_memory_and_kube!($case, flavor = "multi_thread", worker_threads = 2);
    };
    ($case:ident, current_thread) => {
        on_memory_and_kube!($case, flavor = "current_thread");
    };
    ($case:ident, $($flavor:tt)+) => {
        mod $case {
            use super::*;

            #[tokio::test($($flavor)+)]
            async fn on_memory() -> Result<()> {
                super::$case(memory_pair()).await
            }

            #[tokio::test($($flavor)+)]
            async fn on_kube() -> Result<()> {
                super::$case(kube_pair().await).await
            }

            #[tokio::test($($flavor)+)]
            #[cfg_attr(
                not(real_control_plane),
                ignore = "no control plane found at build time: run `cargo xtask envtest`"
            )]
            async fn on_a_real_control_plane() -> Result<()> {
                super::$case(real_pair().await).await
            }

            #[tokio::test($($flavor)+)]
            async fn on_redis() -> Result<()> {
                super::$case(redis_pair().await).await
            }
        }
    };
}

/// Replica two loses the race to create `counter`: its view does not show
/// replica one's value yet when its own create is refused. The handle it gets
/// must read and update the winner's value, not report it gone.
async fn the_loser_of_a_create_race_reads_the_winners_value<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    let scope_one = one.open("s-42").await?.global()?.durable().await?;
    let scope_two = two.open("s-42").await?.global()?.durable().await?;
    pair.two.hold();
    let counter = scope_one.use_value("counter", 5_u64).await?;
    counter.set_and_wait(7).await?;
    let racing = tokio::spawn(async move { scope_two.use_value("counter", 0_u64).await });
    pair.two.conflicted().await;
    // Let every task that can run do so while replica two's view is held back:
    // a handle handed out now would be one whose view lacks the key.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    pair.two.release();
    let loser = racing.await.expect("task runs")?;
    // A backend may deliver the winner's create (5) and its update (7) as two
    // events: the loser reads one of the winner's values, never its own
    // default (0), never nothing, and then the latest.
    let first = *loser.get()?;
    assert!(
        first == 5 || first == 7,
        "the loser reads the winner's value, not {first}"
    );
    eventually("the loser to read the winner's latest value", || {
        *loser.get().expect("the loser's handle reads a value") == 7
    })
    .await;
    loser.update(|n| *n += 1).await?;
    assert_eq!(*loser.get()?, 8);
    Ok(())
}

on_memory_and_kube!(
    the_loser_of_a_create_race_reads_the_winners_value,
    current_thread
);

/// The race left to chance, many times: both replicas `use_value` a fresh key
/// at once, then read and update it. No call may report the key gone.
async fn racing_replicas_never_see_an_outdated_handle<A: Backend, B: Backend>(
    pair: Pair<A, B>,
    rounds: usize,
) -> Result<()> {
    let (one, two) = pair.registries();
    let scope_one = one.open("s-42").await?.global()?.durable().await?;
    let scope_two = two.open("s-42").await?.global()?.durable().await?;
    for round in 0..rounds {
        let key = format!("counter-{round}");
        let race = |scope: store_session::DurableScope, key: String| async move {
            let handle = scope.use_value(&key, 0_u64).await?;
            handle.get()?;
            handle.update(|n| *n += 1).await?;
            Ok::<_, Error>(())
        };
        let (a, b) = tokio::join!(
            tokio::spawn(race(scope_one.clone(), key.clone())),
            tokio::spawn(race(scope_two.clone(), key.clone())),
        );
        a.expect("task runs")?;
        b.expect("task runs")?;
        let handle = scope_one.use_value(&key, 0_u64).await?;
        eventually("both increments to be seen", || {
            handle.get().is_ok_and(|n| *n == 2)
        })
        .await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_never_see_an_outdated_handle_on_memory() -> Result<()> {
    racing_replicas_never_see_an_outdated_handle(memory_pair(), 200).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_never_see_an_outdated_handle_on_kube() -> Result<()> {
    racing_replicas_never_see_an_outdated_handle(kube_pair().await, 60).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_never_see_an_outdated_handle_on_redis() -> Result<()> {
    racing_replicas_never_see_an_outdated_handle(redis_pair().await, 100).await
}

/// Replica one ends `s-42` while replica two has live and durable handles on
/// it: replica two ends it too, its handles fail with `Outdated`, and a later
/// life of the id starts empty on both.
async fn ending_a_session_on_one_replica_ends_it_on_every_replica<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    let on_one = one.open("s-42").await?;
    let on_two = two.open("s-42").await?;
    let live = on_two.global()?.use_value("live", 1_u64)?;
    let mut woken = live.changes();
    let durable_scope = on_two.global()?.durable().await?;
    let durable = durable_scope.use_value("durable", 1_u64).await?;

    let ended = on_one.end().await?;
    // Replica two, hearing of the end, removes what it wrote and may get
    // there first: between them the key is gone once the end returns.
    assert!(ended.durable_keys <= 1);
    let left = pair
        .one
        .list(&layout::session_prefix("", "s-42"))
        .await
        .expect("the session's prefix lists");
    assert!(
        left.entries.is_empty(),
        "replica two's durable key is removed"
    );
    eventually("replica two to hear of the end", || !two.contains("s-42")).await;

    assert!(on_two.is_ended());
    assert!(matches!(two.get("s-42"), Err(Error::NotFound { .. })));
    assert!(matches!(on_two.global(), Err(Error::SessionEnded { .. })));
    assert!(matches!(live.get(), Err(Error::Outdated { .. })));
    assert!(matches!(
        live.update(|n| *n += 1),
        Err(Error::Outdated { .. })
    ));
    assert!(matches!(woken.changed().await, Err(Error::Outdated { .. })));
    assert!(matches!(durable.get(), Err(Error::Outdated { .. })));
    assert!(matches!(durable.set(2), Err(Error::Outdated { .. })));
    assert!(matches!(
        durable.set_and_wait(2).await,
        Err(Error::Outdated { .. })
    ));
    assert!(matches!(
        durable_scope.use_value("late", 1_u64).await,
        Err(Error::Outdated { .. })
    ));

    // The id starts afresh, the same life on both replicas.
    let again_one = one.open("s-42").await?;
    let again_two = two.open("s-42").await?;
    assert_eq!(again_one.generation()?, again_two.generation()?);
    let fresh = again_one.global()?.durable().await?;
    assert!(fresh.keys()?.is_empty());
    assert_eq!(*fresh.use_value("durable", 0_u64).await?.get()?, 0);
    assert_eq!(again_two.global()?.use_value("live", 0_u64)?.get()?, 0);
    Ok(())
}

on_memory_and_kube!(ending_a_session_on_one_replica_ends_it_on_every_replica);

/// Replica one resets `s-42`: replica two moves to the fresh instance, its old
/// handles fail with `Outdated`, and replica one's teardown still reads what
/// replica two wrote before.
async fn resetting_a_session_on_one_replica_resets_it_on_every_replica<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    let on_one = one.open("s-42").await?;
    let on_two = two.open("s-42").await?;
    let live = on_two.global()?.use_value("live", 1_u64)?;
    let durable = on_two
        .global()?
        .durable()
        .await?
        .use_value("durable", 1_u64)
        .await?;
    durable.set_and_wait(5).await?;

    let teardown = on_one.reset().await?;
    let fresh = on_one.generation()?;
    eventually("replica two to hear of the reset", || {
        on_two.generation().is_ok_and(|g| g == fresh)
    })
    .await;

    assert!(two.contains("s-42"));
    assert!(matches!(live.get(), Err(Error::Outdated { .. })));
    assert!(matches!(live.set(2), Err(Error::Outdated { .. })));
    assert!(matches!(durable.set(2), Err(Error::Outdated { .. })));
    assert_eq!(on_two.global()?.use_value("live", 0_u64)?.get()?, 0);
    let now = on_two.global()?.durable().await?;
    assert_eq!(*now.use_value("durable", 0_u64).await?.get()?, 0);
    // Replica one's teardown reads the retired instance, replica two's write included.
    let retired = teardown.global()?.durable().await?;
    assert_eq!(*retired.use_value("durable", 0_u64).await?.get()?, 5);
    let freed = teardown.finish().await?;
    assert_eq!(freed.durable_keys, 1);
    Ok(())
}

on_memory_and_kube!(resetting_a_session_on_one_replica_resets_it_on_every_replica);

/// Both replicas reset `s-42` at once: replica two resets before its watch
/// has delivered replica one's reset. Its reset must not take the record back
/// to the generation replica one already moved to: it follows replica one's
/// reset, then resets once more, and both replicas end on that generation.
async fn resets_made_at_once_on_two_replicas_are_two_resets<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    let on_one = one.open("s-42").await?;
    let on_two = two.open("s-42").await?;
    let first = on_one.generation()?;
    assert_eq!(on_two.generation()?, first);

    pair.two.hold();
    drop(on_one.reset().await?);
    assert_eq!(on_one.generation()?, first + 1);
    // Replica two's reset reads the record while its watch is held, then the
    // watch goes on.
    let held = Arc::clone(&pair.two);
    pair.two
        .after_next_read(layout::meta_key("", "s-42"), async move { held.release() });
    drop(on_two.reset().await?);
    assert_eq!(
        on_two.generation()?,
        first + 2,
        "replica two follows replica one's reset, then resets"
    );
    eventually("replica one to hear of replica two's reset", || {
        on_one.generation().is_ok_and(|g| g == first + 2)
    })
    .await;
    assert_eq!(record(&*pair.one, "s-42").await, Some(first + 2));
    Ok(())
}

on_memory_and_kube!(resets_made_at_once_on_two_replicas_are_two_resets);

/// Replica one ends `s-42` and opens it afresh while replica two's watch is
/// held: replica two has heard of neither when it resets. Its reset must fail
/// as the end it missed says, and leave the new life and its record alone.
async fn a_reset_that_missed_an_end_leaves_the_new_life_alone<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    after_a_missed_end(
        pair,
        |session| async move { session.reset().await.map(drop) },
    )
    .await
}

on_memory_and_kube!(a_reset_that_missed_an_end_leaves_the_new_life_alone);

/// The same with an end: replica two's end of the life it holds must not end
/// the new one.
async fn an_end_that_missed_an_end_leaves_the_new_life_alone<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    after_a_missed_end(pair, |session| async move { session.end().await.map(drop) }).await
}

on_memory_and_kube!(an_end_that_missed_an_end_leaves_the_new_life_alone);

/// Replica one ends `s-42` and opens it afresh while replica two's watch is
/// held; then replica two, which has heard of neither, does `act`: it must
/// fail with `SessionEnded` and leave the new life, its record and its data
/// alone.
async fn after_a_missed_end<A, B, F>(
    pair: Pair<A, Held<B>>,
    act: impl FnOnce(store_session::Session) -> F,
) -> Result<()>
where
    A: Backend,
    B: Backend,
    F: Future<Output = Result<()>>,
{
    let (one, two) = pair.registries();
    drop(one.open("s-42").await?);
    let on_two = two.open("s-42").await?;

    pair.two.hold();
    let _ = one.end("s-42").await?;
    let new_life = one.open("s-42").await?;
    let fresh = new_life.generation()?;
    let kept = new_life.global()?.durable().await?;
    kept.use_value("kept", 0_u64).await?.set_and_wait(5).await?;

    // Replica two reads the record while its watch is held, then the watch
    // goes on.
    let held = Arc::clone(&pair.two);
    pair.two
        .after_next_read(layout::meta_key("", "s-42"), async move { held.release() });
    let acted = act(on_two.clone()).await;
    assert!(
        matches!(acted, Err(Error::SessionEnded { .. })),
        "replica two's call fails as the missed end says, not {acted:?}"
    );
    assert!(on_two.is_ended());
    assert_eq!(record(&*pair.one, "s-42").await, Some(fresh));
    assert_eq!(new_life.generation()?, fresh);
    assert_eq!(*kept.use_value("kept", 0_u64).await?.get()?, 5);
    // Replica two reopens into the new life, its data intact.
    let again = two.open("s-42").await?;
    assert_eq!(again.generation()?, fresh);
    let seen = again.global()?.durable().await?;
    assert_eq!(*seen.use_value("kept", 0_u64).await?.get()?, 5);
    Ok(())
}

/// The generation the backend's record of `session` holds.
async fn record(backend: &impl Backend, session: &str) -> Option<u64> {
    let key = layout::meta_key("", session);
    let entry = backend.read(&key).await.expect("the record reads")?;
    Some(store_core::decode::<u64>(&key, entry.value()).expect("the record decodes"))
}

/// Replica two reads the session's generation record while opening the
/// session, and replica one resets it before replica two has indexed the
/// session: the reset reaches replica two's watch while there is no session
/// there to tell, so the registry keeps it until the session is indexed. On this one-thread
/// runtime the watch task runs only while the read's hook waits, and has acted
/// on an event once it has counted it, so the reset lands in that window every
/// time.
#[tokio::test]
async fn a_reset_while_the_other_replica_opens_the_session_reaches_it() -> Result<()> {
    let pair = memory_pair();
    let (one, two) = pair.registries();
    let on_one = one.open("s-7").await?;
    // Replica two's watch runs before the read below.
    two.open("s-8").await?;
    let delivered = Arc::clone(&pair.two.delivered);
    let resetting = on_one.clone();
    pair.two
        .after_next_read(layout::meta_key("", "s-7"), async move {
            let before = delivered.load(Ordering::SeqCst);
            drop(resetting.reset().await.expect("the reset"));
            let heard = async {
                while delivered.load(Ordering::SeqCst) == before {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), heard)
                .await
                .expect("replica two's watch delivers the reset within 10 s");
        });
    let on_two = two.open("s-7").await?;
    let fresh = on_one.generation()?;
    assert!(
        on_two.generation()? < fresh,
        "replica two read the record before the reset"
    );
    eventually(
        "replica two to hear of the reset made while it opened the session",
        || on_two.generation().is_ok_and(|g| g == fresh),
    )
    .await;
    Ok(())
}

/// Replica two has not heard of the end yet (its watch is held back) and
/// writes: the write lands, but in the ended life's keys, which a reopened
/// session never reads, and replica two removes it once it hears of the end.
async fn a_write_racing_the_end_never_reaches_a_later_life<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    let on_one = one.open("s-42").await?;
    let on_two = two.open("s-42").await?;
    let ended_life = on_two.generation()?;
    let durable = on_two
        .global()?
        .durable()
        .await?
        .use_value("durable", 1_u64)
        .await?;

    pair.two.hold();
    assert_eq!(on_one.end().await?.durable_keys, 1);
    // Replica two's view is held back, so only the backend can say the write landed.
    durable.set(9)?;
    let late_key = format!(
        "{}durable",
        layout::scope_prefix("", "s-42", ended_life, &ScopeKind::Global)
    );
    eventually_async("the late write to land", || async {
        pair.one.read(&late_key).await.is_ok_and(|e| e.is_some())
    })
    .await;
    let again = one.open("s-42").await?;
    assert_ne!(again.generation()?, ended_life);
    let fresh = again.global()?.durable().await?;
    assert!(
        fresh.keys()?.is_empty(),
        "the late write is not in the new life"
    );
    assert_eq!(*fresh.use_value("durable", 0_u64).await?.get()?, 0);

    pair.two.release();
    eventually("replica two to hear of the end", || on_two.is_ended()).await;
    let ended_prefix = layout::generation_prefix("", "s-42", ended_life);
    eventually_async("the late write to be removed", || async {
        pair.one
            .list(&ended_prefix)
            .await
            .is_ok_and(|l| l.entries.is_empty())
    })
    .await;
    // Replica two reopens into the same new life.
    assert_eq!(two.open("s-42").await?.generation()?, again.generation()?);
    Ok(())
}

on_memory_and_kube!(a_write_racing_the_end_never_reaches_a_later_life);

/// The same race with a reset: replica two writes through a handle of the
/// retired generation after replica one's teardown freed it. Once replica
/// two hears of the reset, the late write is gone too.
async fn a_write_racing_a_reset_is_not_left_behind<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    let on_one = one.open("s-42").await?;
    let on_two = two.open("s-42").await?;
    let retired = on_two.generation()?;
    let durable = on_two
        .global()?
        .durable()
        .await?
        .use_value("durable", 1_u64)
        .await?;

    pair.two.hold();
    assert_eq!(on_one.reset().await?.finish().await?.durable_keys, 1);
    durable.set(9)?;
    let late_key = format!(
        "{}durable",
        layout::scope_prefix("", "s-42", retired, &ScopeKind::Global)
    );
    eventually_async("the late write to land", || async {
        pair.one.read(&late_key).await.is_ok_and(|e| e.is_some())
    })
    .await;
    pair.two.release();
    eventually("replica two to move on", || {
        on_two.generation().is_ok_and(|g| g != retired)
    })
    .await;
    let retired_prefix = layout::generation_prefix("", "s-42", retired);
    eventually_async("the late write to be removed", || async {
        pair.one
            .list(&retired_prefix)
            .await
            .is_ok_and(|l| l.entries.is_empty())
    })
    .await;
    Ok(())
}

on_memory_and_kube!(a_write_racing_a_reset_is_not_left_behind);

/// A replica that never opened `s-42` ends it by id (clean-up after a
/// restart): the replica that has it open ends it too.
async fn ending_by_id_where_the_session_is_not_open_ends_it_where_it_is<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    let on_two = two.open("s-42").await?;
    let live = on_two.local("env")?.use_value("live", 1_u64)?;
    let durable = on_two
        .local("env")?
        .durable()
        .await?
        .use_value("durable", 1_u64)
        .await?;
    assert!(!one.contains("s-42"));
    assert_eq!(one.end("s-42").await?.durable_keys, 1);
    eventually("replica two to hear of the end", || !two.contains("s-42")).await;
    assert!(matches!(live.get(), Err(Error::Outdated { .. })));
    assert!(matches!(durable.set(2), Err(Error::Outdated { .. })));
    Ok(())
}

on_memory_and_kube!(ending_by_id_where_the_session_is_not_open_ends_it_where_it_is);

/// A session used on replica two alone stays open on replica one, whose own
/// idle timer sees no use of it: two's uses reach one through the session's
/// use mark. Once nobody uses it, both replicas end it.
async fn a_session_in_use_on_one_replica_is_not_expired_by_the_other<A: Backend, B: Backend>(
    pair: Pair<A, B>,
) -> Result<()> {
    let ttl = Duration::from_secs(2);
    let (one, two) = pair.registries_with(|builder| builder.idle_ttl(ttl));
    drop(one.open("s-idle").await?);
    let counter = two.open("s-idle").await?.global()?.use_value("n", 0_u64)?;
    // Used on two alone for three times the time to live: one's own timer
    // would have ended it twice over.
    let until = tokio::time::Instant::now() + ttl * 3;
    let mut uses = 0_u64;
    while tokio::time::Instant::now() < until {
        counter.update(|n| *n += 1)?;
        uses += 1;
        tokio::time::sleep(ttl / 10).await;
    }
    assert!(
        one.contains("s-idle"),
        "replica one kept open the session replica two was using"
    );
    assert_eq!(counter.get()?, uses, "no use was lost to an end");
    // Nobody uses it now: both replicas end it, and its use mark goes with it.
    eventually("both replicas to end the idle session", || {
        !one.contains("s-idle") && !two.contains("s-idle")
    })
    .await;
    let mark = layout::use_key("", "s-idle");
    eventually_async("the use mark to be removed", || async {
        pair.one
            .read(&mark)
            .await
            .expect("the mark reads")
            .is_none()
    })
    .await;
    Ok(())
}

on_memory_and_kube!(a_session_in_use_on_one_replica_is_not_expired_by_the_other);

/// Replica two's end has read the session's record when replica one ends the
/// session and opens a new life of the id, with a key in it. Replica two's end
/// then finds the record moved on and ends nothing more: the new life keeps
/// its record and its key.
async fn an_end_racing_an_end_and_a_new_life_leaves_the_new_life_alone<A: Backend, B: Backend>(
    pair: Pair<A, Held<B>>,
) -> Result<()> {
    let (one, two) = pair.registries();
    drop(one.open("s-9").await?);
    let on_two = two.open("s-9").await?;
    let (made_tx, made) = tokio::sync::oneshot::channel();
    let racer = one.clone();
    pair.two
        .after_next_read(layout::meta_key("", "s-9"), async move {
            let life = async {
                let _ = racer.end("s-9").await?;
                let life = racer.open("s-9").await?;
                let scope = life.global()?.durable().await?;
                scope
                    .use_value("kept", 0_u64)
                    .await?
                    .set_and_wait(5)
                    .await?;
                Ok::<_, Error>(life)
            }
            .await;
            let _ = made_tx.send(life);
        });
    let ended = on_two.end().await;
    let new_life = made.await.expect("the race ran")?;
    assert!(
        matches!(ended, Err(Error::SessionEnded { .. })),
        "replica two's end finds the session ended, not {ended:?}"
    );
    let fresh = new_life.generation()?;
    assert_eq!(record(&*pair.one, "s-9").await, Some(fresh));
    let kept = pair
        .one
        .list(&layout::generation_prefix("", "s-9", fresh))
        .await
        .expect("the new life lists");
    assert_eq!(kept.entries.len(), 1, "the new life's key is kept");
    assert!(!new_life.is_ended());
    Ok(())
}

on_memory_and_kube!(an_end_racing_an_end_and_a_new_life_leaves_the_new_life_alone);
