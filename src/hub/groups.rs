//! Named groups of a shard's connections: the members of each room, the
//! subscribers of each channel, the presence watchers of each channel. A
//! group exists while it has a member on this shard; its index is stable
//! while it exists, so a room connection keeps its room as a `u32`.
//!
//! A channel subscriber may join *after* a point of its owner's stream of
//! deliveries that this shard has not reached yet (the owner's answer came
//! on the control lane, ahead of deliveries published before it): it waits
//! aside, not a member, until the first delivery past that point
//! ([`Groups::admit`]), so it never gets a publication its position already
//! covers. Delivery to the members costs nothing more for it; only a group
//! with someone waiting looks at the waiting list.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexSet;
use slab::Slab;

struct Group {
    name: Arc<str>,
    /// Slab keys of the members on this shard.
    members: IndexSet<u32>,
    /// Connections joining after a delivery number, until admitted.
    waiting: Vec<Waiting>,
}

/// A connection that becomes a member at the first delivery after `after`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiting {
    pub key: u32,
    /// The owner's delivery number (`Deliver::seq`) its position covers.
    pub after: u64,
    /// When its owner's answer arrived, in the hub's count of the control
    /// messages ordered against deliveries (`Hub::arrivals`).
    pub arrived: u64,
}

#[derive(Default)]
pub(crate) struct Groups {
    groups: Slab<Group>,
    by_name: HashMap<Arc<str>, usize>,
    /// Entries in every group's `waiting` (0 nearly always: one test).
    waiting: usize,
}

impl Groups {
    /// Adds connection `key` to group `name` (made if new); returns its index.
    pub fn join(&mut self, name: &str, key: usize) -> u32 {
        let index = self.index(name);
        self.groups[index].members.insert(key as u32);
        index as u32
    }

    /// Adds a connection to group `name` as waiting: deliveries up to its
    /// `after` are not its own (they come before its position), so it
    /// becomes a member when [`Groups::admit`] says so.
    pub fn join_after(&mut self, name: &str, waiting: Waiting) {
        let index = self.index(name);
        self.groups[index].waiting.push(waiting);
        self.waiting += 1;
    }

    /// Makes members of group `name` the waiting connections that are
    /// `due` (the delivery or push in hand is theirs, and all after it).
    pub fn admit(&mut self, name: &str, due: impl Fn(&Waiting) -> bool) {
        if self.waiting == 0 {
            return;
        }
        let Some(&index) = self.by_name.get(name) else { return };
        let Group { members, waiting, .. } = &mut self.groups[index];
        let before = waiting.len();
        waiting.retain(|w| {
            let admitted = due(w);
            if admitted {
                members.insert(w.key);
            }
            !admitted
        });
        self.waiting -= before - waiting.len();
    }

    /// The index of group `name`, made if new.
    fn index(&mut self, name: &str) -> usize {
        match self.by_name.get(name) {
            Some(&index) => index,
            None => {
                let name: Arc<str> = name.into();
                let index = self.groups.insert(Group {
                    name: Arc::clone(&name),
                    members: IndexSet::new(),
                    waiting: Vec::new(),
                });
                self.by_name.insert(name, index);
                index
            }
        }
    }

    /// Removes connection `key` from group `name`.
    pub(crate) fn leave_name(&mut self, name: &str, key: usize) {
        if let Some(&index) = self.by_name.get(name) {
            self.leave(index as u32, key);
        }
    }

    /// Removes connection `key` (member or waiting) from group `index`; an
    /// empty group goes away.
    pub fn leave(&mut self, index: u32, key: usize) {
        let Some(room) = self.groups.get_mut(index as usize) else {
            return;
        };
        let key = key as u32;
        if !room.members.swap_remove(&key) {
            if let Some(at) = room.waiting.iter().position(|w| w.key == key) {
                room.waiting.swap_remove(at);
                self.waiting -= 1;
            }
        }
        if room.members.is_empty() && room.waiting.is_empty() {
            let room = self.groups.remove(index as usize);
            self.by_name.remove(&room.name);
        }
    }

    pub fn name(&self, index: u32) -> Option<Arc<str>> {
        self.groups.get(index as usize).map(|r| Arc::clone(&r.name))
    }

    /// The local members of group `name`, if it has any here (not those
    /// waiting to be admitted).
    pub fn members(&self, name: &str) -> Option<&indexmap::set::Slice<u32>> {
        self.by_name.get(name).map(|&i| self.groups[i].members.as_slice())
    }

    /// Groups with members on this shard.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_and_cleanup() {
        let mut rooms = Groups::default();
        let a = rooms.join("lobby", 1);
        assert_eq!(rooms.join("lobby", 2), a);
        let b = rooms.join("other", 3);
        assert_ne!(a, b);
        assert_eq!(
            rooms.members("lobby").map(|m| m.iter().copied().collect::<Vec<_>>()),
            Some(vec![1, 2])
        );
        rooms.leave(a, 1);
        assert_eq!(rooms.members("lobby").map(|m| m.len()), Some(1));
        rooms.leave(a, 2);
        assert!(rooms.members("lobby").is_none());
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms.name(b).as_deref(), Some("other"));
    }

    fn members(groups: &Groups, name: &str) -> Vec<u32> {
        groups
            .members(name)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_member_joining_after_a_delivery_number_is_admitted_past_it_only() {
        let waiting = |key, after| Waiting { key, after, arrived: 0 };
        let delivery = |seq| move |w: &Waiting| w.after < seq;
        let mut channels = Groups::default();
        channels.join("c", 1);
        channels.join_after("c", waiting(2, 10));
        channels.join_after("c", waiting(3, 12));
        channels.admit("c", delivery(9));
        channels.admit("c", delivery(10));
        assert_eq!(members(&channels, "c"), vec![1], "deliveries up to 10 are not 2's");
        channels.admit("other", delivery(11));
        channels.admit("c", delivery(11));
        assert_eq!(members(&channels, "c"), vec![1, 2]);
        // One waiting leaves before it is admitted: nothing of it stays.
        channels.leave_name("c", 3);
        channels.admit("c", delivery(13));
        assert_eq!(members(&channels, "c"), vec![1, 2]);
        channels.leave_name("c", 1);
        channels.leave_name("c", 2);
        assert!(channels.members("c").is_none() && channels.len() == 0);
        // A group of only waiting connections exists until they leave.
        channels.join_after("d", waiting(4, 1));
        assert_eq!(members(&channels, "d"), Vec::<u32>::new());
        channels.leave_name("d", 4);
        assert_eq!((channels.len(), channels.waiting), (0, 0));
    }
}
