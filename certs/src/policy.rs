//! AWS IoT policy documents the rig needs: the thing's (least privilege) and the rig's
//! observer's, written by `certs init` as `policy.json` and `observer-policy.json`.
//!
//! The observer is a second identity (certificate + key) that watches the device's
//! publish topic and injects on its subscribe topic (`hil --target aws`). `certs init`
//! writes one (`observer.pem`, `observer.key.pem`) signed by the test CA; on AWS, create
//! a second certificate in the console (or register that one) and attach
//! [`observer_policy_document`] to it.

/// The policy variable AWS IoT substitutes with the connecting thing's name.
pub const THING_NAME_CLIENT: &str = "${iot:Connection.Thing.ThingName}";

/// An AWS IoT policy granting exactly what the thing does: connect as `client`, publish
/// to `pub_topic`, subscribe to and receive `sub_topic`. `client` may be a literal client
/// id or a policy variable such as [`THING_NAME_CLIENT`].
pub fn policy_document(client: &str, pub_topic: &str, sub_topic: &str) -> String {
    allow_policy(&[
        ("iot:Connect", format!("client/{client}")),
        ("iot:Publish", format!("topic/{pub_topic}")),
        ("iot:Subscribe", format!("topicfilter/{sub_topic}")),
        ("iot:Receive", format!("topic/{sub_topic}")),
    ])
}

/// The observer's MQTT client id unless told otherwise.
pub const DEFAULT_OBSERVER_CLIENT_ID: &str = "hil-observer";

/// An AWS IoT policy granting exactly what the observer does: connect as `client_id`
/// (or `client_id-` followed by anything, so a person can watch and send from two
/// terminals at once without taking over each other's session), subscribe to and receive
/// `watch_topic` (the device's publish topic), publish to `inject_topic` (the device's
/// subscribe topic). Nothing else: in particular it cannot publish to `watch_topic`, so
/// everything seen there comes from the devices.
pub fn observer_policy_document(client_id: &str, watch_topic: &str, inject_topic: &str) -> String {
    allow_policy(&[
        ("iot:Connect", format!("client/{client_id}")),
        ("iot:Connect", format!("client/{client_id}-*")),
        ("iot:Subscribe", format!("topicfilter/{watch_topic}")),
        ("iot:Receive", format!("topic/{}", topics_of(watch_topic))),
        ("iot:Publish", format!("topic/{}", topics_of(inject_topic))),
    ])
}

/// A `topic/` resource for every topic `filter` matches. MQTT's `+` and `#` are literal
/// characters in a policy (only a `topicfilter/` resource names a filter as written), so
/// a filter with them would grant no topic at all; the policy wildcard `*` stands in.
fn topics_of(filter: &str) -> String {
    filter.replace(['+', '#'], "*")
}

/// An AWS IoT policy document with one Allow statement per `(action, resource)`; the
/// resource is written after `arn:aws:iot:*:*:` (e.g. `topic/outTopic`).
fn allow_policy(grants: &[(&'static str, String)]) -> String {
    // Structs rather than `json!` so the keys keep AWS's conventional order.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Policy {
        version: &'static str,
        statement: Vec<Statement>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Statement {
        effect: &'static str,
        action: &'static str,
        resource: String,
    }
    let policy = Policy {
        version: "2012-10-17",
        statement: grants
            .iter()
            .map(|(action, resource)| Statement {
                effect: "Allow",
                action,
                resource: format!("arn:aws:iot:*:*:{resource}"),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&policy).expect("plain structs always serialise");
    text.push('\n');
    text
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
                ("iot:Connect".into(), arn("client/hil-observer-*")),
                ("iot:Subscribe".into(), arn("topicfilter/outTopic")),
                ("iot:Receive".into(), arn("topic/outTopic")),
                ("iot:Publish".into(), arn("topic/inTopic")),
            ]
        );
    }

    #[test]
    fn a_watched_filter_grants_the_topics_it_matches() {
        let doc = observer_policy_document("hil-observer", "fleet/+", "fleet/+/in");
        assert!(
            doc.contains("\"arn:aws:iot:*:*:topicfilter/fleet/+\""),
            "{doc}"
        );
        assert!(doc.contains("\"arn:aws:iot:*:*:topic/fleet/*\""), "{doc}");
        assert!(
            doc.contains("\"arn:aws:iot:*:*:topic/fleet/*/in\""),
            "{doc}"
        );
        let all = observer_policy_document("hil-observer", "site/#", "inTopic");
        assert!(all.contains("\"arn:aws:iot:*:*:topic/site/*\""), "{all}");
    }
}
