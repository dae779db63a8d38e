//! `Security_Device_Policies`: the policy document attached to the device's certificate,
//! judged as written. A grant of every action (`iot:*`, `*`) or a wildcard in a
//! resource's name (`topic/*`, `client/*`, `*`) fails: the device can then do more than
//! publish, subscribe and connect as itself. Policy variables (`${iot:ClientId}`,
//! `${iot:Connection.Thing.ThingName}`) are how a policy stays narrow and pass. A `*` for
//! the region or account in the ARN (`arn:aws:iot:*:*:`, as `certs init` writes it so one
//! file works in any account) passes with warnings: pin them before production.

use std::path::PathBuf;

use serde_json::Value;

use super::{Judgement, Verdict};

/// Where the policy document comes from, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The file, or what the rig serves.
    pub origin: String,
    pub json: String,
}

impl PolicySource {
    /// Read `path`.
    pub fn read(path: &PathBuf) -> std::io::Result<Self> {
        Ok(Self {
            origin: path.display().to_string(),
            json: std::fs::read_to_string(path)?,
        })
    }
}

/// A Device Advisor verdict on `source`.
pub fn judge(source: &PolicySource) -> Judgement {
    let doc: Value = match serde_json::from_str(&source.json) {
        Ok(doc) => doc,
        Err(e) => {
            return Judgement::new(
                Verdict::Fail,
                format!("{}: not a JSON policy document: {e}", source.origin),
            );
        }
    };
    let statements: Vec<&Value> = match &doc["Statement"] {
        Value::Array(list) => list.iter().collect(),
        Value::Object(_) => vec![&doc["Statement"]],
        _ => {
            return Judgement::new(Verdict::Fail, format!("{}: no Statement", source.origin));
        }
    };
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let mut grants = 0;
    for (i, statement) in statements.iter().enumerate() {
        if statement["Effect"] != "Allow" {
            continue;
        }
        for action in strings(&statement["Action"]) {
            if action == "*" || action.eq_ignore_ascii_case("iot:*") {
                failures.push(format!("Statement[{i}] allows every action ({action})"));
            }
        }
        for resource in strings(&statement["Resource"]) {
            grants += 1;
            match wildcard_in(resource) {
                Some(Wildcard::Name) => failures.push(format!(
                    "Statement[{i}] grants a wildcard resource: {resource}"
                )),
                Some(Wildcard::RegionOrAccount) => warnings.push(resource.to_string()),
                None => {}
            }
        }
    }
    if !failures.is_empty() {
        return Judgement::new(
            Verdict::Fail,
            format!("{}: {}", source.origin, failures.join("; ")),
        );
    }
    if !warnings.is_empty() {
        return Judgement::new(
            Verdict::PassWithWarnings,
            format!(
                "{}: {grants} grants, no wildcard action or resource name; {} with a wildcard region or account (e.g. {}): pin them for production",
                source.origin,
                warnings.len(),
                warnings[0]
            ),
        );
    }
    Judgement::new(
        Verdict::Pass,
        format!(
            "{}: {grants} grants, no wildcard action or resource",
            source.origin
        ),
    )
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wildcard {
    /// In the resource's name (`topic/*`), or the whole resource (`*`).
    Name,
    RegionOrAccount,
}

/// Where `resource` has a wildcard, policy variables (`${...}`) aside.
fn wildcard_in(resource: &str) -> Option<Wildcard> {
    let without_variables = strip_variables(resource);
    let parts: Vec<&str> = without_variables.splitn(6, ':').collect();
    let [arn, partition, service, region, account, name] = parts[..] else {
        // Not an ARN: `*` or a pattern over everything.
        return without_variables
            .contains(['*', '?'])
            .then_some(Wildcard::Name);
    };
    if [arn, partition, service, name]
        .iter()
        .any(|p| p.contains(['*', '?']))
    {
        return Some(Wildcard::Name);
    }
    [region, account]
        .iter()
        .any(|p| p.contains(['*', '?']))
        .then_some(Wildcard::RegionOrAccount)
}

/// `text` with every `${...}` policy variable removed.
fn strip_variables(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(json: &str) -> Judgement {
        judge(&PolicySource {
            origin: "policy.json".into(),
            json: json.into(),
        })
    }

    #[test]
    fn the_tutorials_iot_star_policy_fails() {
        let j = judged(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#,
        );
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.evidence.contains("allows every action (iot:*)"),
            "{}",
            j.evidence
        );
        assert!(
            j.evidence.contains("wildcard resource: *"),
            "{}",
            j.evidence
        );
    }

    #[test]
    fn certs_inits_policy_warns_about_its_region_and_account() {
        let json = certs::policy::policy_document("ESPthing", "outTopic", "inTopic");
        let j = judged(&json);
        assert_eq!(j.verdict, Verdict::PassWithWarnings, "{}", j.evidence);
        assert!(j.evidence.contains("pin them"), "{}", j.evidence);
        let pinned = json.replace("arn:aws:iot:*:*:", "arn:aws:iot:eu-west-1:123456789012:");
        assert_eq!(judged(&pinned).verdict, Verdict::Pass);
    }

    #[test]
    fn policy_variables_are_not_wildcards_but_topic_stars_are() {
        let j = judged(
            r#"{"Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:1:client/${iot:Connection.Thing.ThingName}"},
                {"Effect":"Allow","Action":["iot:Publish"],"Resource":["arn:aws:iot:eu-west-1:1:topic/out/*"]}]}"#,
        );
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.evidence.contains("Statement[1]"), "{}", j.evidence);
        assert!(!j.evidence.contains("Statement[0]"), "{}", j.evidence);
        assert_eq!(judged("not json").verdict, Verdict::Fail);
    }
}
