//! The sync task: lists the backend, then follows its watch, keeping the local
//! view current and telling subscribers what changed.
//!
//! A watch that errors or ends is resumed from the view's revision; a watch
//! that reports a gap triggers a fresh listing, diffed against the view so
//! subscribers still see every key that changed. Failures back off with
//! jitter and never stop the task; only closing the store does.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use crate::backend::{Change, Entry, Listing, Revision, SharedIndex, SharedKey, WatchEvent};
use crate::backoff::Backoff;
use crate::error::Result;
use crate::shared::{Shared, write};
use crate::subscribe::ChangeEvent;
use crate::view::View;

pub(crate) async fn run(shared: Arc<Shared>, synced: oneshot::Sender<()>) {
    let mut closed = shared.closed.subscribe();
    let mut synced = Some(synced);
    let mut backoff = Backoff::new(shared.retry);
    'relist: loop {
        let listing = tokio::select! {
            listing = list(&shared) => listing,
            _ = closed.wait_for(|c| *c) => return,
        };
        let listing = match listing {
            Ok(listing) => listing,
            Err(error) => {
                tracing::warn!(store = %shared.name, %error, "listing failed; retrying");
                shared.metrics.restarts_list_failed.increment(1);
                if !pause(&mut backoff, &mut closed).await {
                    return;
                }
                continue;
            }
        };
        replace_view(&shared, listing);
        if let Some(tx) = synced.take() {
            shared.synced();
            let _ = tx.send(());
        }
        loop {
            let from = shared.view_revision();
            let stream = tokio::select! {
                stream = shared.backend.watch(from) => stream,
                _ = closed.wait_for(|c| *c) => return,
            };
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(store = %shared.name, %error, "watch failed to start; retrying");
                    shared.metrics.restarts_start_failed.increment(1);
                    if !pause(&mut backoff, &mut closed).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    _ = closed.wait_for(|c| *c) => return,
                };
                match event {
                    Some(Ok(WatchEvent::Changes {
                        revision,
                        changes,
                        index,
                    })) => {
                        backoff.reset();
                        fold_changes(&shared, revision, changes, index);
                    }
                    Some(Ok(WatchEvent::Progress(revision))) => advance(&shared, revision),
                    Some(Ok(WatchEvent::Gap)) => {
                        tracing::info!(store = %shared.name, "watch reported a gap; re-listing");
                        shared.metrics.gaps.increment(1);
                        continue 'relist;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(store = %shared.name, %error, "watch failed; resuming");
                        shared.metrics.restarts_error.increment(1);
                        if !pause(&mut backoff, &mut closed).await {
                            return;
                        }
                        break;
                    }
                    None => {
                        tracing::debug!(store = %shared.name, "watch ended; resuming");
                        shared.metrics.restarts_ended.increment(1);
                        break;
                    }
                }
            }
        }
    }
}

/// Sleeps for the next backoff step; `false` if the store closed meanwhile.
async fn pause(backoff: &mut Backoff, closed: &mut watch::Receiver<bool>) -> bool {
    let delay = backoff.next_delay(None);
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = closed.wait_for(|c| *c) => false,
    }
}

/// What a listing gave: entries to copy, or the backend's shared index.
enum Listed {
    Entries(Listing),
    Index(SharedIndex, Revision),
}

/// The backend's shared index where it keeps one, else a listing.
async fn list(shared: &Shared) -> Result<Listed> {
    match shared.backend.list_index().await? {
        Some((index, revision)) => Ok(Listed::Index(index, revision)),
        None => shared.backend.list("").await.map(Listed::Entries),
    }
}

/// Replaces the view with a listing, emitting a change for every key that differs.
fn replace_view(shared: &Shared, listed: Listed) {
    let text = shared.caps.text_values;
    let mut changes = Vec::new();
    let revision = {
        let mut view = write(&shared.view);
        let revision = match listed {
            Listed::Entries(listing) => {
                let listed: HashSet<&str> = listing.entries.iter().map(Entry::key).collect();
                let gone = view.iter().filter(|entry| !listed.contains(entry.key()));
                changes.extend(gone.map(|entry| Change::Removed(SharedKey::from(entry.key()))));
                let put = listing.entries.iter().filter(|entry| differs(&view, entry));
                changes.extend(put.cloned().map(Change::Put));
                for change in &changes {
                    // Listed: the server's word, whatever version the view holds.
                    if let Change::Put(entry) = change {
                        view.apply(&Change::Removed(SharedKey::from(entry.key())));
                    }
                    view.apply(change);
                }
                listing.revision
            }
            Listed::Index(index, revision) => {
                let gone = view.iter().filter(|entry| index.get(entry.key()).is_none());
                changes.extend(gone.map(|entry| Change::Removed(SharedKey::from(entry.key()))));
                let put = index.entries().filter(|entry| differs(&view, entry));
                changes.extend(put.cloned().map(Change::Put));
                view.adopt(index);
                revision
            }
        };
        view.revision = view.revision.max(revision);
        revision
    };
    let events = changes
        .into_iter()
        .map(|change| ChangeEvent::new(change, revision, text))
        .collect();
    view_moved(shared, revision, events);
}

/// Whether the view holds another value or version than `entry` for its key.
fn differs(view: &View, entry: &Entry) -> bool {
    view.get(entry.key())
        .is_none_or(|held| held.value() != entry.value() || held.version() != entry.version())
}

fn fold_changes(
    shared: &Shared,
    revision: Revision,
    changes: Vec<Change>,
    index: Option<SharedIndex>,
) {
    let text = shared.caps.text_values;
    let mut events = Vec::with_capacity(changes.len());
    {
        let mut view = write(&shared.view);
        if revision <= view.revision {
            // Already seen (a resumed watch may repeat the last revision).
            return;
        }
        for change in changes {
            // With the backend's index at this revision, the view takes it
            // whole and applies nothing itself.
            let changed = match &index {
                Some(_) => view.would_change(&change),
                None => view.apply(&change),
            };
            if changed {
                events.push(ChangeEvent::new(change, revision, text));
            }
        }
        if let Some(index) = index {
            view.adopt(index);
        }
        view.revision = revision;
    }
    view_moved(shared, revision, events);
}

fn advance(shared: &Shared, revision: Revision) {
    {
        let mut view = write(&shared.view);
        if revision <= view.revision {
            return;
        }
        view.revision = revision;
    }
    view_moved(shared, revision, Vec::new());
}

/// After the view moved to `revision`: retire covered overlay entries, tell
/// subscribers, then wake waiters — in that order, so a subscription made
/// after a wait returns never receives the change that ended the wait.
fn view_moved(shared: &Shared, revision: Revision, events: Vec<ChangeEvent>) {
    let revision = shared.view_revision().max(revision);
    shared.with_writes(|w| w.view_reached(revision));
    shared.deliver(events);
    shared.revision.send_replace(revision);
}
