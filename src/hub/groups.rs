//! Named groups of a shard's connections: the members of each room, the
//! subscribers of each channel, the presence watchers of each channel. A
//! group exists while it has a member on this shard; its index is stable
//! while it exists, so a room connection keeps its room as a `u32`.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexSet;
use slab::Slab;

struct Group {
    name: Arc<str>,
    /// Slab keys of the members on this shard.
    members: IndexSet<u32>,
}

#[derive(Default)]
pub(crate) struct Groups {
    groups: Slab<Group>,
    by_name: HashMap<Arc<str>, usize>,
}

impl Groups {
    /// Adds connection `key` to group `name` (made if new); returns its index.
    pub fn join(&mut self, name: &str, key: usize) -> u32 {
        let index = match self.by_name.get(name) {
            Some(&index) => index,
            None => {
                let name: Arc<str> = name.into();
                let index = self.groups.insert(Group {
                    name: Arc::clone(&name),
                    members: IndexSet::new(),
                });
                self.by_name.insert(name, index);
                index
            }
        };
        self.groups[index].members.insert(key as u32);
        index as u32
    }

    /// Removes connection `key` from group `name`.
    pub(crate) fn leave_name(&mut self, name: &str, key: usize) {
        if let Some(&index) = self.by_name.get(name) {
            self.leave(index as u32, key);
        }
    }

    /// Removes connection `key` from group `index`; an empty group goes away.
    pub fn leave(&mut self, index: u32, key: usize) {
        let Some(room) = self.groups.get_mut(index as usize) else {
            return;
        };
        room.members.swap_remove(&(key as u32));
        if room.members.is_empty() {
            let room = self.groups.remove(index as usize);
            self.by_name.remove(&room.name);
        }
    }

    pub fn name(&self, index: u32) -> Option<Arc<str>> {
        self.groups.get(index as usize).map(|r| Arc::clone(&r.name))
    }

    /// The local members of group `name`, if it has any here.
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
}
