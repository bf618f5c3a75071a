//! An event as the sinks hold it, and its charge to `--memory-limit`
//! (`kind="events"`).
//!
//! Every sink that takes an event holds the same allocation (one `Arc`), so
//! the event is charged once, when the emitter makes it, and released when
//! the last sink lets go of it (sent, dropped or refused by every queue),
//! whichever thread that is on. Each sink's own bound
//! (`--events-max-bytes`) still counts the event in full: that bound is per
//! sink, the budget is the process's.
//!
//! A sink left behind at the stop (still inside a request after the grace)
//! holds events nobody will deliver or count: [`Account::abandon`] releases
//! everything still charged at once, and the releases that come later (if
//! that thread ever ends) are not taken off the budget a second time.

use std::borrow::Borrow;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Event;
use crate::buf::budget::{MemKind, MemoryBudget};

/// Set in `Account::state` once abandoned: from then on nothing is charged
/// or released (bytes held always stay far below this bit).
const ABANDONED: u64 = 1 << 63;

/// What the events alive now are charged, for one emitter and its sinks.
pub(crate) struct Account {
    budget: Option<Arc<MemoryBudget>>,
    /// Bytes of the events alive, with `ABANDONED` or-ed in once abandoned.
    /// Updated before the budget, so `abandon` and a charge or release racing
    /// with it still leave the budget exact once both are done.
    state: AtomicU64,
}

impl Account {
    pub fn new(budget: Option<Arc<MemoryBudget>>) -> Arc<Account> {
        Arc::new(Account {
            budget,
            state: AtomicU64::new(0),
        })
    }

    fn charge(&self, bytes: usize) {
        let before = self.state.fetch_add(bytes as u64, Ordering::Relaxed);
        if before & ABANDONED == 0 {
            self.budget_add(bytes as i64);
        }
    }

    fn release(&self, bytes: usize) {
        let before = self.state.fetch_sub(bytes as u64, Ordering::Relaxed);
        if before & ABANDONED == 0 {
            self.budget_add(-(bytes as i64));
        }
    }

    /// The sinks are stopping and one was left behind: what is still alive
    /// is released now, and no later charge or release touches the budget.
    pub fn abandon(&self) {
        let before = self.state.fetch_or(ABANDONED, Ordering::Relaxed);
        if before & ABANDONED == 0 {
            self.budget_add(-(before as i64));
        }
    }

    /// Bytes of the events alive (counted even once abandoned).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        (self.state.load(Ordering::Relaxed) & !ABANDONED) as usize
    }

    fn budget_add(&self, delta: i64) {
        if let Some(budget) = &self.budget {
            budget.add(MemKind::Events, delta);
        }
    }
}

/// An event shared by the sinks that took it; cloning it is one reference
/// count. It derefs to the event.
#[derive(Clone)]
pub(crate) struct Held(Arc<Charged>);

struct Charged {
    event: Event,
    weight: usize,
    account: Arc<Account>,
}

impl Held {
    /// Charges `event`'s weight to `account` until the last clone is dropped.
    pub fn new(event: Event, account: &Arc<Account>) -> Held {
        let weight = event.weight();
        account.charge(weight);
        Held(Arc::new(Charged {
            event,
            weight,
            account: Arc::clone(account),
        }))
    }

    /// The event's weight (`Event::weight`, computed once).
    pub fn weight(&self) -> usize {
        self.0.weight
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.account.release(self.weight);
    }
}

impl Deref for Held {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.0.event
    }
}

impl Borrow<Event> for Held {
    fn borrow(&self) -> &Event {
        &self.0.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ClientId, Kind};

    fn event() -> Event {
        Event {
            kind: Kind::Connect,
            client: ClientId {
                shard: 0,
                key: 1,
                generation: 1,
            },
            user: Some("u".into()),
            channel: None,
            data: None,
            reason: None,
            time_ms: 0,
        }
    }

    #[test]
    fn an_event_is_charged_once_until_its_last_holder_lets_go() {
        let budget = MemoryBudget::new(u64::MAX);
        let account = Account::new(Some(Arc::clone(&budget)));
        let one = Held::new(event(), &account);
        let two = one.clone();
        assert_eq!(budget.bytes(MemKind::Events), event().weight() as u64);
        drop(one);
        assert_eq!(budget.bytes(MemKind::Events), event().weight() as u64, "still held");
        drop(two);
        assert_eq!(budget.bytes(MemKind::Events), 0);
    }

    #[test]
    fn abandoning_releases_what_is_alive_and_later_releases_are_not_taken_twice() {
        let budget = MemoryBudget::new(u64::MAX);
        // Another holder's bytes: a release taken twice would show below them.
        budget.add(MemKind::Events, 1000);
        let account = Account::new(Some(Arc::clone(&budget)));
        let left_behind = Held::new(event(), &account);
        account.abandon();
        assert_eq!(budget.bytes(MemKind::Events), 1000);
        account.abandon();
        let late = Held::new(event(), &account);
        drop(left_behind);
        drop(late);
        assert_eq!(budget.bytes(MemKind::Events), 1000);
        assert_eq!(account.held(), 0);
    }
}
