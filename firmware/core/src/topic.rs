//! MQTT topic filter matching (MQTT 5 section 4.7), as the broker applies it, so the
//! device can tell a message it subscribed to from one it did not.

/// Whether the topic name `topic` matches the subscription `filter`.
///
/// `+` matches exactly one level and `#` (last) the parent level and any below it; a
/// filter starting with a wildcard does not match a topic starting with `$` (4.7.2). The
/// filter is taken as valid (the config's validation guarantees it).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
