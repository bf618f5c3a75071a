//! Channel names and the patterns that select them, for permissions (a
//! token's `channels` claim) and per-pattern configuration.
//!
//! This module owns two rules: what a valid channel name is, and how a
//! pattern matches names. It never allocates per match, does no I/O, and
//! never panics on input.
//!
//! # Channel names
//!
//! 1 to [`MAX_CHANNEL_NAME_BYTES`] bytes from `[A-Za-z0-9_.:@/-]`. The set is
//! small on purpose: every name is safe unescaped in a URL path or query, in
//! a log line or metrics label (no spaces, quotes, control characters or
//! newlines), and as part of a Redis key. `*` is excluded because it is the
//! pattern wildcard, so a name can never be mistaken for a pattern.
//!
//! # Pattern syntax
//!
//! | pattern  | matches                                          |
//! |----------|--------------------------------------------------|
//! | `news`   | exactly `news`                                   |
//! | `chat:*` | every name starting with `chat:`, `chat:` itself too |
//! | `*`      | every name                                       |
//!
//! A pattern is a valid channel name, optionally followed by one `*`; a
//! single `*` alone is allowed. A `*` anywhere but at the end is refused.
//! Matching is byte-wise and case-sensitive. Patterns do not validate the
//! name they are given: check it with [`valid_channel_name`] first.
//!
//! When several patterns match (per-pattern configuration), [`best_match`]
//! picks the most specific: an exact name, else the longest prefix.

use std::fmt;
use std::str::FromStr;

/// The longest channel name accepted, in bytes.
pub(crate) const MAX_CHANNEL_NAME_BYTES: usize = 128;

/// The wildcard; only allowed as a pattern's last character.
const WILDCARD: char = '*';

/// A parsed channel pattern: an exact name or a prefix (`prefix*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelPattern {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Exact(String),
    /// The part before the `*`; empty for `*`, which matches every name.
    Prefix(String),
}

impl ChannelPattern {
    /// Parses `news`, `chat:*` or `*`; see the module doc for the syntax.
    /// The error names the pattern and what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let kind = match pattern.strip_suffix(WILDCARD) {
            Some("") => Kind::Prefix(String::new()),
            Some(prefix) => {
                check_part(pattern, prefix)?;
                Kind::Prefix(prefix.to_owned())
            }
            None => {
                check_part(pattern, pattern)?;
                Kind::Exact(pattern.to_owned())
            }
        };
        Ok(ChannelPattern { kind })
    }

    /// True if `channel` is selected by this pattern.
    pub fn matches(&self, channel: &str) -> bool {
        match &self.kind {
            Kind::Exact(name) => channel == name,
            Kind::Prefix(prefix) => channel.starts_with(prefix.as_str()),
        }
    }

    /// True for a pattern that selects every name (`*`).
    pub fn is_everything(&self) -> bool {
        matches!(&self.kind, Kind::Prefix(p) if p.is_empty())
    }

    /// How specific the pattern is, for choosing among several that match:
    /// an exact name beats any prefix, a longer prefix beats a shorter one.
    pub(crate) fn specificity(&self) -> usize {
        match &self.kind {
            // Prefixes are at most MAX_CHANNEL_NAME_BYTES long, so this
            // stays above every prefix's score.
            Kind::Exact(_) => MAX_CHANNEL_NAME_BYTES + 1,
            Kind::Prefix(prefix) => prefix.len(),
        }
    }
}

/// The value of the most specific pattern matching `channel` (see
/// [`ChannelPattern::specificity`]); on a tie, the first listed wins.
pub(crate) fn best_match<'a, T>(entries: &'a [(ChannelPattern, T)], channel: &str) -> Option<&'a T> {
    let mut best: Option<&(ChannelPattern, T)> = None;
    for entry in entries.iter().filter(|(p, _)| p.matches(channel)) {
        if best.is_none_or(|b| entry.0.specificity() > b.0.specificity()) {
            best = Some(entry);
        }
    }
    best.map(|(_, value)| value)
}

/// Checks a channel name: 1 to 128 bytes from `[A-Za-z0-9_.:@/-]` (see the
/// module doc for why). The error is a short reason fit for a client.
pub(crate) fn valid_channel_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("channel name is empty");
    }
    if name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err("channel name is longer than 128 bytes");
    }
    if !name.bytes().all(is_name_byte) {
        return Err("channel name has a character outside [A-Za-z0-9_.:@/-]");
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'/' | b'-')
}

/// Checks the name part of a pattern (all of it, or what precedes the `*`).
fn check_part(pattern: &str, part: &str) -> Result<(), String> {
    if part.contains(WILDCARD) {
        return Err(format!("channel pattern {pattern:?}: `*` is only allowed at the end"));
    }
    valid_channel_name(part).map_err(|why| format!("channel pattern {pattern:?}: {why}"))
}

impl fmt::Display for ChannelPattern {
    /// Writes the pattern back in the syntax [`ChannelPattern::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Exact(name) => f.write_str(name),
            Kind::Prefix(prefix) => write!(f, "{prefix}{WILDCARD}"),
        }
    }
}

impl FromStr for ChannelPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelPattern::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }

    #[test]
    fn exact_pattern_matches_only_its_name() {
        let p = pat("news");
        assert!(p.matches("news"));
        assert!(!p.matches("news2"));
        assert!(!p.matches("new"));
        assert!(!p.matches("NEWS"));
        assert!(!p.matches(""));
    }

    #[test]
    fn prefix_pattern_matches_the_prefix_and_longer_names() {
        let p = pat("chat:*");
        assert!(p.matches("chat:"));
        assert!(p.matches("chat:room1"));
        assert!(p.matches("chat:a:b/c"));
        assert!(!p.matches("chat"));
        assert!(!p.matches("chatx:room"));
        assert!(!p.matches("xchat:room"));
        assert!(!p.is_everything());
    }

    #[test]
    fn star_alone_matches_everything() {
        let p = pat("*");
        assert!(p.is_everything());
        assert!(p.matches("news"));
        assert!(p.matches("a"));
        assert!(p.matches(""));
    }

    #[test]
    fn misplaced_or_repeated_wildcards_are_refused() {
        for bad in ["**", "*news", "ch*at", "chat:**", "a*b*", "*:*"] {
            let err = ChannelPattern::parse(bad).unwrap_err();
            assert!(err.contains("only allowed at the end"), "{bad}: {err}");
        }
    }

    #[test]
    fn patterns_with_invalid_names_are_refused() {
        assert!(ChannelPattern::parse("").is_err());
        assert!(ChannelPattern::parse("has space").is_err());
        assert!(ChannelPattern::parse("quote\"*").is_err());
        assert!(ChannelPattern::parse("ünïcode").is_err());
        assert!(ChannelPattern::parse(&"a".repeat(129)).is_err());
        assert!(ChannelPattern::parse(&format!("{}*", "a".repeat(129))).is_err());
        assert!(ChannelPattern::parse(&"a".repeat(128)).is_ok());
        assert!(ChannelPattern::parse(&format!("{}*", "a".repeat(128))).is_ok());
    }

    #[test]
    fn error_names_the_pattern() {
        let err = ChannelPattern::parse("bad name").unwrap_err();
        assert!(err.contains("\"bad name\""), "{err}");
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["news", "chat:*", "*", "a/b@c.d-e_f:*"] {
            assert_eq!(pat(s).to_string(), s);
            assert_eq!(s.parse::<ChannelPattern>().unwrap(), pat(s));
        }
    }

    #[test]
    fn channel_names_use_a_small_charset() {
        assert_eq!(valid_channel_name("news"), Ok(()));
        assert_eq!(valid_channel_name("Chat:room_1/sub.x@host-2"), Ok(()));
        assert_eq!(valid_channel_name(&"z".repeat(128)), Ok(()));
        assert_eq!(valid_channel_name(""), Err("channel name is empty"));
        assert_eq!(
            valid_channel_name(&"z".repeat(129)),
            Err("channel name is longer than 128 bytes")
        );
        for bad in ["a b", "a*", "a\nb", "a%20", "a?b", "a#b", "a\"b", "é", "a\0"] {
            assert!(valid_channel_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn best_match_prefers_exact_then_longest_prefix() {
        let entries = vec![
            (pat("*"), 1),
            (pat("chat:*"), 2),
            (pat("chat:vip:*"), 3),
            (pat("chat:lobby"), 4),
        ];
        assert_eq!(best_match(&entries, "news"), Some(&1));
        assert_eq!(best_match(&entries, "chat:room"), Some(&2));
        assert_eq!(best_match(&entries, "chat:vip:1"), Some(&3));
        assert_eq!(best_match(&entries, "chat:lobby"), Some(&4));
        assert_eq!(best_match(&entries[1..], "news"), None);
    }

    #[test]
    fn best_match_tie_goes_to_the_first_listed() {
        let entries = vec![(pat("chat:*"), "first"), (pat("chat:*"), "second")];
        assert_eq!(best_match(&entries, "chat:x"), Some(&"first"));
    }
}
