//! Hub-level unit tests: a hub (or two) driven through `Conns` by a fake.
