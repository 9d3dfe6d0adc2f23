//! Replicas sharing one durable backend are one session everywhere: each case
//! runs on two registries over one memory backend and on two kube backends of
//! one store on the in-process fake API server.

mod common;

use common::replicas::{Held, Pair, kube_pair, memory_pair};
use store_core::Backend;
use store_session::{Error, Result};

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
    let counter = scope_one.use_value("counter", 0_u64).await?;
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
    assert_eq!(*loser.get()?, 7, "the loser reads the winner's value");
    loser.update(|n| *n += 1).await?;
    assert_eq!(*loser.get()?, 8);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn the_loser_of_a_create_race_reads_the_winners_value_on_memory() -> Result<()> {
    the_loser_of_a_create_race_reads_the_winners_value(memory_pair()).await
}

#[tokio::test(flavor = "current_thread")]
async fn the_loser_of_a_create_race_reads_the_winners_value_on_kube() -> Result<()> {
    the_loser_of_a_create_race_reads_the_winners_value(kube_pair().await).await
}

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
        common::replicas::eventually("both increments to be seen", || {
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
