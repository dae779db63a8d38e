//! AWS IoT policy documents: parsing and the allow/deny decision.
//!
//! A policy is a JSON document with a `Version` and a list of `Statement`s, each with an
//! `Effect` (`Allow` or `Deny`), an `Action` and a `Resource` (a string or a list of
//! strings). The broker asks four questions: may this client connect, publish to a topic,
//! subscribe to a topic filter, receive from a topic. AWS's rules apply:
//!
//! - an explicit `Deny` that matches wins over any `Allow`;
//! - nothing matches: denied (default deny);
//! - actions and resources match with `*` (any run of characters, `/` included) and `?`
//!   (exactly one character); actions case-insensitively, resources case-sensitively;
//! - `${iot:ClientId}` and `${iot:Connection.Thing.ThingName}` are replaced by the
//!   connection's values before matching, and the replacement is literal (a client id
//!   containing `*` does not become a wildcard). A statement whose variable has no value
//!   for this connection (no thing name) does not match.
//!
//! Resources are ARNs: `arn:aws:iot:REGION:ACCOUNT:client/ID`, `topic/NAME` (publish,
//! receive), `topicfilter/FILTER` (subscribe; MQTT's `+` and `#` are plain characters
//! there). Policy features the broker does not model (`NotAction`, `NotResource`,
//! `Condition`, other policy variables) are refused when the document is read, naming the
//! statement, rather than silently ignored.

use std::fmt;

use serde_json::Value;

/// The policy versions AWS IoT accepts.
const SUPPORTED_VERSION: &str = "2012-10-17";

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Connect,
    Publish,
    Subscribe,
    Receive,
}

impl Action {
    /// The IAM-style action name, e.g. `iot:Publish`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Connect => "iot:Connect",
            Action::Publish => "iot:Publish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
        }
    }

    /// The ARN resource kind this action is checked against.
    fn resource_kind(self) -> &'static str {
        match self {
            Action::Connect => "client",
            Action::Publish | Action::Receive => "topic",
            Action::Subscribe => "topicfilter",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The AWS account and region the broker pretends to be, used to build resource ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountScope {
    pub region: String,
    pub account_id: String,
}

impl Default for AccountScope {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
        }
    }
}

impl AccountScope {
    /// `arn:aws:iot:REGION:ACCOUNT:KIND/NAME` for `action` on `name` (a client id, topic
    /// or topic filter).
    pub fn arn(&self, action: Action, name: &str) -> String {
        format!(
            "arn:aws:iot:{}:{}:{}/{}",
            self.region,
            self.account_id,
            action.resource_kind(),
            name
        )
    }
}

/// Who is asking: the values the policy variables stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    /// `${iot:ClientId}`: the MQTT client id.
    pub client_id: &'a str,
    /// `${iot:Connection.Thing.ThingName}`: the client certificate's CN. `None` when the
    /// connection has no thing attached.
    pub thing_name: Option<&'a str>,
}

/// The outcome of a policy check, with the reason for logs and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Statement `index` (0-based) allowed it and no statement denied it.
    Allowed { statement: usize },
    /// Statement `index` denied it explicitly.
    ExplicitlyDenied { statement: usize },
    /// No statement allowed it.
    NotAllowed,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed { statement } => write!(f, "allowed by Statement[{statement}]"),
            Decision::ExplicitlyDenied { statement } => {
                write!(f, "denied by Statement[{statement}]")
            }
            Decision::NotAllowed => f.write_str("no statement allows it (default deny)"),
        }
    }
}

/// A malformed or unsupported policy document: the policy author's fault. `at` names the
/// place, e.g. `Statement[2].Resource[0]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid JSON: {0}")]
    Json(String),
    #[error("policy: {at}: {problem}")]
    Invalid { at: String, problem: String },
}

impl PolicyError {
    fn invalid(at: impl Into<String>, problem: impl Into<String>) -> Self {
        PolicyError::Invalid {
            at: at.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// One piece of a resource pattern after parsing: literal text, a wildcard, or a policy
/// variable to substitute.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(char),
    AnyRun,
    AnyOne,
    ClientId,
    ThingName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    /// Lower-cased action patterns.
    actions: Vec<String>,
    resources: Vec<Vec<Piece>>,
}

/// A parsed AWS IoT policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

impl Policy {
    /// Read a policy document, refusing anything malformed or unsupported with an error
    /// naming the statement and field.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        let doc = doc
            .as_object()
            .ok_or_else(|| PolicyError::invalid("document", "must be a JSON object"))?;
        for key in doc.keys() {
            if key != "Version" && key != "Statement" && key != "Id" {
                // An empty or odd key must still be visible in the message.
                let at = if key.is_empty() { "\"\"" } else { key.as_str() };
                return Err(PolicyError::invalid(at, "unknown top-level field"));
            }
        }
        match doc.get("Version") {
            Some(Value::String(v)) if v == SUPPORTED_VERSION => {}
            Some(other) => {
                return Err(PolicyError::invalid(
                    "Version",
                    format!("must be \"{SUPPORTED_VERSION}\", found {other}"),
                ));
            }
            None => return Err(PolicyError::invalid("Version", "missing")),
        }
        // AWS accepts a single statement object as well as a list.
        let statements = match doc.get("Statement") {
            Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
            Some(single @ Value::Object(_)) => vec![single],
            Some(_) => {
                return Err(PolicyError::invalid(
                    "Statement",
                    "must be an object or a list of objects",
                ));
            }
            None => return Err(PolicyError::invalid("Statement", "missing")),
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| parse_statement(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { statements })
    }

    /// A policy that allows everything: for tests and bench setups that do not care.
    pub fn allow_all() -> Self {
        Self {
            statements: vec![Statement {
                effect: Effect::Allow,
                actions: vec!["iot:*".into()],
                resources: vec![vec![Piece::AnyRun]],
            }],
        }
    }

    /// Decide whether `principal` may do `action` on the resource ARN `arn`.
    pub fn decide(&self, action: Action, arn: &str, principal: &Principal<'_>) -> Decision {
        let action_name = action.name().to_ascii_lowercase();
        let mut allowed = None;
        for (index, statement) in self.statements.iter().enumerate() {
            let action_matches = statement
                .actions
                .iter()
                .any(|pattern| glob_match_str(pattern, &action_name));
            if !action_matches {
                continue;
            }
            let resource_matches = statement
                .resources
                .iter()
                .any(|pattern| resource_matches(pattern, arn, principal));
            if !resource_matches {
                continue;
            }
            match statement.effect {
                Effect::Deny => return Decision::ExplicitlyDenied { statement: index },
                Effect::Allow => {
                    allowed.get_or_insert(index);
                }
            }
        }
        match allowed {
            Some(statement) => Decision::Allowed { statement },
            None => Decision::NotAllowed,
        }
    }

    /// [`Policy::decide`] with the ARN built from `scope`, `action` and `name` (the client
    /// id for connect, the topic for publish/receive, the filter for subscribe).
    pub fn check(
        &self,
        scope: &AccountScope,
        action: Action,
        name: &str,
        principal: &Principal<'_>,
    ) -> Decision {
        self.decide(action, &scope.arn(action, name), principal)
    }
}

fn parse_statement(index: usize, value: &Value) -> Result<Statement, PolicyError> {
    let at = |field: &str| format!("Statement[{index}].{field}");
    let object = value
        .as_object()
        .ok_or_else(|| PolicyError::invalid(format!("Statement[{index}]"), "must be an object"))?;
    for key in object.keys() {
        match key.as_str() {
            "Effect" | "Action" | "Resource" | "Sid" => {}
            "NotAction" | "NotResource" | "Condition" | "Principal" | "NotPrincipal" => {
                return Err(PolicyError::invalid(
                    at(key),
                    "not supported by the mock broker",
                ));
            }
            _ => return Err(PolicyError::invalid(at(key), "unknown field")),
        }
    }
    let effect = match object.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(other) => {
            return Err(PolicyError::invalid(
                at("Effect"),
                format!("must be \"Allow\" or \"Deny\", found {other}"),
            ));
        }
        None => return Err(PolicyError::invalid(at("Effect"), "missing")),
    };
    let actions = string_or_list(object.get("Action"), &at("Action"))?
        .into_iter()
        .enumerate()
        .map(|(i, action)| {
            let lower = action.to_ascii_lowercase();
            if !lower.starts_with("iot:") && lower != "*" {
                return Err(PolicyError::invalid(
                    format!("{}[{i}]", at("Action")),
                    format!("{action:?} is not an iot: action"),
                ));
            }
            Ok(lower)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let resources = string_or_list(object.get("Resource"), &at("Resource"))?
        .into_iter()
        .enumerate()
        .map(|(i, resource)| {
            let at = format!("{}[{i}]", at("Resource"));
            if resource != "*" && !resource.starts_with("arn:") {
                return Err(PolicyError::invalid(
                    at,
                    format!("{resource:?} is neither \"*\" nor an ARN"),
                ));
            }
            parse_pattern(&resource).map_err(|problem| PolicyError::invalid(at, problem))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Statement {
        effect,
        actions,
        resources,
    })
}

fn string_or_list(value: Option<&Value>, at: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| PolicyError::invalid(format!("{at}[{i}]"), "must be a string"))
            })
            .collect(),
        Some(Value::Array(_)) => Err(PolicyError::invalid(at, "must not be an empty list")),
        Some(_) => Err(PolicyError::invalid(
            at,
            "must be a string or a list of strings",
        )),
        None => Err(PolicyError::invalid(at, "missing")),
    }
}

fn parse_pattern(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated policy variable in {text:?}"))?;
            pieces.push(match &after[..end] {
                "iot:ClientId" => Piece::ClientId,
                "iot:Connection.Thing.ThingName" => Piece::ThingName,
                other => {
                    return Err(format!(
                        "policy variable ${{{other}}} is not supported (only ${{iot:ClientId}} \
                         and ${{iot:Connection.Thing.ThingName}})"
                    ));
                }
            });
            rest = &after[end + 1..];
            continue;
        }
        pieces.push(match c {
            '*' => Piece::AnyRun,
            '?' => Piece::AnyOne,
            c => Piece::Literal(c),
        });
        rest = &rest[c.len_utf8()..];
    }
    Ok(pieces)
}

/// A pattern element after substitution: variables have become literal characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    AnyRun,
    AnyOne,
}

fn resource_matches(pattern: &[Piece], arn: &str, principal: &Principal<'_>) -> bool {
    let mut tokens = Vec::with_capacity(pattern.len() + 32);
    for piece in pattern {
        match piece {
            Piece::Literal(c) => tokens.push(Token::Char(*c)),
            Piece::AnyRun => tokens.push(Token::AnyRun),
            Piece::AnyOne => tokens.push(Token::AnyOne),
            Piece::ClientId => tokens.extend(principal.client_id.chars().map(Token::Char)),
            Piece::ThingName => match principal.thing_name {
                Some(name) => tokens.extend(name.chars().map(Token::Char)),
                None => return false,
            },
        }
    }
    let subject: Vec<char> = arn.chars().collect();
    glob_match(&tokens, &subject)
}

fn glob_match_str(pattern: &str, subject: &str) -> bool {
    let tokens: Vec<Token> = pattern
        .chars()
        .map(|c| match c {
            '*' => Token::AnyRun,
            '?' => Token::AnyOne,
            c => Token::Char(c),
        })
        .collect();
    let subject: Vec<char> = subject.chars().collect();
    glob_match(&tokens, &subject)
}

/// Wildcard matching with backtracking to the last `*` only: linear in practice, no
/// exponential blow-up on patterns with many stars.
fn glob_match(pattern: &[Token], subject: &[char]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while s < subject.len() {
        match pattern.get(p) {
            Some(Token::AnyRun) => {
                last_star = Some((p, s));
                p += 1;
            }
            Some(Token::AnyOne) => {
                p += 1;
                s += 1;
            }
            Some(Token::Char(c)) if *c == subject[s] => {
                p += 1;
                s += 1;
            }
            _ => match last_star {
                Some((star_p, star_s)) => {
                    p = star_p + 1;
                    s = star_s + 1;
                    last_star = Some((star_p, star_s + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == Token::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THING: Principal<'static> = Principal {
        client_id: "ESPthing",
        thing_name: Some("ESPthing"),
    };

    fn scope() -> AccountScope {
        AccountScope::default()
    }

    fn allows(policy: &Policy, action: Action, name: &str, who: &Principal<'_>) -> bool {
        policy.check(&scope(), action, name, who).is_allowed()
    }

    /// The least-privilege policy `certs init` writes, generated by the certs crate.
    fn certs_init_policy() -> Policy {
        let text = certs::policy::policy_document(
            certs::policy::THING_NAME_CLIENT,
            firmware_core::config::DEFAULT_PUB_TOPIC,
            firmware_core::config::DEFAULT_SUB_TOPIC,
        );
        Policy::from_json(&text).unwrap()
    }

    #[test]
    fn certs_init_policy_grants_exactly_what_the_thing_does() {
        let policy = certs_init_policy();
        assert!(allows(&policy, Action::Connect, "ESPthing", &THING));
        assert!(allows(&policy, Action::Publish, "outTopic", &THING));
        assert!(allows(&policy, Action::Subscribe, "inTopic", &THING));
        assert!(allows(&policy, Action::Receive, "inTopic", &THING));

        assert!(!allows(&policy, Action::Publish, "inTopic", &THING));
        assert!(!allows(&policy, Action::Subscribe, "outTopic", &THING));
        assert!(!allows(&policy, Action::Subscribe, "#", &THING));
        assert!(!allows(&policy, Action::Receive, "outTopic", &THING));
        assert!(!allows(&policy, Action::Publish, "outTopic/extra", &THING));
    }

    #[test]
    fn certs_init_policy_ties_the_client_id_to_the_certificate() {
        let policy = certs_init_policy();
        let impostor = Principal {
            client_id: "someone-else",
            thing_name: Some("ESPthing"),
        };
        assert!(!allows(&policy, Action::Connect, "someone-else", &impostor));
        let no_thing = Principal {
            client_id: "ESPthing",
            thing_name: None,
        };
        assert!(!allows(&policy, Action::Connect, "ESPthing", &no_thing));
    }

    #[test]
    fn generated_dev_policy_file_parses_when_present() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../certs/dev/policy.json");
        // Only present after `make certs`; the generated text is covered above.
        if let Ok(text) = std::fs::read_to_string(path) {
            let policy = Policy::from_json(&text).unwrap();
            assert!(allows(&policy, Action::Publish, "outTopic", &THING));
        }
    }

    #[test]
    fn explicit_deny_wins_over_allow_in_any_order() {
        let allow = r#"{"Effect":"Allow","Action":"iot:*","Resource":"*"}"#;
        let deny = r#"{"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/secret/*"}"#;
        for (statements, deny_index) in [([allow, deny], 1), ([deny, allow], 0)] {
            let text = format!(
                r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
                statements.join(",")
            );
            let policy = Policy::from_json(&text).unwrap();
            assert_eq!(
                policy.check(&scope(), Action::Publish, "secret/x", &THING),
                Decision::ExplicitlyDenied {
                    statement: deny_index
                }
            );
            assert_eq!(
                policy.check(&scope(), Action::Publish, "public/x", &THING),
                Decision::Allowed {
                    statement: 1 - deny_index
                }
            );
            // The deny names only publish.
            assert!(allows(&policy, Action::Receive, "secret/x", &THING));
        }
    }

    #[test]
    fn default_deny_when_nothing_matches() {
        let policy = Policy::from_json(
            r#"{"Version":"2012-10-17","Statement":
                {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/a"}}"#,
        )
        .unwrap();
        let a = Principal {
            client_id: "a",
            thing_name: None,
        };
        assert!(allows(&policy, Action::Connect, "a", &a));
        assert_eq!(
            policy.check(&scope(), Action::Publish, "t", &a),
            Decision::NotAllowed
        );
        // Another account or region is another resource.
        let other = AccountScope {
            region: "eu-west-1".into(),
            ..scope()
        };
        assert!(!policy.check(&other, Action::Connect, "a", &a).is_allowed());
    }

    #[test]
    fn actions_and_resources_may_be_lists_and_actions_ignore_case() {
        let policy = Policy::from_json(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
                "Action":["IOT:publish","iot:Receive"],
                "Resource":["arn:aws:iot:*:*:topic/a","arn:aws:iot:*:*:topic/b"]}]}"#,
        )
        .unwrap();
        for topic in ["a", "b"] {
            assert!(allows(&policy, Action::Publish, topic, &THING));
            assert!(allows(&policy, Action::Receive, topic, &THING));
            assert!(!allows(&policy, Action::Subscribe, topic, &THING));
        }
        assert!(!allows(&policy, Action::Publish, "c", &THING));
    }

    #[test]
    fn action_wildcards() {
        let policy = Policy::from_json(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:*:*:*"}]}"#,
        )
        .unwrap();
        for action in [
            Action::Connect,
            Action::Publish,
            Action::Subscribe,
            Action::Receive,
        ] {
            assert!(allows(&policy, action, "x", &THING), "{action}");
        }
    }

    #[test]
    fn resource_wildcards_star_and_question_mark() {
        let policy = Policy::from_json(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/sensors/*/temp"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/room?"}
            ]}"#,
        )
        .unwrap();
        assert!(allows(&policy, Action::Publish, "sensors/1/temp", &THING));
        // `*` spans slashes in ARNs, unlike MQTT's `+`.
        assert!(allows(&policy, Action::Publish, "sensors/a/b/temp", &THING));
        assert!(!allows(
            &policy,
            Action::Publish,
            "sensors/1/humidity",
            &THING
        ));
        assert!(allows(&policy, Action::Publish, "room1", &THING));
        assert!(!allows(&policy, Action::Publish, "room", &THING));
        assert!(!allows(&policy, Action::Publish, "room12", &THING));
    }

    #[test]
    fn topic_filters_are_matched_literally_under_topicfilter() {
        let policy = Policy::from_json(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/dev/+/cmd"}
            ]}"#,
        )
        .unwrap();
        assert!(allows(&policy, Action::Subscribe, "dev/+/cmd", &THING));
        assert!(!allows(&policy, Action::Subscribe, "dev/#", &THING));
        assert!(!allows(&policy, Action::Subscribe, "dev/x/cmd", &THING));
        // A topic resource never grants a subscription, nor the reverse.
        assert!(!allows(&policy, Action::Publish, "dev/+/cmd", &THING));
    }

    #[test]
    fn client_id_variable_is_substituted_literally() {
        let policy = Policy::from_json(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:ClientId}"},
                {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/devices/${iot:ClientId}/*"}
            ]}"#,
        )
        .unwrap();
        let me = Principal {
            client_id: "dev-7",
            thing_name: None,
        };
        assert!(allows(&policy, Action::Publish, "devices/dev-7/up", &me));
        assert!(!allows(&policy, Action::Publish, "devices/dev-8/up", &me));
        // A client id with wildcard characters does not widen the grant.
        let sneaky = Principal {
            client_id: "*",
            thing_name: None,
        };
        assert!(!allows(
            &policy,
            Action::Publish,
            "devices/dev-8/up",
            &sneaky
        ));
        assert!(allows(&policy, Action::Publish, "devices/*/up", &sneaky));
    }

    #[test]
    fn malformed_policies_name_the_statement_and_field() {
        let cases = [
            ("[]", "document"),
            (r#"{"Statement":[]}"#, "Version"),
            (r#"{"Version":"2008-10-17","Statement":[]}"#, "Version"),
            (r#"{"Version":"2012-10-17"}"#, "Statement"),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"allow","Action":"iot:*","Resource":"*"}]}"#,
                "Statement[0].Effect",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"},{"Effect":"Allow","Resource":"*"}]}"#,
                "Statement[1].Action",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iot:Connect",7],"Resource":"*"}]}"#,
                "Statement[0].Action[1]",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
                "Statement[0].Action[0]",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":[]}]}"#,
                "Statement[0].Resource",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"topic/x"}]}"#,
                "Statement[0].Resource[0]",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:*:*:client/${iot:Certificate.Subject.CommonName}"}]}"#,
                "Statement[0].Resource[0]",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:*:*:client/${iot:ClientId"}]}"#,
                "Statement[0].Resource[0]",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"iot:Connect","Resource":"*"}]}"#,
                "Statement[0].NotAction",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{}}]}"#,
                "Statement[0].Condition",
            ),
        ];
        for (text, at) in cases {
            match Policy::from_json(text) {
                Err(PolicyError::Invalid { at: got, .. }) => assert_eq!(got, at, "{text}"),
                other => panic!("{text}: expected an error at {at}, got {other:?}"),
            }
        }
        // Found by the broker_policy fuzz target: an empty key named nothing.
        match Policy::from_json(r#"{"":1,"Version":"2012-10-17","Statement":[]}"#) {
            Err(PolicyError::Invalid { at, problem }) => {
                assert_eq!(
                    (at.as_str(), problem.as_str()),
                    ("\"\"", "unknown top-level field")
                )
            }
            other => panic!("expected an unknown-field error, got {other:?}"),
        }
        assert!(matches!(
            Policy::from_json("{not json"),
            Err(PolicyError::Json(_))
        ));
        let message = Policy::from_json(cases[4].0).unwrap_err().to_string();
        assert!(message.contains("Statement[0].Effect"), "{message}");
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = format!("arn:aws:iot:*:*:topic/{}b", "*a".repeat(30));
        let text = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Publish","Resource":"{pattern}"}}]}}"#
        );
        let policy = Policy::from_json(&text).unwrap();
        let topic = "a".repeat(200);
        assert!(!allows(&policy, Action::Publish, &topic, &THING));
        assert!(allows(
            &policy,
            Action::Publish,
            &format!("{topic}b"),
            &THING
        ));
    }

    #[test]
    fn allow_all_allows_everything() {
        let policy = Policy::allow_all();
        assert!(allows(&policy, Action::Subscribe, "#", &THING));
    }
}
