//! A shard's rooms: name -> local members. Rooms exist while they have a
//! member on this shard; a room's index is stable while it exists, so a
//! connection keeps its room as a `u32`.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexSet;
use slab::Slab;

struct Room {
    name: Arc<str>,
    /// Slab keys of the members on this shard.
    members: IndexSet<u32>,
}

#[derive(Default)]
pub struct Rooms {
    rooms: Slab<Room>,
    by_name: HashMap<Arc<str>, usize>,
}

impl Rooms {
    /// Adds connection `key` to room `name` (made if new); returns its index.
    pub fn join(&mut self, name: &str, key: usize) -> u32 {
        let index = match self.by_name.get(name) {
            Some(&index) => index,
            None => {
                let name: Arc<str> = name.into();
                let index = self.rooms.insert(Room {
                    name: Arc::clone(&name),
                    members: IndexSet::new(),
                });
                self.by_name.insert(name, index);
                index
            }
        };
        self.rooms[index].members.insert(key as u32);
        index as u32
    }

    /// Removes connection `key` from room `index`; an empty room goes away.
    pub fn leave(&mut self, index: u32, key: usize) {
        let Some(room) = self.rooms.get_mut(index as usize) else {
            return;
        };
        room.members.swap_remove(&(key as u32));
        if room.members.is_empty() {
            let room = self.rooms.remove(index as usize);
            self.by_name.remove(&room.name);
        }
    }

    pub fn name(&self, index: u32) -> Option<Arc<str>> {
        self.rooms.get(index as usize).map(|r| Arc::clone(&r.name))
    }

    /// The local members of room `name`, if it has any here.
    pub fn members(&self, name: &str) -> Option<&indexmap::set::Slice<u32>> {
        self.by_name.get(name).map(|&i| self.rooms[i].members.as_slice())
    }

    /// Rooms with members on this shard.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_and_cleanup() {
        let mut rooms = Rooms::default();
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
