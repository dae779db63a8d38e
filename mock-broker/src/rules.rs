//! AWS IoT Core's protocol limits, as documented in its service quotas and MQTT
//! conformance notes.

use std::time::Duration;

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// A client id may not start with this: AWS quotas, "Restricted client ID prefix": "$ is
/// reserved for AWS IoT generated client IDs".
pub const RESERVED_CLIENT_ID_PREFIX: char = '$';
/// Longest topic name or filter, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most forward slashes in a topic name or filter (8 levels).
pub const MAX_TOPIC_SLASHES: usize = 7;
/// Largest publish payload.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Most QoS 1 deliveries AWS leaves unacknowledged per client; further ones wait.
pub const MAX_OUTBOUND_IN_FLIGHT: usize = 100;
/// Most QoS 1 publishes a client may leave unacknowledged by the broker (AWS quota
/// "Maximum inflight unacknowledged messages"; announced as the CONNACK's Receive Maximum).
pub const MAX_INBOUND_IN_FLIGHT: u16 = 100;
/// Topic aliases a client may set up per connection (AWS quota "Topic aliases per
/// connection"; announced as the CONNACK's Topic Alias Maximum).
pub const TOPIC_ALIAS_MAXIMUM: u16 = 8;
/// Inbound PUBLISH packets per second per connection (AWS quota).
pub const MAX_PUBLISHES_PER_SECOND: u32 = 100;
/// Inbound bytes per second per connection (AWS quota "Throughput per connection").
pub const MAX_INBOUND_BYTES_PER_SECOND: usize = 512 * 1024;
/// Most topic filters in one SUBSCRIBE (AWS quota "Maximum number of subscriptions per
/// subscribe call"; AWS does not say what happens beyond it: the mock refuses the extra
/// filters in the SUBACK, as it does beyond the 50 per connection).
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 8;
/// Most subscriptions one connection may hold (AWS quota "Subscriptions per
/// connection").
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 50;
/// Keep-alive bounds; 0 (no keep-alive) is treated as the maximum.
pub const MIN_KEEP_ALIVE_SECS: u16 = 30;
pub const MAX_KEEP_ALIVE_SECS: u16 = 1200;
/// The largest packet the broker reads, and the Maximum Packet Size its CONNACK
/// announces: what AWS IoT Core's CONNACK announces (149504 = 128 KiB of payload plus
/// 18 KiB for the topic, packet id and properties; seen in CONNACKs from AWS IoT Core
/// printed by the AWS IoT Device SDK for Python, see FIDELITY.md). Larger packets are
/// refused unread.
pub const MAX_INBOUND_PACKET_BYTES: usize = 149_504;
// A maximal payload with a maximal topic and room for properties fits in it.
const _: () = assert!(MAX_INBOUND_PACKET_BYTES > MAX_PAYLOAD_BYTES + MAX_TOPIC_BYTES + 8 * 1024);

/// The Message Expiry Interval AWS applies ("MQTT 5 supported features", message expiry):
/// "the minimum MEI is 1. If the interval is set to 0 from the client side, it will be
/// adjusted to 1. The maximum message expiry interval is 604800 (7 days). Any values
/// higher than this will be adjusted to the maximum value."
pub fn effective_message_expiry(requested_secs: u32) -> Duration {
    Duration::from_secs(requested_secs.clamp(1, MAX_MESSAGE_EXPIRY_SECS).into())
}

/// The longest Message Expiry Interval AWS keeps (7 days).
pub const MAX_MESSAGE_EXPIRY_SECS: u32 = 604_800;

/// The keep-alive AWS applies for a requested one: clamped to `min_secs..=1200` s (AWS's
/// `min_secs` is [`MIN_KEEP_ALIVE_SECS`]; tests lower it), 0 is 1200.
pub fn effective_keep_alive(requested_secs: u16, min_secs: u16) -> u16 {
    if requested_secs == 0 {
        MAX_KEEP_ALIVE_SECS
    } else {
        requested_secs.clamp(min_secs.min(MAX_KEEP_ALIVE_SECS), MAX_KEEP_ALIVE_SECS)
    }
}

/// How long the broker waits for any packet before dropping a client: 1.5 x keep-alive.
pub fn keep_alive_deadline(keep_alive_secs: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive_secs) * 1500)
}

/// Why a topic name or filter breaks AWS's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicProblem {
    #[error("empty")]
    Empty,
    #[error("{0} bytes, more than {MAX_TOPIC_BYTES}")]
    TooLong(usize),
    #[error("{0} slashes, more than {MAX_TOPIC_SLASHES}")]
    TooDeep(usize),
    #[error("wildcards are not allowed in a topic name")]
    WildcardInName,
    #[error("misplaced wildcard")]
    BadWildcard,
    #[error("reserved topic ($...) that clients may not publish to")]
    Reserved,
}

fn check_size(topic: &str) -> Result<(), TopicProblem> {
    if topic.is_empty() {
        return Err(TopicProblem::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicProblem::TooLong(topic.len()));
    }
    let slashes = topic.matches('/').count();
    if slashes > MAX_TOPIC_SLASHES {
        return Err(TopicProblem::TooDeep(slashes));
    }
    Ok(())
}

/// A topic a client publishes to.
pub fn check_topic_name(topic: &str) -> Result<(), TopicProblem> {
    check_size(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicProblem::WildcardInName);
    }
    Ok(())
}

/// The reserved (`$`) topics a client may publish to: shadows, jobs, Device Defender
/// and tunnels under `$aws/things/`, Basic Ingest under `$aws/rules/`, fleet
/// provisioning. Everything else starting with `$` (lifecycle events under
/// `$aws/events/` in particular) is AWS's to publish.
const CLIENT_PUBLISHABLE_RESERVED: &[&str] = &[
    "$aws/things/",
    "$aws/rules/",
    "$aws/certificates/create",
    "$aws/provisioning-templates/",
];

/// A topic a client publishes to, or names as its will: [`check_topic_name`], and not a
/// reserved topic AWS keeps for itself.
pub fn check_publish_topic(topic: &str) -> Result<(), TopicProblem> {
    check_topic_name(topic)?;
    if topic.starts_with('$')
        && !CLIENT_PUBLISHABLE_RESERVED
            .iter()
            .any(|prefix| topic.starts_with(prefix))
    {
        return Err(TopicProblem::Reserved);
    }
    Ok(())
}

/// A topic filter a client subscribes to.
pub fn check_topic_filter(filter: &str) -> Result<(), TopicProblem> {
    check_size(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        match *level {
            "+" => {}
            "#" if last => {}
            other if other.contains(['+', '#']) => return Err(TopicProblem::BadWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// A shared subscription's share name and topic filter, if `filter` is one
/// (`$share/{ShareName}/{TopicFilter}`).
pub fn shared_filter(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

/// A shared subscription's filter: a share name of one level without wildcards, and a
/// valid topic filter after it (AWS's topic limits apply to that filter, not counting
/// the `$share/{ShareName}/` prefix).
pub fn check_shared_filter(filter: &str) -> Result<(), TopicProblem> {
    let Some((name, inner)) = shared_filter(filter) else {
        return Err(TopicProblem::BadWildcard);
    };
    if name.is_empty() || name.contains(['+', '#']) {
        return Err(TopicProblem::BadWildcard);
    }
    check_topic_filter(inner)
}

/// Topic matching as AWS documents it ("MQTT topics": a subscription to `sensor/#`
/// receives `sensor/`, `sensor/temperature`, ... but not `sensor`): `+` one level, `#`
/// one or more levels, never the parent level alone (MQTT's own rule, which lets
/// `sensor/#` match `sensor`, is not AWS's); wildcards at the first level never match
/// `$` topics.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return topic_levels.next().is_some(),
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_clamped_as_aws_does() {
        let aws = MIN_KEEP_ALIVE_SECS;
        assert_eq!(effective_keep_alive(0, aws), 1200);
        assert_eq!(effective_keep_alive(1, aws), 30);
        assert_eq!(effective_keep_alive(60, aws), 60);
        assert_eq!(effective_keep_alive(5000, aws), 1200);
        assert_eq!(effective_keep_alive(1, 1), 1);
        assert_eq!(keep_alive_deadline(30), Duration::from_secs(45));
    }

    #[test]
    fn topic_limits() {
        assert!(check_topic_name("a/b/c/d/e/f/g/h").is_ok());
        assert_eq!(
            check_topic_name("a/b/c/d/e/f/g/h/i"),
            Err(TopicProblem::TooDeep(8))
        );
        assert!(check_topic_name(&"x".repeat(256)).is_ok());
        assert_eq!(
            check_topic_name(&"x".repeat(257)),
            Err(TopicProblem::TooLong(257))
        );
        assert_eq!(check_topic_name("a/+"), Err(TopicProblem::WildcardInName));
        assert_eq!(check_topic_name(""), Err(TopicProblem::Empty));
        assert!(check_topic_filter("a/+/c/#").is_ok());
        assert_eq!(check_topic_filter("a/#/c"), Err(TopicProblem::BadWildcard));
        assert_eq!(check_topic_filter("a/b+"), Err(TopicProblem::BadWildcard));
        assert_eq!(
            check_topic_filter("1/2/3/4/5/6/7/8/#"),
            Err(TopicProblem::TooDeep(8))
        );
    }

    #[test]
    fn clients_may_not_publish_to_reserved_topics_aws_keeps() {
        assert!(check_publish_topic("$aws/things/ESPthing/shadow/update").is_ok());
        assert!(check_publish_topic("$aws/rules/my_rule/x").is_ok());
        assert_eq!(
            check_publish_topic("$aws/events/presence/connected/ESPthing"),
            Err(TopicProblem::Reserved)
        );
        assert_eq!(check_publish_topic("$SYS/x"), Err(TopicProblem::Reserved));
        assert_eq!(
            check_publish_topic("will/#/x"),
            Err(TopicProblem::WildcardInName)
        );
        assert_eq!(check_publish_topic(""), Err(TopicProblem::Empty));
    }

    #[test]
    fn filter_matching() {
        assert!(filter_matches("inTopic", "inTopic"));
        assert!(!filter_matches("inTopic", "inTopic/x"));
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(!filter_matches("a/+/c", "a/b/d"));
        assert!(!filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("#", "a"));
        assert!(filter_matches("#", "anything/at/all"));
        assert!(!filter_matches("#", "$aws/events/presence/connected/x"));
        assert!(filter_matches(
            "$aws/events/presence/+/x",
            "$aws/events/presence/connected/x"
        ));
        assert!(!filter_matches("a/+", "a"));
    }
}
