//! The rig's observer on AWS IoT: a second identity (certificate + key) that watches the
//! device's publish topic and injects on its subscribe topic, and the policy it needs.
//!
//! `certs init` already writes an observer identity (`observer.pem`, `observer.key.pem`)
//! signed by the test CA; on AWS, create a second certificate in the console (or register
//! that one) and attach [`observer_policy_document`] to it.

/// The observer's MQTT client id unless told otherwise.
pub const DEFAULT_OBSERVER_CLIENT_ID: &str = "hil-observer";

/// An AWS IoT policy granting exactly what the observer does: connect as `client_id`,
/// subscribe to and receive `watch_topic` (the device's publish topic), publish to
/// `inject_topic` (the device's subscribe topic). Nothing else: in particular it cannot
/// publish to `watch_topic`, so everything seen there comes from the devices.
pub fn observer_policy_document(client_id: &str, watch_topic: &str, inject_topic: &str) -> String {
    crate::pki::allow_policy(&[
        ("iot:Connect", format!("client/{client_id}")),
        ("iot:Subscribe", format!("topicfilter/{watch_topic}")),
        ("iot:Receive", format!("topic/{watch_topic}")),
        ("iot:Publish", format!("topic/{inject_topic}")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observer_may_watch_and_inject_but_not_publish_where_it_watches() {
        let doc: serde_json::Value = serde_json::from_str(&observer_policy_document(
            "hil-observer",
            "outTopic",
            "inTopic",
        ))
        .unwrap();
        let grants: Vec<(String, String)> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["Effect"], "Allow");
                (
                    s["Action"].as_str().unwrap().to_string(),
                    s["Resource"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let arn = |rest: &str| format!("arn:aws:iot:*:*:{rest}");
        assert_eq!(
            grants,
            [
                ("iot:Connect".into(), arn("client/hil-observer")),
                ("iot:Subscribe".into(), arn("topicfilter/outTopic")),
                ("iot:Receive".into(), arn("topic/outTopic")),
                ("iot:Publish".into(), arn("topic/inTopic")),
            ]
        );
    }
}
