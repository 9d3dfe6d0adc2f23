//! The METIS deployment workflow on session-scoped stores.
//!
//! Three target scripts (deploy-start, deploy-step, deploy-status) run in two
//! target environments of one session. The deployment record lives in the
//! session's global store, so every environment sees it; each environment's
//! progress lives in its local store, which no other environment sees. When
//! the session ends its data is freed and old handles report `Outdated`.
//!
//! ```sh
//! cargo run --example session-workflow
//! ```

use serde::{Deserialize, Serialize};
use store_session::{Error, Result, Session, Sessions};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Deployment {
    id: Option<String>,
    status: String,
    steps: Vec<Step>,
    environment: String,
    version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Step {
    name: String,
    target: String,
    status: String,
}

/// deploy-start: initialises the deployment in the global store.
async fn deploy_start(session: &Session, environment: &str, version: &str) -> Result<String> {
    let global = session.global()?.durable().await?;
    let deployment = global
        .use_value("deployment", Deployment::default())
        .await?;
    let id = format!("deploy_{}", session.id());
    deployment
        .update(|d| {
            d.id = Some(id.clone());
            d.status = "preparing".into();
            d.environment = environment.into();
            d.version = version.into();
        })
        .await?;
    println!("deploy-start: deployment {id} initialised ({environment}, {version})");
    Ok(id)
}

/// deploy-step: records a step in the global record and in the target's local progress.
async fn deploy_step(session: &Session, target: &str, step: &str) -> Result<()> {
    let global = session.global()?.durable().await?;
    let deployment = global
        .use_value("deployment", Deployment::default())
        .await?;
    if deployment.get()?.id.is_none() {
        println!("deploy-step: no active deployment; start one first");
        return Ok(());
    }
    deployment
        .update(|d| {
            d.status = "running".into();
            d.steps.push(Step {
                name: step.into(),
                target: target.into(),
                status: "completed".into(),
            });
        })
        .await?;
    let local = session.local(target)?;
    let done = local.use_value("steps-done", 0_u32)?;
    done.update(|n| *n += 1)?;
    println!(
        "deploy-step: {target} completed {step} ({} done here)",
        done.get()?
    );
    Ok(())
}

/// deploy-status: reports progress as one target sees it.
async fn deploy_status(session: &Session, target: &str) -> Result<()> {
    let global = session.global()?.durable().await?;
    let deployment = global
        .use_value("deployment", Deployment::default())
        .await?
        .get()?;
    let local = session
        .local(target)?
        .use_value("steps-done", 0_u32)?
        .get()?;
    println!(
        "deploy-status: {target} sees deployment {} {} with {} steps in all, {local} of them its own",
        deployment.id.as_deref().unwrap_or("-"),
        deployment.status,
        deployment.steps.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-workflow failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let sessions = Sessions::new();
    let session = sessions.open("session-42").await?;

    deploy_start(&session, "staging", "1.4.2").await?;
    deploy_step(&session, "env-alpha", "pull-images").await?;
    deploy_step(&session, "env-bravo", "pull-images").await?;
    deploy_step(&session, "env-alpha", "migrate-db").await?;
    deploy_status(&session, "env-alpha").await?;
    deploy_status(&session, "env-bravo").await?;

    // Isolation: a local value of env-alpha is not visible from env-bravo.
    let alpha = session.local("env-alpha")?.keys()?;
    let bravo_cache = session
        .local("env-bravo")?
        .use_value("steps-done", 0_u32)?
        .get()?;
    println!("isolation: env-alpha local keys {alpha:?}; env-bravo counts {bravo_cache} step(s)");

    // A second session is a world of its own.
    let other = sessions.open("session-43").await?;
    let other_global = other.global()?.durable().await?;
    let seen = other_global
        .use_value("deployment", Deployment::default())
        .await?
        .get()?;
    println!("isolation: session-43 sees deployment id {:?}", seen.id);

    // Cleanup at session end: its data is freed, its handles are outdated.
    let handle = session.local("env-alpha")?.use_value("steps-done", 0_u32)?;
    let ended = session.end().await?;
    println!(
        "cleanup: session-42 ended, freed {} live entries and {} durable keys",
        ended.live_entries, ended.durable_keys
    );
    match handle.get() {
        Err(Error::Outdated { key }) => println!("cleanup: handle for {key:?} is outdated"),
        other => println!("cleanup: unexpected {other:?}"),
    }
    let ended = other.end().await?;
    println!(
        "cleanup: session-43 ended, freed {} durable keys",
        ended.durable_keys
    );
    Ok(())
}
