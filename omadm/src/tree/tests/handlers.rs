//! Handler-backed nodes through the counter MO.

use super::*;

#[test]
fn handler_values_exec_and_dynamic_nodes() {
    let (mut t, state) = tree_with_counter(true);
    assert_eq!(data(&t, S2, "./Counter/Value").unwrap(), "0");
    assert_eq!(
        data(&t, S2, "./Counter").unwrap(),
        "Code/Increment/Items/Limit/Reset/Step/Value"
    );
    // A handler-provided ACL overrides the inherited one.
    assert_eq!(data(&t, S2, "./Counter/Limit").unwrap(), "100");
    assert_eq!(
        t.get(S1, "./Counter/Limit"),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        data(&t, S2, "./Counter/Limit?prop=ACL").unwrap(),
        "Get=srv2"
    );
    assert_eq!(
        t.replace(S1, "./Counter/Step", &Item::leaf(Format::Int, "5")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.exec(S1, "./Counter/Increment", None, None),
        StatusCode::OK
    );
    assert_eq!(
        t.exec(S1, "./Counter/Increment", None, None),
        StatusCode::OK
    );
    assert_eq!(data(&t, S2, "./Counter/Value").unwrap(), "10");
    // Async Exec keeps the correlator for the later Generic Alert.
    assert_eq!(
        t.exec(S1, "./Counter/Reset", Some(b""), Some("corr-1")),
        StatusCode::ACCEPTED_FOR_PROCESSING
    );
    assert_eq!(
        state.lock().unwrap().pending,
        [("Reset".to_owned(), Some("corr-1".to_owned()))]
    );
    // The engine enforces ACLs, access types and formats before the handler sees anything.
    assert_eq!(
        t.exec(S2, "./Counter/Increment", None, None),
        StatusCode::PERMISSION_DENIED
    );
    assert_eq!(
        t.exec(S1, "./Counter/Value", None, None),
        StatusCode::COMMAND_NOT_ALLOWED
    );
    assert_eq!(
        t.exec(S1, "./Counter/Nope", None, None),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.replace(S2, "./Counter/Step", &Item::leaf(Format::Int, "1")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S1, "./Counter/Step", &chr("x")),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    assert_eq!(
        t.replace(S1, "./Counter/Step", &Item::leaf(Format::Int, "1.5")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(state.lock().unwrap().step, 5);
    // A write-only leaf: Replace works, Get is not allowed by its access type (405).
    assert_eq!(
        t.replace(S1, "./Counter/Code", &chr("1234")),
        Ok(StatusCode::OK)
    );
    assert_eq!(state.lock().unwrap().code_len, 4);
    assert_eq!(
        t.get(S1, "./Counter/Code"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // Dynamic nodes under the handler.
    assert_eq!(
        t.add(S1, "./Counter/Items/a", &Item::leaf(Format::Int, "3")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.add(S1, "./Counter/Items/a", &Item::leaf(Format::Int, "3")),
        Err(StatusCode::ALREADY_EXISTS)
    );
    assert_eq!(
        t.add(S1, "./Counter/Items/x/y", &Item::leaf(Format::Int, "3")),
        Err(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        t.add(S1, "./Counter/Other", &Item::leaf(Format::Int, "3")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(data(&t, S2, "./Counter/Items").unwrap(), "a");
    assert_eq!(
        t.delete(S1, "./Counter/Value"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(t.delete(S1, "./Counter/Items/a"), Ok(StatusCode::OK));
    assert!(state.lock().unwrap().items.is_empty());
    // Properties of handler nodes.
    assert_eq!(data(&t, S2, "./Counter/Value?prop=Format").unwrap(), "int");
    assert_eq!(data(&t, S2, "./Counter/Value?prop=Size").unwrap(), "2");
    assert_eq!(
        t.get(S2, "./Counter/Value?prop=VerNo"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(
        t.replace(S1, "./Counter/Value?prop=ACL", &chr("Get=*")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // The whole structure, through the handler.
    let listed = t.get(S2, "./Counter?list=Struct").unwrap();
    let uris: Vec<&str> = listed.iter().map(|g| g.uri.as_str()).collect();
    // Code, Increment and Reset have no Get access type: left out.
    assert_eq!(
        uris,
        [
            "./Counter",
            "./Counter/Items",
            "./Counter/Limit",
            "./Counter/Step",
            "./Counter/Value"
        ]
    );
    // srv1 may not read Limit (its own ACL): left out for srv1.
    let listed = t.get(S1, "./Counter?list=StructData").unwrap();
    assert!(listed.iter().all(|g| g.uri != "./Counter/Limit"));
    let step = listed.iter().find(|g| g.uri == "./Counter/Step").unwrap();
    assert_eq!(step.data.as_deref(), Some(&b"5"[..]));
    // Copy a stored leaf into the handler (an Add through the handler), and back out.
    t.add(S1, "./Src", &Item::leaf(Format::Int, "8")).unwrap();
    assert_eq!(t.copy(S1, "./Src", "./Counter/Items/b"), Ok(StatusCode::OK));
    assert_eq!(state.lock().unwrap().items.get("b"), Some(&8));
    assert_eq!(t.copy(S1, "./Counter/Value", "./Dst"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Dst").unwrap(), "10");
    assert_eq!(
        t.copy(S1, "./Counter/Items", "./Dst2"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    // Exec data over the leaf cap.
    let big = vec![b'x'; TreeLimits::default().max_leaf_size + 1];
    assert_eq!(
        t.exec(S1, "./Counter/Reset", Some(&big), None),
        StatusCode::REQUEST_ENTITY_TOO_LARGE
    );
    // The mount point itself cannot be deleted or renamed.
    assert_eq!(
        t.delete(S1, "./Counter"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_bytes_consistent(&t);
}

#[test]
fn mount_rules() {
    let (mut t, _) = tree_with_counter(true);
    let (mo, _) = CounterMo::new(true);
    assert!(matches!(
        t.mount(&DmUri::from_segments(["Counter"]), Box::new(mo)),
        Err(TreeError::MountOverlap(_))
    ));
    let (mo, _) = CounterMo::new(true);
    assert!(matches!(
        t.mount(&DmUri::from_segments(["Missing"]), Box::new(mo)),
        Err(TreeError::NotAnInteriorNode(_))
    ));
    assert!(t
        .put_node(
            &DmUri::from_segments(["Counter", "X"]),
            Node::interior(Scope::Permanent, 0)
        )
        .is_err());
    let counter = DmUri::from_segments(["Counter"]);
    assert!(t.unmount(&counter).is_some());
    assert_eq!(t.get(S1, "./Counter/Value"), Err(StatusCode::NOT_FOUND));
    assert_eq!(
        data(&t, S1, "./Counter").unwrap(),
        "",
        "the stored mount node stays"
    );
}
