//! AWS IoT Core's rules for MQTT topic names (what the device publishes to) and topic
//! filters (what it subscribes to), checked when the image is made and when it is loaded,
//! so a topic AWS would refuse never reaches the broker (where a refused SUBSCRIBE only
//! shows up as a retry loop, and an unsupported reserved topic can end the connection).
//!
//! - UTF-8 (a `&str` already is), at most [`MAX_TOPIC`] bytes, no NUL (MQTT 3.1.1 and 5
//!   forbid U+0000 in topics);
//! - at most [`MAX_TOPIC_SLASHES`] `/`, not counting the 3 of a Basic Ingest prefix
//!   `$aws/rules/<rule>/`;
//! - a name has no `+` or `#`; in a filter `+` is a whole level and `#` the whole last one;
//! - topics starting with `$` are AWS IoT's: only its documented `$aws/` families can be
//!   used, in the direction they are documented for (`$aws/rules/` is publish-only,
//!   `$aws/events/` and `$aws/sitewise/` are subscribe-only).

use super::{MAX_TOPIC, MAX_TOPIC_SLASHES, Problem};

/// How the device uses a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicUse {
    /// A topic name the device publishes to.
    Publish,
    /// A topic filter the device subscribes to.
    Subscribe,
}

/// The `$aws/` families of AWS IoT Core's "Reserved topics" page, and whether a device
/// may publish (`.1`) or subscribe (`.2`) under each.
const RESERVED_FAMILIES: &[(&str, bool, bool)] = &[
    ("things", true, true),
    ("rules", true, false),
    ("events", false, true),
    ("sitewise", false, true),
    ("certificates", true, true),
    ("provisioning-templates", true, true),
    ("device_location", true, true),
    ("commands", true, true),
];

/// The Basic Ingest prefix: its first 3 slashes do not count against the limit.
const BASIC_INGEST: &str = "$aws/rules/";

/// Check `topic` against AWS IoT Core's rules for `usage`.
pub fn check_topic(topic: &str, usage: TopicUse) -> Result<(), Problem> {
    if topic.is_empty() {
        return Err(Problem::Empty);
    }
    if topic.len() > MAX_TOPIC {
        return Err(Problem::TooLong { max: MAX_TOPIC });
    }
    if topic.contains('\0') {
        return Err(Problem::NulCharacter);
    }
    if topic.starts_with('$') {
        reserved(topic, usage)?;
    }
    let slashes = topic.bytes().filter(|&b| b == b'/').count();
    let exempt = if topic.starts_with(BASIC_INGEST) {
        3
    } else {
        0
    };
    if slashes.saturating_sub(exempt) > MAX_TOPIC_SLASHES {
        return Err(Problem::TooManySlashes);
    }
    match usage {
        TopicUse::Publish if topic.contains(['+', '#']) => Err(Problem::Wildcard),
        TopicUse::Publish => Ok(()),
        TopicUse::Subscribe => wildcards_in_place(topic),
    }
}

fn reserved(topic: &str, usage: TopicUse) -> Result<(), Problem> {
    let family = topic
        .strip_prefix("$aws/")
        .and_then(|rest| rest.split('/').next())
        .ok_or(Problem::Reserved)?;
    let allowed = RESERVED_FAMILIES
        .iter()
        .find(|(name, _, _)| *name == family)
        .is_some_and(|&(_, publish, subscribe)| match usage {
            TopicUse::Publish => publish,
            TopicUse::Subscribe => subscribe,
        });
    // A family alone (`$aws/things`) names no topic of it.
    let has_topic = topic.len() > "$aws/".len() + family.len() + 1;
    if allowed && has_topic {
        Ok(())
    } else {
        Err(Problem::Reserved)
    }
}

fn wildcards_in_place(filter: &str) -> Result<(), Problem> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        let ok = match level {
            "+" => true,
            "#" => last,
            other => !other.contains(['+', '#']),
        };
        if !ok {
            return Err(Problem::MisplacedWildcard);
        }
    }
    Ok(())
}
