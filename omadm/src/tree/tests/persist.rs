//! Saving and loading.

use super::*;

#[test]
fn persistence_round_trip_and_corruption() {
    let dir = temp_dir("persist");
    let file = dir.join("tree.json");
    let (mut t, _state) = tree_with_counter(true);
    t.add(S1, "./A/B", &Item::leaf(Format::Bin, vec![0u8, 1, 255]))
        .unwrap();
    t.replace(S1, "./A/B?prop=Title", &chr("bytes")).unwrap();
    t.replace(S1, "./Counter/Value", &Item::leaf(Format::Int, "5"))
        .unwrap();
    t.save(&file).unwrap();
    let loaded = DmTree::load(&file, TreeLimits::default()).unwrap();
    assert_eq!(loaded.root, t.root);
    assert_eq!(
        loaded.get(S1, "./A/B").unwrap()[0].data.as_deref(),
        Some(&[0u8, 1, 255][..])
    );
    // Handler values are not in the file; only the mount node is.
    assert_eq!(
        loaded.get(S1, "./Counter/Value"),
        Err(StatusCode::NOT_FOUND)
    );
    assert!(loaded.stored(&DmUri::from_segments(["Counter"])).is_some());

    // Second save keeps the first as .prev; then the current file gets corrupted.
    t.add(S1, "./A/C", &chr("c")).unwrap();
    t.save(&file).unwrap();
    std::fs::write(&file, b"{\"magic\": \"virmo-dmtree\", \"vers").unwrap();
    let err = DmTree::load(&file, TreeLimits::default()).unwrap_err();
    assert!(
        matches!(err, super::super::persist::PersistError::Corrupt { .. }),
        "{err}"
    );
    // A failed reload leaves the live tree as it was.
    let before = t.root.clone();
    assert!(t.reload(&file).is_err());
    assert_eq!(t.root, before);
    let (fallback, why) = DmTree::load_or_previous(&file, TreeLimits::default()).unwrap();
    assert!(why.is_some());
    assert!(fallback.get(S1, "./A/B").is_ok());
    assert_eq!(
        fallback.get(S1, "./A/C"),
        Err(StatusCode::NOT_FOUND),
        "the older good file"
    );

    std::fs::write(&file, br#"{"magic":"other","version":1,"root":{}}"#).unwrap();
    assert!(DmTree::load(&file, TreeLimits::default()).is_err());
    t.save(&file).unwrap();
    let mut other = tree();
    other.reload(&file).unwrap();
    assert_eq!(data(&other, S1, "./A/C").unwrap(), "c");
    assert_bytes_consistent(&other);
    assert_bytes_consistent(&t);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_refused_during_atomic() {
    let dir = temp_dir("atomic-save");
    let mut t = tree();
    t.begin_atomic().unwrap();
    assert!(matches!(
        t.save(&dir.join("t.json")),
        Err(super::super::persist::PersistError::InAtomic)
    ));
    assert_eq!(t.rollback_atomic(), StatusCode::ATOMIC_ROLLBACK_OK);
    std::fs::remove_dir_all(&dir).unwrap();
}
