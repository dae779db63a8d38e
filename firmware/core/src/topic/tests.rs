use super::matches;

#[test]
fn exact_names_match_only_themselves() {
    assert!(matches("inTopic", "inTopic"));
    assert!(!matches("inTopic", "intopic"));
    assert!(!matches("inTopic", "inTopic/x"));
    assert!(!matches("a/b", "a"));
    assert!(!matches("a/b", "a/b/"));
}

#[test]
fn plus_matches_one_level_including_an_empty_one() {
    assert!(matches("sensor/+/temp", "sensor/1/temp"));
    assert!(matches("sensor/+/temp", "sensor//temp"));
    assert!(!matches("sensor/+/temp", "sensor/1/2/temp"));
    assert!(matches("+", "x"));
    assert!(!matches("+", "x/y"));
}

#[test]
fn hash_matches_the_parent_and_everything_below() {
    assert!(matches("sensor/#", "sensor"));
    assert!(matches("sensor/#", "sensor/a/b"));
    assert!(matches("#", "anything/at/all"));
    assert!(!matches("sensor/#", "sensors"));
}

#[test]
fn wildcards_at_the_start_do_not_match_dollar_topics() {
    assert!(!matches("#", "$aws/things/x"));
    assert!(!matches("+/things/x", "$aws/things/x"));
    assert!(matches("$aws/+/x", "$aws/things/x"));
}
