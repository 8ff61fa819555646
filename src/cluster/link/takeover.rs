//! Taking a room over when its lease lapsed: rebuilds it from the last snapshot and the inputs recorded since, checks the replay against the events already stored, and holds what the dead owner never appended or answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::owner::{Batch, Owner, OwnerSnapshot};
use crate::cluster::protocol::NodeMessage;
use crate::cluster::store::{self, StoreError};
use crate::cluster::Cluster;
use convene_core::wire::Envelope;

/// Why a takeover waits for the next lease check.
pub(super) struct Postponed {
    pub(super) why: &'static str,
    pub(super) error: StoreError,
}

fn postponed(why: &'static str) -> impl FnOnce(StoreError) -> Postponed {
    move |error| Postponed { why, error }
}

/// What replaying the recorded inputs produced.
#[derive(Default)]
struct Replayed {
    events: Vec<Arc<Envelope>>,
    /// Answers still owed, per node.
    answers: BTreeMap<String, Vec<NodeMessage>>,
    inputs: u64,
}

/// The room rebuilt under fencing token `token`, and how many inputs that replayed.
pub(super) async fn rebuild(
    cluster: &Cluster,
    room: &str,
    token: u64,
) -> Result<(Owner, u64), Postponed> {
    let mut owner = match restore(cluster, room, token).await {
        Ok(Some(owner)) => owner,
        Ok(None) => Owner::new(
            token,
            room,
            cluster.actor_config().clone(),
            cluster.clock().now(),
        ),
        Err(error) => return Err(postponed("cannot read the snapshot")(error)),
    };
    let store = cluster.store();
    let stored_last = store
        .last_number(&store::events_key(room))
        .await
        .map_err(postponed("cannot read events"))?;
    // Inputs up to `answered` had their answers sent with the old owner's appends; those
    // after it (recorded while the room had no live owner) get theirs now, acks included.
    let answered = store
        .applied(room)
        .await
        .map_err(postponed("cannot read what was answered"))?;
    let Replayed {
        events,
        mut answers,
        inputs,
    } = replay(cluster, &mut owner, answered).await?;
    // Events the old owner appended must match; those it never appended are appended now.
    let (known, missing): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| e.seq <= stored_last);
    check_against_stored(cluster, room, &known, stored_last).await;
    answers.retain(|_, messages| !messages.is_empty());
    if !missing.is_empty() || !answers.is_empty() {
        let through = owner.next_input() - 1;
        owner.hold(Batch {
            events: missing,
            through,
            messages: answers,
        });
    }
    Ok((owner, inputs))
}

/// Applies every recorded input after the snapshot. Answers already sent are dropped;
/// calls still waiting are answered whatever their place: their callers ignore repeats.
async fn replay(
    cluster: &Cluster,
    owner: &mut Owner,
    answered: u64,
) -> Result<Replayed, Postponed> {
    let mut replayed = Replayed::default();
    loop {
        let read = owner
            .read_inputs(cluster)
            .await
            .map_err(postponed("cannot read inputs"))?;
        if read == 0 {
            break;
        }
        let before = owner.next_input();
        while let Some(batch) = owner.apply_ready(1) {
            replayed.events.extend(batch.events);
            let unanswered = batch.through > answered;
            for (node, messages) in batch.messages {
                replayed.answers.entry(node).or_default().extend(
                    messages
                        .into_iter()
                        .filter(|m| unanswered || matches!(m, NodeMessage::Call { .. })),
                );
            }
        }
        replayed.inputs += owner.next_input() - before;
        if owner.next_input() == before {
            break;
        }
    }
    Ok(replayed)
}

/// Counts (and logs) every replayed event that differs from the one the old owner stored.
async fn check_against_stored(
    cluster: &Cluster,
    room: &str,
    known: &[Arc<Envelope>],
    stored_last: u64,
) {
    let Some(first) = known.first() else {
        return;
    };
    let Ok(stored) = cluster
        .store()
        .range(
            &store::events_key(room),
            first.seq,
            Some(stored_last),
            usize::MAX,
        )
        .await
    else {
        return;
    };
    let stored: BTreeMap<u64, String> = stored.into_iter().collect();
    for envelope in known {
        let Some(stored) = stored.get(&envelope.seq) else {
            continue;
        };
        let ours = serde_json::to_string(&**envelope).expect("envelopes serialise");
        if *stored != ours {
            crate::metrics::cluster_replay_mismatch();
            tracing::error!(
                room,
                seq = envelope.seq,
                "replayed event differs from the stored one"
            );
        }
    }
}

/// The room as its last snapshot left it, with the events before it for resumes.
async fn restore(cluster: &Cluster, room: &str, token: u64) -> Result<Option<Owner>, StoreError> {
    let store = cluster.store();
    let Some(stored) = store.load_snapshot(room).await? else {
        return Ok(None);
    };
    let unreadable = |e: serde_json::Error| StoreError::Reply(format!("snapshot: {e}"));
    let snapshot: OwnerSnapshot = serde_json::from_str(&stored.state).map_err(unreadable)?;
    let keep = cluster.actor_config().event_log_len as u64;
    let from = stored.seq.saturating_sub(keep) + 1;
    let recent = store
        .range(
            &store::events_key(room),
            from,
            Some(stored.seq),
            keep as usize,
        )
        .await?
        .into_iter()
        .filter_map(|(_, json)| serde_json::from_str::<Envelope>(&json).ok().map(Arc::new))
        .collect();
    Owner::from_snapshot(
        token,
        room,
        snapshot,
        recent,
        cluster.actor_config().clone(),
        stored.input + 1,
    )
    .map(Some)
    .map_err(unreadable)
}
