//! Who is where: peers, their groups, published tracks and who receives them.
//!
//! This is the SFU's control plane. It is plain data: every change returns the
//! [`Action`]s that bring the workers in line (subscribe, unsubscribe, set a
//! track's fan-out, tell a publisher its track is (un)published). It sits behind
//! one mutex that the per-packet path never takes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use convene_signaling::{TrackKind, TrackSource};

use super::{GroupId, PeerId, TrackInfo};

pub(crate) type PeerKey = u64;
pub(crate) type TrackKey = u64;
pub(crate) type WorkerIdx = usize;

/// Immutable facts about a published track, shared with the workers.
#[derive(Debug)]
pub(crate) struct TrackMeta {
    pub key: TrackKey,
    /// Public id, opaque (`t<n>`, msid-safe).
    pub id: String,
    /// The publisher's stream id for `a=msid` (opaque, `p<n>`): one per publishing peer.
    pub stream_id: String,
    pub kind: TrackKind,
    pub publisher: PeerKey,
    pub publisher_worker: WorkerIdx,
}

#[derive(Debug)]
pub(crate) struct PeerRec {
    pub key: PeerKey,
    pub id: PeerId,
    pub worker: WorkerIdx,
    pub group: GroupId,
    pub ufrag: String,
    pub can_publish: bool,
    /// Kinds a moderator muted: never forwarded, whatever the peer offers.
    pub muted: Vec<TrackKind>,
    pub subscribe: bool,
    pub only_publisher: Option<String>,
    pub tracks: Vec<TrackKey>,
}

#[derive(Debug)]
struct TrackRec {
    meta: Arc<TrackMeta>,
    source: TrackSource,
    layers: Vec<String>,
    /// Group the track was last announced in (None: not announced).
    announced: Option<GroupId>,
    /// The publisher stopped this one track (`unpublish {track_id}`).
    withheld: bool,
    subscribers: BTreeSet<PeerKey>,
}

/// What the directory asks the workers (and the publisher's event channel) to do.
#[derive(Debug)]
pub(crate) enum Action {
    Subscribe {
        worker: WorkerIdx,
        peer: PeerKey,
        track: Arc<TrackMeta>,
    },
    Unsubscribe {
        worker: WorkerIdx,
        peer: PeerKey,
        track: TrackKey,
    },
    /// The workers that have subscribers of `track` (sent to the publisher's worker).
    Fanout {
        worker: WorkerIdx,
        track: TrackKey,
        workers: Vec<WorkerIdx>,
    },
    Published {
        publisher: PeerKey,
        info: TrackInfo,
    },
    Unpublished {
        publisher: PeerKey,
        track_id: String,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Directory {
    pub peers: HashMap<PeerId, PeerRec>,
    by_key: HashMap<PeerKey, PeerId>,
    tracks: HashMap<TrackKey, TrackRec>,
}

impl Directory {
    pub fn peer_by_key(&self, key: PeerKey) -> Option<&PeerRec> {
        self.by_key.get(&key).and_then(|id| self.peers.get(id))
    }

    pub fn peer_count_on(&self, worker: WorkerIdx) -> usize {
        self.peers.values().filter(|p| p.worker == worker).count()
    }

    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    pub fn add_peer(&mut self, rec: PeerRec) -> Vec<Action> {
        let group = rec.group.clone();
        self.by_key.insert(rec.key, rec.id.clone());
        self.peers.insert(rec.id.clone(), rec);
        self.reconcile(&group)
    }

    /// Removes a peer (if `key` still names it) and everything it published.
    pub fn remove_peer(&mut self, key: PeerKey) -> Option<(PeerRec, Vec<Action>)> {
        let id = self.by_key.remove(&key)?;
        let rec = self.peers.remove(&id)?;
        let mut actions = Vec::new();
        for t in &rec.tracks {
            if let Some(track) = self.tracks.remove(t) {
                for sub in &track.subscribers {
                    if let Some(p) = self.peer_by_key(*sub) {
                        actions.push(Action::Unsubscribe {
                            worker: p.worker,
                            peer: *sub,
                            track: *t,
                        });
                    }
                }
                if track.announced.is_some() {
                    actions.push(Action::Unpublished {
                        publisher: key,
                        track_id: track.meta.id.clone(),
                    });
                }
            }
        }
        actions.extend(self.reconcile(&rec.group));
        Some((rec, actions))
    }

    pub fn add_track(
        &mut self,
        meta: Arc<TrackMeta>,
        source: TrackSource,
        layers: Vec<String>,
    ) -> Vec<Action> {
        let Some(id) = self.by_key.get(&meta.publisher) else {
            return Vec::new();
        };
        let Some(peer) = self.peers.get_mut(id) else {
            return Vec::new();
        };
        peer.tracks.push(meta.key);
        let group = peer.group.clone();
        self.tracks.insert(
            meta.key,
            TrackRec {
                meta,
                source,
                layers,
                announced: None,
                withheld: false,
                subscribers: BTreeSet::new(),
            },
        );
        self.reconcile(&group)
    }

    /// Ends one track (the publisher stopped sending it).
    pub fn remove_track(&mut self, key: TrackKey) -> Vec<Action> {
        let Some(track) = self.tracks.remove(&key) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for sub in &track.subscribers {
            if let Some(p) = self.peer_by_key(*sub) {
                actions.push(Action::Unsubscribe {
                    worker: p.worker,
                    peer: *sub,
                    track: key,
                });
            }
        }
        if track.announced.is_some() {
            actions.push(Action::Unpublished {
                publisher: track.meta.publisher,
                track_id: track.meta.id.clone(),
            });
        }
        if let Some(id) = self.by_key.get(&track.meta.publisher) {
            if let Some(p) = self.peers.get_mut(id) {
                p.tracks.retain(|t| *t != key);
            }
        }
        actions
    }

    pub fn set_can_publish(&mut self, peer: &str, allowed: bool) -> Vec<Action> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        p.can_publish = allowed;
        let group = p.group.clone();
        self.reconcile(&group)
    }

    /// A moderator's mute of one kind of this peer's media (enforced here, not by the peer).
    pub fn set_muted(&mut self, peer: &str, kind: TrackKind, muted: bool) -> Vec<Action> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        if p.muted.contains(&kind) == muted {
            return Vec::new();
        }
        if muted {
            p.muted.push(kind);
        } else {
            p.muted.retain(|k| *k != kind);
        }
        let group = p.group.clone();
        self.reconcile(&group)
    }

    pub fn move_peer(&mut self, peer: &str, group: GroupId) -> Vec<Action> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        if p.group == group {
            return Vec::new();
        }
        let old = std::mem::replace(&mut p.group, group.clone());
        let mut actions = self.reconcile(&old);
        actions.extend(self.reconcile(&group));
        actions
    }

    /// Withholds one track of `peer` (or, with `None`, changes all of them).
    pub fn set_withheld(
        &mut self,
        peer: &str,
        track_id: Option<&str>,
        withheld: bool,
    ) -> Vec<Action> {
        let Some(p) = self.peers.get(peer) else {
            return Vec::new();
        };
        let (group, key) = (p.group.clone(), p.key);
        let mut changed = false;
        for t in self.tracks.values_mut() {
            if t.meta.publisher == key
                && track_id.is_none_or(|id| t.meta.id == id)
                && t.withheld != withheld
            {
                t.withheld = withheld;
                changed = true;
            }
        }
        if changed {
            self.reconcile(&group)
        } else {
            Vec::new()
        }
    }

    pub fn set_source(&mut self, peer: &str, track_id: &str, source: TrackSource) -> Vec<Action> {
        let Some(p) = self.peers.get(peer) else {
            return Vec::new();
        };
        let group = p.group.clone();
        let Some(t) = self.tracks.values_mut().find(|t| {
            t.meta.id == track_id
                && self.by_key.get(&t.meta.publisher).map(String::as_str) == Some(peer)
        }) else {
            return Vec::new();
        };
        if t.source == source {
            return Vec::new();
        }
        t.source = source;
        // Reconcile re-announces it (a second `Published` carries the new source).
        t.announced = None;
        self.reconcile(&group)
    }

    /// Announced tracks of a group.
    pub fn tracks(&self, group: &GroupId) -> Vec<TrackInfo> {
        let mut v: Vec<TrackInfo> = self
            .tracks
            .values()
            .filter(|t| t.announced.as_ref() == Some(group))
            .filter_map(|t| self.info(t))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn info(&self, t: &TrackRec) -> Option<TrackInfo> {
        let publisher = self.peer_by_key(t.meta.publisher)?;
        Some(TrackInfo {
            id: t.meta.id.clone(),
            publisher: publisher.id.clone(),
            kind: t.meta.kind,
            source: t.source,
            group: publisher.group.clone(),
            layers: t.layers.clone(),
        })
    }

    /// Brings every track published in `group`, and every subscription into
    /// it, in line with the rules: a peer receives the tracks of its group
    /// except its own, when it subscribes, the publisher may publish, and the
    /// `only_publisher` filter (if any) names the publisher.
    fn reconcile(&mut self, group: &GroupId) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut keys: Vec<TrackKey> = self.tracks.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let Some(track) = self.tracks.get(&key) else {
                continue;
            };
            let Some(publisher) = self.peer_by_key(track.meta.publisher) else {
                continue;
            };
            let in_group = publisher.group == *group;
            let was_here = track.announced.as_ref() == Some(group);
            if !in_group && !was_here {
                continue;
            }
            let active = publisher.can_publish
                && !track.withheld
                && !publisher.muted.contains(&track.meta.kind);
            let desired: BTreeSet<PeerKey> = if active {
                self.peers
                    .values()
                    .filter(|p| {
                        p.group == publisher.group
                            && p.key != publisher.key
                            && p.subscribe
                            && p.only_publisher
                                .as_ref()
                                .is_none_or(|only| *only == publisher.id)
                    })
                    .map(|p| p.key)
                    .collect()
            } else {
                BTreeSet::new()
            };
            let publisher_group = publisher.group.clone();
            let publisher_worker = publisher.worker;
            let info = self.info(track);
            let track = &self.tracks[&key];
            let mut changed = false;
            for gone in track.subscribers.difference(&desired) {
                changed = true;
                if let Some(p) = self.peer_by_key(*gone) {
                    actions.push(Action::Unsubscribe {
                        worker: p.worker,
                        peer: *gone,
                        track: key,
                    });
                }
            }
            for new in desired.difference(&track.subscribers) {
                changed = true;
                if let Some(p) = self.peer_by_key(*new) {
                    actions.push(Action::Subscribe {
                        worker: p.worker,
                        peer: *new,
                        track: track.meta.clone(),
                    });
                }
            }
            let mut workers: Vec<WorkerIdx> = desired
                .iter()
                .filter_map(|k| self.peer_by_key(*k).map(|p| p.worker))
                .collect();
            workers.sort_unstable();
            workers.dedup();
            let want_announced = active.then_some(publisher_group);
            let Some(track) = self.tracks.get_mut(&key) else {
                continue;
            };
            if changed {
                actions.push(Action::Fanout {
                    worker: publisher_worker,
                    track: key,
                    workers,
                });
            }
            if track.announced != want_announced {
                if track.announced.is_some() {
                    actions.push(Action::Unpublished {
                        publisher: track.meta.publisher,
                        track_id: track.meta.id.clone(),
                    });
                }
                if let (Some(_), Some(info)) = (&want_announced, info) {
                    actions.push(Action::Published {
                        publisher: track.meta.publisher,
                        info,
                    });
                }
                track.announced = want_announced;
            }
            track.subscribers = desired;
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `"room"` is the main room of room `room`; `"room/b1"` its breakout 1.
    fn g(name: &str) -> GroupId {
        match name.split_once("/b") {
            Some((room, b)) => GroupId::new(room, Some(b.parse().unwrap())),
            None => GroupId::new(name, None),
        }
    }

    fn peer(dir: &mut Directory, key: PeerKey, group: &str, worker: WorkerIdx) -> Vec<Action> {
        dir.add_peer(PeerRec {
            key,
            id: format!("p{key}"),
            worker,
            group: g(group),
            ufrag: format!("u{key}"),
            can_publish: true,
            muted: Vec::new(),
            subscribe: true,
            only_publisher: None,
            tracks: vec![],
        })
    }

    fn track(dir: &mut Directory, key: TrackKey, publisher: PeerKey) -> Vec<Action> {
        let worker = dir.peer_by_key(publisher).unwrap().worker;
        dir.add_track(
            Arc::new(TrackMeta {
                key,
                id: format!("p{publisher}-{key}"),
                stream_id: format!("p{publisher}"),
                kind: TrackKind::Video,
                publisher,
                publisher_worker: worker,
            }),
            TrackSource::Camera,
            vec![],
        )
    }

    fn subs(actions: &[Action]) -> Vec<(PeerKey, TrackKey)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Subscribe { peer, track, .. } => Some((*peer, track.key)),
                _ => None,
            })
            .collect()
    }

    fn unsubs(actions: &[Action]) -> Vec<(PeerKey, TrackKey)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Unsubscribe { peer, track, .. } => Some((*peer, *track)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn group_members_receive_each_others_tracks() {
        let mut d = Directory::default();
        peer(&mut d, 1, "room", 0);
        peer(&mut d, 2, "room", 1);
        peer(&mut d, 3, "other", 0);
        let a = track(&mut d, 10, 1);
        assert_eq!(subs(&a), [(2, 10)]);
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::Published { publisher: 1, .. })));
        assert!(a.iter().any(
            |a| matches!(a, Action::Fanout { worker: 0, track: 10, workers } if workers == &[1])
        ));
        // A late joiner gets existing tracks.
        let a = peer(&mut d, 4, "room", 0);
        assert_eq!(subs(&a), [(4, 10)]);
        assert_eq!(d.tracks(&g("room")).len(), 1);
        assert!(d.tracks(&g("other")).is_empty());
    }

    #[test]
    fn revoking_publish_unsubscribes_and_unpublishes() {
        let mut d = Directory::default();
        peer(&mut d, 1, "room", 0);
        peer(&mut d, 2, "room", 0);
        track(&mut d, 10, 1);
        let a = d.set_can_publish("p1", false);
        assert_eq!(unsubs(&a), [(2, 10)]);
        assert!(a.iter().any(|a| matches!(a, Action::Unpublished { .. })));
        assert!(d.tracks(&g("room")).is_empty());
        let a = d.set_can_publish("p1", true);
        assert_eq!(subs(&a), [(2, 10)]);
    }

    #[test]
    fn unpublishing_one_track_leaves_the_others_and_a_new_offer_releases_it() {
        let mut d = Directory::default();
        peer(&mut d, 1, "room", 0);
        peer(&mut d, 2, "room", 0);
        track(&mut d, 10, 1);
        track(&mut d, 11, 1);
        let a = d.set_withheld("p1", Some("p1-11"), true);
        assert_eq!(unsubs(&a), [(2, 11)]);
        assert!(subs(&a).is_empty());
        assert_eq!(d.tracks(&g("room")).len(), 1);
        // Another peer cannot withhold p1's track by naming it.
        assert!(d.set_withheld("p2", Some("p1-10"), true).is_empty());
        let a = d.set_withheld("p1", None, false);
        assert_eq!(subs(&a), [(2, 11)]);
        assert_eq!(d.tracks(&g("room")).len(), 2);
    }

    #[test]
    fn a_moderators_mute_stops_one_kind_and_a_new_offer_does_not_lift_it() {
        let mut d = Directory::default();
        peer(&mut d, 1, "room", 0);
        peer(&mut d, 2, "room", 0);
        track(&mut d, 10, 1);
        let a = d.set_muted("p1", TrackKind::Video, true);
        assert_eq!(unsubs(&a), [(2, 10)]);
        // The peer offers again (release what it withheld itself): the mute holds.
        assert!(subs(&d.set_withheld("p1", None, false)).is_empty());
        assert!(subs(&d.set_muted("p1", TrackKind::Audio, true)).is_empty());
        assert!(d.tracks(&g("room")).is_empty());
        let a = d.set_muted("p1", TrackKind::Video, false);
        assert_eq!(subs(&a), [(2, 10)]);
    }

    #[test]
    fn moving_switches_tracks() {
        let mut d = Directory::default();
        peer(&mut d, 1, "room", 0);
        peer(&mut d, 2, "room", 0);
        peer(&mut d, 3, "room/b1", 0);
        track(&mut d, 10, 1);
        track(&mut d, 30, 3);
        let a = d.move_peer("p2", g("room/b1"));
        assert_eq!(unsubs(&a), [(2, 10)]);
        assert_eq!(subs(&a), [(2, 30)]);
        // The publisher moves: its track leaves the main room.
        let a = d.move_peer("p1", g("room/b1"));
        let mut s = subs(&a);
        s.sort();
        assert_eq!(s, [(1, 30), (2, 10), (3, 10)]);
        assert!(d.tracks(&g("room")).is_empty());
        assert_eq!(d.tracks(&g("room/b1")).len(), 2);
    }

    #[test]
    fn only_publisher_and_removal() {
        let mut d = Directory::default();
        peer(&mut d, 1, "room", 0);
        peer(&mut d, 2, "room", 0);
        d.add_peer(PeerRec {
            key: 5,
            id: "viewer".into(),
            worker: 1,
            group: g("room"),
            ufrag: "u5".into(),
            can_publish: false,
            muted: Vec::new(),
            subscribe: true,
            only_publisher: Some("p2".into()),
            tracks: vec![],
        });
        let a = track(&mut d, 10, 1);
        assert_eq!(subs(&a), [(2, 10)]);
        let a = track(&mut d, 20, 2);
        assert_eq!(subs(&a), [(1, 20), (5, 20)]);
        let (_, a) = d.remove_peer(2).unwrap();
        let mut u = unsubs(&a);
        u.sort();
        assert_eq!(u, [(1, 20), (5, 20)]);
        assert!(a.iter().any(|a| matches!(a, Action::Unpublished { .. })));
        assert_eq!(d.tracks(&g("room")).len(), 1);
    }
}
