//! Stored nodes: Get/Add/Replace/Delete/Copy, ACLs, properties, limits.

use super::*;

#[test]
fn get_leaf_value_and_interior_child_list() {
    let mut t = tree();
    assert_eq!(t.add(S1, "./A/B", &chr("hello")), Ok(StatusCode::OK));
    assert_eq!(t.add(S1, "./A/C", &Item::interior()), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./A/B").unwrap(), "hello");
    let r = t.get(S1, "./A").unwrap();
    assert_eq!(r[0].format, Format::Node);
    assert_eq!(r[0].data.as_deref(), Some(&b"B/C"[..]));
    assert_eq!(r[0].uri, "./A");
    assert_eq!(t.get(S1, "./Nope"), Err(StatusCode::NOT_FOUND));
    assert_eq!(t.get(S1, "./A//B"), Err(StatusCode::BAD_REQUEST));
}

#[test]
fn add_creates_missing_parents_and_refuses_duplicates() {
    let mut t = tree();
    assert_eq!(
        t.add(S1, "X/Y/Z", &Item::leaf(Format::Int, "5")),
        Ok(StatusCode::OK)
    );
    assert_eq!(t.get(S1, "./X/Y").unwrap()[0].format, Format::Node);
    assert_eq!(
        t.add(S1, "./X/Y/Z", &chr("again")),
        Err(StatusCode::ALREADY_EXISTS)
    );
    assert_eq!(
        t.add(S1, ".", &Item::interior()),
        Err(StatusCode::ALREADY_EXISTS)
    );
    // Under a leaf: not allowed.
    assert_eq!(
        t.add(S1, "./X/Y/Z/W", &chr("")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // Missing data for a format whose empty value is invalid: incomplete.
    let no_data = Item {
        format: Some(Format::Int),
        ..Item::default()
    };
    assert_eq!(
        t.add(S1, "./X/N", &no_data),
        Err(StatusCode::INCOMPLETE_COMMAND)
    );
    // No format, no data: an empty chr leaf.
    assert_eq!(t.add(S1, "./X/E", &Item::default()), Ok(StatusCode::OK));
    assert_eq!(t.get(S1, "./X/E").unwrap()[0].format, Format::Chr);
    // Interior with data is malformed; invalid int data too.
    let bad_node = Item {
        format: Some(Format::Node),
        data: Some(b"x".to_vec()),
        ..Item::default()
    };
    assert_eq!(t.add(S1, "./X/I", &bad_node), Err(StatusCode::BAD_REQUEST));
    assert_eq!(
        t.add(S1, "./X/I", &Item::leaf(Format::Int, "x")),
        Err(StatusCode::BAD_REQUEST)
    );
    // A query on Add makes no sense.
    assert_eq!(
        t.add(S1, "./X/Q?prop=ACL", &chr("")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_bytes_consistent(&t);
}

#[test]
fn acl_is_inherited_and_enforced() {
    let mut t = tree();
    t.add(S1, "./A/B", &chr("v")).unwrap();
    // Root: Add=*&Get=*&Replace=srv1. srv1 created A (inheriting gives it no Delete), so A got
    // srv1's full rights; srv2 falls under A's ACL now.
    assert_eq!(
        data(&t, S1, "./A?prop=ACL").unwrap(),
        "Add=srv1&Delete=srv1&Get=srv1&Replace=srv1"
    );
    assert_eq!(data(&t, S1, "./A/B?prop=ACL").unwrap(), "", "B inherits");
    assert_eq!(t.get(S2, "./A/B"), Err(StatusCode::PERMISSION_DENIED));
    assert_eq!(
        t.replace(S2, "./A/B", &chr("w")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(t.delete(S2, "./A/B"), Err(StatusCode::PERMISSION_DENIED));
    assert_eq!(
        t.add(S2, "./A/C", &chr("w")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    // The device itself is not subject to ACLs.
    assert_eq!(data(&t, Requester::Device, "./A/B").unwrap(), "v");
    // Open B to everyone for Get: an ACL applies as a whole, so Replace is now refused even to srv1.
    assert_eq!(
        t.replace(S1, "./A/B?prop=ACL", &chr("Get=*")),
        Ok(StatusCode::OK)
    );
    assert_eq!(data(&t, S2, "./A/B").unwrap(), "v");
    assert_eq!(
        t.replace(S1, "./A/B", &chr("x")),
        Err(StatusCode::PERMISSION_DENIED)
    );
}

#[test]
fn acl_changes_need_replace_on_parent_for_leaves_and_on_self_for_interior() {
    let mut t = tree();
    let device = Requester::Device;
    t.add(device, "./P/L", &chr("v")).unwrap();
    t.replace(device, "./P?prop=ACL", &chr("Get=*&Replace=srv2"))
        .unwrap();
    t.replace(device, "./P/L?prop=ACL", &chr("Get=*&Replace=srv1"))
        .unwrap();
    // srv1 may Replace L's value but not its ACL (needs Replace on P).
    assert_eq!(t.replace(S1, "./P/L", &chr("w")), Ok(StatusCode::OK));
    assert_eq!(
        t.replace(S1, "./P/L?prop=ACL", &chr("Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S2, "./P/L?prop=ACL", &chr("Get=*")),
        Ok(StatusCode::OK)
    );
    // P is interior: its own Replace right controls its ACL, and so does Replace on its parent
    // (the root grants Replace to srv1). srv3 has neither.
    let s3 = Requester::Server("srv3");
    assert_eq!(
        t.replace(s3, "./P?prop=ACL", &chr("Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S2, "./P?prop=ACL", &chr("Get=*&Replace=srv3")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.replace(s3, "./P?prop=ACL", &chr("Get=*")),
        Ok(StatusCode::OK)
    );
    assert_eq!(
        t.replace(S2, "./P?prop=ACL", &chr("Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S1, "./P?prop=ACL", &chr("Get=*&Replace=srv1")),
        Ok(StatusCode::OK)
    );
    // Bad ACL syntax; empty root ACL; a root ACL without Add=*.
    assert_eq!(
        t.replace(S1, "./P?prop=ACL", &chr("Get")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        t.replace(S1, ".?prop=ACL", &chr("")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        t.replace(S1, ".?prop=ACL", &chr("Add=srv1&Get=*&Replace=srv1")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(
        t.replace(S2, ".?prop=ACL", &chr("Add=*&Get=*")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(
        t.replace(S1, ".?prop=ACL", &chr("Add=*&Get=*&Replace=srv1")),
        Ok(StatusCode::OK)
    );
}

#[test]
fn replace_statuses() {
    let limits = TreeLimits {
        max_leaf_size: 8,
        max_stored_bytes: 12,
        ..TreeLimits::default()
    };
    let mut t = DmTree::new("Add=*&Get=*&Replace=*&Delete=*".parse().unwrap(), limits).unwrap();
    t.add(S1, "./N", &Item::leaf(Format::Int, "1")).unwrap();
    t.add(S1, "./I", &Item::interior()).unwrap();
    assert_eq!(
        t.replace(S1, "./Missing", &chr("x")),
        Err(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        t.replace(S1, "./I", &chr("x")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    let no_data = Item {
        format: Some(Format::Int),
        ..Item::default()
    };
    assert_eq!(
        t.replace(S1, "./N", &no_data),
        Err(StatusCode::INCOMPLETE_COMMAND)
    );
    assert_eq!(
        t.replace(S1, "./N", &Item::leaf(Format::Int, "abc")),
        Err(StatusCode::BAD_REQUEST)
    );
    let sized = Item {
        declared_size: Some(3),
        ..Item::leaf(Format::Int, "12")
    };
    assert_eq!(t.replace(S1, "./N", &sized), Err(StatusCode::SIZE_MISMATCH));
    assert_eq!(
        t.replace(S1, "./N", &Item::leaf(Format::Int, "123456789")),
        Err(StatusCode::REQUEST_ENTITY_TOO_LARGE)
    );
    // Format omitted: the node's own format applies.
    let untyped = Item {
        data: Some(b"42".to_vec()),
        ..Item::default()
    };
    assert_eq!(t.replace(S1, "./N", &untyped), Ok(StatusCode::OK));
    // A dynamic stored leaf may change format; not to `node`.
    assert_eq!(
        t.replace(S1, "./N", &Item::leaf(Format::Bool, "true")),
        Ok(StatusCode::OK)
    );
    assert_eq!(t.get(S1, "./N").unwrap()[0].format, Format::Bool);
    let as_node = Item {
        format: Some(Format::Node),
        data: Some(Vec::new()),
        ..Item::default()
    };
    assert_eq!(
        t.replace(S1, "./N", &as_node),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    // Device full: 12 bytes in total.
    t.add(S1, "./F", &chr("12345678")).unwrap();
    assert_eq!(
        t.add(S1, "./G", &chr("12345")),
        Err(StatusCode::DEVICE_FULL)
    );
    assert_eq!(t.replace(S1, "./F", &chr("1234567")), Ok(StatusCode::OK));
    // Large-object pre-check from the announced size.
    assert_eq!(t.accepts_size(9), Err(StatusCode::REQUEST_ENTITY_TOO_LARGE));
    assert_eq!(
        t.accepts_size(u64::MAX),
        Err(StatusCode::REQUEST_ENTITY_TOO_LARGE)
    );
    assert_eq!(t.accepts_size(8), Err(StatusCode::DEVICE_FULL));
    assert_eq!(t.accepts_size(1), Ok(()), "4 + 7 + 1 bytes fit in 12");
    assert_bytes_consistent(&t);
}

#[test]
fn permanent_leaf_refuses_other_formats() {
    let mut t = tree();
    let uri = DmUri::from_segments(["P"]);
    t.put_node(
        &uri,
        Node::leaf(Scope::Permanent, Format::Int, b"1".to_vec(), 0),
    )
    .unwrap();
    assert_eq!(
        t.replace(S1, "./P", &chr("x")),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    assert_eq!(
        t.replace(S1, "./P", &Item::leaf(Format::Int, "2")),
        Ok(StatusCode::OK)
    );
    assert_eq!(t.delete(S1, "./P"), Err(StatusCode::COMMAND_NOT_ALLOWED));
}

#[test]
fn delete_statuses() {
    let mut t = tree();
    t.add(S1, "./A/B/C", &chr("v")).unwrap();
    assert_eq!(t.delete(S1, "."), Err(StatusCode::COMMAND_NOT_ALLOWED));
    assert_eq!(t.delete(S1, "./Z"), Err(StatusCode::NOT_FOUND));
    assert_eq!(t.delete(S2, "./A/B"), Err(StatusCode::PERMISSION_DENIED));
    assert_eq!(t.delete(S1, "./A/B"), Ok(StatusCode::OK));
    assert_eq!(t.get(S1, "./A/B/C"), Err(StatusCode::NOT_FOUND));
    assert_eq!(data(&t, S1, "./A").unwrap(), "");
    // A dynamic node holding a permanent one cannot be deleted.
    t.add(S1, "./A/D", &Item::interior()).unwrap();
    let perm = DmUri::from_segments(["A", "D", "P"]);
    t.put_node(&perm, Node::leaf(Scope::Permanent, Format::Chr, vec![], 0))
        .unwrap();
    assert_eq!(t.delete(S1, "./A/D"), Err(StatusCode::COMMAND_NOT_ALLOWED));
    assert_bytes_consistent(&t);
}

#[test]
fn uri_limits_give_414() {
    let limits = TreeLimits {
        uri: UriLimits {
            max_depth: 3,
            max_total_len: 40,
            max_segment_len: 8,
        },
        ..TreeLimits::default()
    };
    let mut t = DmTree::new("Add=*&Get=*".parse().unwrap(), limits).unwrap();
    assert_eq!(
        t.add(S1, "./A/B/C/D", &chr("")),
        Err(StatusCode::URI_TOO_LONG)
    );
    assert_eq!(
        t.add(S1, "./ABCDEFGHI", &chr("")),
        Err(StatusCode::URI_TOO_LONG)
    );
    assert_eq!(
        t.get(S1, &format!("./{}", "A/".repeat(20))),
        Err(StatusCode::URI_TOO_LONG)
    );
    assert_eq!(t.add(S1, "./A/B/C", &chr("")), Ok(StatusCode::OK));
}

#[test]
fn properties_and_verno() {
    let mut t = tree();
    t.add(
        S1,
        "./A/L",
        &Item {
            mime_type: Some("text/x-test".into()),
            ..chr("abc")
        },
    )
    .unwrap();
    assert_eq!(data(&t, S1, "./A/L?prop=Format").unwrap(), "chr");
    assert_eq!(data(&t, S1, "./A/L?prop=Type").unwrap(), "text/x-test");
    assert_eq!(data(&t, S1, "./A/L?prop=Name").unwrap(), "L");
    assert_eq!(data(&t, S1, "./A/L?prop=Size").unwrap(), "3");
    assert_eq!(
        data(&t, S1, "./A/L?prop=TStamp").unwrap(),
        "19700101T001640Z"
    );
    assert_eq!(data(&t, S1, "./A/L?prop=VerNo").unwrap(), "0");
    assert_eq!(
        t.get(S1, "./A?prop=Size"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(
        t.get(S1, "./A?prop=Colour"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    assert_eq!(
        t.get(S1, "./A/L?prop=VerNo").unwrap()[0].uri,
        "./A/L?prop=VerNo"
    );
    t.replace(S1, "./A/L", &chr("abcd")).unwrap();
    t.replace(S1, "./A/L", &chr("abcde")).unwrap();
    assert_eq!(data(&t, S1, "./A/L?prop=VerNo").unwrap(), "2");
    assert_eq!(data(&t, S1, "./A/L?prop=Size").unwrap(), "5");
    // Adding a child changes the parent.
    let before: u16 = data(&t, S1, "./A?prop=VerNo").unwrap().parse().unwrap();
    t.add(S1, "./A/M", &chr("")).unwrap();
    assert_eq!(
        data(&t, S1, "./A?prop=VerNo").unwrap(),
        (before + 1).to_string()
    );
    // Title, Name (rename), read-only properties.
    assert_eq!(
        t.replace(S1, "./A/L?prop=Title", &chr("The L")),
        Ok(StatusCode::OK)
    );
    assert_eq!(data(&t, S1, "./A/L?prop=Title").unwrap(), "The L");
    assert_eq!(
        t.replace(S1, "./A/L?prop=Name", &chr("M")),
        Err(StatusCode::ALREADY_EXISTS)
    );
    assert_eq!(
        t.replace(S1, "./A/L?prop=Name", &chr("K")),
        Ok(StatusCode::OK)
    );
    assert_eq!(data(&t, S1, "./A/K").unwrap(), "abcde");
    assert_eq!(t.get(S1, "./A/L"), Err(StatusCode::NOT_FOUND));
    assert_eq!(
        t.replace(S1, "./A/K?prop=Size", &chr("1")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(
        t.replace(S1, "./A/K?prop=Name", &chr("a/b")),
        Err(StatusCode::BAD_REQUEST)
    );
    assert_bytes_consistent(&t);
}

#[test]
fn list_struct_and_struct_data() {
    let mut t = tree();
    t.add(S1, "./A/B", &chr("b")).unwrap();
    t.add(S1, "./A/C/D", &Item::leaf(Format::Int, "4")).unwrap();
    let r = t.get(S1, "./A?list=Struct").unwrap();
    let uris: Vec<&str> = r.iter().map(|g| g.uri.as_str()).collect();
    assert_eq!(uris, ["./A", "./A/B", "./A/C", "./A/C/D"]);
    assert!(r.iter().all(|g| g.data.is_none()));
    let r = t.get(S1, "./A?list=StructData").unwrap();
    assert_eq!(r[1].data.as_deref(), Some(&b"b"[..]));
    assert_eq!(r[3].data.as_deref(), Some(&b"4"[..]));
    assert_eq!(r[2].data, None);
    assert_eq!(
        t.get(S1, "./A?list=TNDS"),
        Err(StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED)
    );
    // Nodes srv2 may not read are left out.
    t.replace(S1, "./A/C?prop=ACL", &chr("Get=srv1")).unwrap();
    t.replace(S1, "./A?prop=ACL", &chr("Get=*&Replace=srv1"))
        .unwrap();
    let uris: Vec<String> = t
        .get(S2, "./A?list=Struct")
        .unwrap()
        .into_iter()
        .map(|g| g.uri)
        .collect();
    assert_eq!(uris, ["./A", "./A/B"]);
}

#[test]
fn copy_leaf_and_subtree() {
    let mut t = tree();
    t.add(S1, "./A/B", &Item::leaf(Format::Int, "7")).unwrap();
    t.add(S1, "./A/C/D", &chr("d")).unwrap();
    assert_eq!(t.copy(S1, "./A/B", "./Z/B2"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Z/B2").unwrap(), "7");
    assert_eq!(t.get(S1, "./Z/B2").unwrap()[0].format, Format::Int);
    // Existing target: replaced.
    t.add(S1, "./Z/E", &Item::leaf(Format::Int, "1")).unwrap();
    assert_eq!(t.copy(S1, "./A/B", "./Z/E"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Z/E").unwrap(), "7");
    // Subtree.
    assert_eq!(t.copy(S1, "./A/C", "./Y"), Ok(StatusCode::OK));
    assert_eq!(data(&t, S1, "./Y/D").unwrap(), "d");
    assert_eq!(t.copy(S1, "./A/C", "./Y"), Err(StatusCode::ALREADY_EXISTS));
    assert_eq!(t.copy(S1, "./A", "./A/C/X"), Err(StatusCode::BAD_REQUEST));
    assert_eq!(
        t.copy(S2, "./A/B", "./W"),
        Err(StatusCode::PERMISSION_DENIED)
    );
    assert_eq!(t.copy(S1, "./Nope", "./W"), Err(StatusCode::NOT_FOUND));
    assert_bytes_consistent(&t);
}
