//! The broker's AWS IoT policy parser and evaluation (`mock_broker::policy`).
//!
//! Byte 0 even: the rest is a policy document, arbitrary text. Never a panic; a refusal names a
//! place; an accepted document's decisions point at a statement with that effect; with a
//! deny-everything statement appended, every request is explicitly denied (AWS: an
//! explicit Deny wins over any Allow).
//!
//! Byte 0 odd: one statement built from an arbitrary action pattern and resource pattern,
//! checked against a reference matcher written here: `*` any run, `?` one character,
//! actions case-insensitive, `${iot:ClientId}` / `${iot:Connection.Thing.ThingName}`
//! substituted literally (no thing name: no match), any other variable refused. As an
//! Allow it allows exactly what the reference matches; as a Deny before an allow-all it
//! denies exactly that and allows the rest.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// The broker's policy module, this very file (see Cargo.toml for why not the crate).
#[allow(dead_code)]
#[path = "../../src/policy.rs"]
mod policy;

use policy::{AccountScope, Action, Decision, Policy, PolicyError, Principal};
use serde_json::{Value, json};

#[derive(Debug, Arbitrary)]
struct Query {
    action: u8,
    name: String,
    client_id: String,
    thing_name: Option<String>,
}

impl Query {
    fn action(&self) -> Action {
        [
            Action::Connect,
            Action::Publish,
            Action::Subscribe,
            Action::Receive,
        ][usize::from(self.action % 4)]
    }
    fn principal(&self) -> Principal<'_> {
        Principal {
            client_id: &self.client_id,
            thing_name: self.thing_name.as_deref(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct PatternInput {
    action: String,
    resource: String,
    arn_tail: bool,
    query: Query,
}

/// What the broker asks of a document: the test PKI's thing and observer, and names
/// that look like patterns (they must match literally).
fn fixed_queries() -> Vec<Query> {
    let q = |action, name: &str, client_id: &str, thing_name: Option<&str>| Query {
        action,
        name: name.into(),
        client_id: client_id.into(),
        thing_name: thing_name.map(Into::into),
    };
    vec![
        q(0, "ESPthing", "ESPthing", Some("ESPthing")),
        q(1, "outTopic", "ESPthing", Some("ESPthing")),
        q(2, "inTopic", "ESPthing", Some("ESPthing")),
        q(3, "inTopic", "ESPthing", Some("ESPthing")),
        q(0, "hil-observer", "hil-observer", None),
        q(2, "#", "hil-observer", None),
        q(1, "a/*/b?", "x*", Some("?")),
        q(0, "", "", Some("")),
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Char(char),
    AnyRun,
    AnyOne,
}

/// Plain dynamic programming over (pattern, subject) positions.
fn reference_glob(pattern: &[Token], subject: &[char]) -> bool {
    let mut row = vec![false; subject.len() + 1];
    row[0] = true;
    for token in pattern {
        let mut next = vec![false; subject.len() + 1];
        for j in 0..=subject.len() {
            next[j] = match token {
                Token::AnyRun => row[j] || (j > 0 && next[j - 1]),
                Token::AnyOne => j > 0 && row[j - 1],
                Token::Char(c) => j > 0 && row[j - 1] && subject[j - 1] == *c,
            };
        }
        row = next;
    }
    row[subject.len()]
}

fn plain(text: &str) -> Vec<Token> {
    text.chars()
        .map(|c| match c {
            '*' => Token::AnyRun,
            '?' => Token::AnyOne,
            c => Token::Char(c),
        })
        .collect()
}

/// The resource pattern with variables substituted; `Err` if the parser must refuse it,
/// `Ok(None)` if a variable has no value for this principal.
fn substitute(pattern: &str, principal: &Principal<'_>) -> Result<Option<Vec<Token>>, ()> {
    let mut out = Vec::new();
    let mut unbound = false;
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or(())?;
            match &after[..end] {
                "iot:ClientId" => out.extend(principal.client_id.chars().map(Token::Char)),
                "iot:Connection.Thing.ThingName" => match principal.thing_name {
                    Some(name) => out.extend(name.chars().map(Token::Char)),
                    None => unbound = true,
                },
                _ => return Err(()),
            }
            rest = &after[end + 1..];
            continue;
        }
        out.extend(plain(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    Ok((!unbound).then_some(out))
}

fn statement(effect: &str, action: &str, resource: &str) -> Value {
    json!({ "Effect": effect, "Action": action, "Resource": resource })
}

fn document(statements: Vec<Value>) -> String {
    json!({ "Version": "2012-10-17", "Statement": statements }).to_string()
}

fn check_document(text: &str, queries: &[Query]) {
    let scope = AccountScope::default();
    let policy = match Policy::from_json(text) {
        Ok(policy) => policy,
        Err(e) => {
            if let PolicyError::Invalid { at, .. } = &e {
                assert!(!at.is_empty(), "a refusal that names no place: {e}");
            }
            return;
        }
    };
    let doc: Value = serde_json::from_str(text).expect("accepted, so JSON");
    let statements: Vec<Value> = match &doc["Statement"] {
        Value::Array(list) => list.clone(),
        single => vec![single.clone()],
    };
    let mut with_deny = statements.clone();
    with_deny.push(statement("Deny", "*", "*"));
    let deny_all = Policy::from_json(&document(with_deny))
        .expect("a deny statement added to an accepted policy");
    for q in queries {
        let principal = q.principal();
        match policy.check(&scope, q.action(), &q.name, &principal) {
            Decision::Allowed { statement } => assert_eq!(statements[statement]["Effect"], "Allow"),
            Decision::ExplicitlyDenied { statement } => {
                assert_eq!(statements[statement]["Effect"], "Deny")
            }
            Decision::NotAllowed => {}
        }
        match deny_all.check(&scope, q.action(), &q.name, &principal) {
            Decision::ExplicitlyDenied { statement } => {
                assert!(statement == statements.len() || statements[statement]["Effect"] == "Deny")
            }
            other => panic!("an explicit Deny of everything lost to {other:?}"),
        }
    }
}

fn check_pattern(action: &str, resource: &str, arn_tail: bool, q: &Query) {
    // Half the time, make the resource an ARN so the parser does not refuse it outright.
    let resource = if arn_tail {
        format!("arn:aws:iot:{resource}")
    } else {
        resource.to_owned()
    };
    let principal = q.principal();
    let parsed = Policy::from_json(&document(vec![statement("Allow", action, &resource)]));
    let lower = action.to_ascii_lowercase();
    let action_ok = lower.starts_with("iot:") || lower == "*";
    let resource_ok = resource == "*" || resource.starts_with("arn:");
    let substituted = substitute(&resource, &principal);
    let policy = match parsed {
        Ok(policy) => {
            assert!(
                action_ok && resource_ok && substituted.is_ok(),
                "accepted {action:?} on {resource:?}"
            );
            policy
        }
        Err(_) => {
            assert!(
                !(action_ok && resource_ok && substituted.is_ok()),
                "refused {action:?} on {resource:?}"
            );
            return;
        }
    };
    let scope = AccountScope::default();
    let arn = scope.arn(q.action(), &q.name);
    let arn_chars: Vec<char> = arn.chars().collect();
    let name_chars: Vec<char> = q.action().name().to_ascii_lowercase().chars().collect();
    let expected = reference_glob(&plain(&lower), &name_chars)
        && match substituted.unwrap() {
            Some(tokens) => reference_glob(&tokens, &arn_chars),
            None => false,
        };
    let decision = policy.decide(q.action(), &arn, &principal);
    assert_eq!(
        decision.is_allowed(),
        expected,
        "{action:?} on {resource:?} for {arn:?}: {decision}"
    );

    let deny_first = document(vec![
        statement("Deny", action, &resource),
        statement("Allow", "*", "*"),
    ]);
    let decision = Policy::from_json(&deny_first)
        .expect("same statement")
        .decide(q.action(), &arn, &principal);
    let want = if expected {
        Decision::ExplicitlyDenied { statement: 0 }
    } else {
        Decision::Allowed { statement: 1 }
    };
    assert_eq!(decision, want, "{action:?} on {resource:?} for {arn:?}");
}

// Byte 0 even: the rest is a policy document (UTF-8, lossily). Odd: a pattern case.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check_document(&String::from_utf8_lossy(rest), &fixed_queries());
    } else if let Ok(p) = PatternInput::arbitrary_take_rest(arbitrary::Unstructured::new(rest)) {
        check_pattern(&p.action, &p.resource, p.arn_tail, &p.query);
    }
});
