use super::*;

#[test]
fn a_marker_only_after_drops_and_once_per_gap() {
    let mut d = DroppedLines::new();
    assert_eq!(d.marker(5), None);
    d.dropped();
    d.dropped();
    let marker = d.marker(812).unwrap();
    assert_eq!(marker.to_string(), "W (     812) log: dropped lines=2");
    // Not written yet: still owed, and it grows.
    d.dropped();
    assert_eq!(d.marker(900).unwrap().field("lines"), Some("3"));
    d.reported();
    assert_eq!(d.marker(1000), None);
    assert_eq!((d.pending(), d.total()), (0, 3));
}
