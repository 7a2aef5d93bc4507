//! Timing and garbage input.

use super::super::ATOMIC_FAILED;
use super::*;

/// Timing of the engine on a 10 000-leaf stored tree (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn bench_stored_tree() {
    use std::time::Instant;
    let limits = TreeLimits {
        max_stored_bytes: usize::MAX,
        ..TreeLimits::default()
    };
    let mut t = DmTree::new("Add=*&Get=*&Replace=*".parse().unwrap(), limits).unwrap();
    let uris: Vec<String> = (0..100)
        .flat_map(|i| (0..100).map(move |j| format!("./Bench/{i}/{j}")))
        .collect();
    let start = Instant::now();
    for uri in &uris {
        assert_eq!(
            t.add(S1, uri, &Item::leaf(Format::Int, "12345")),
            Ok(StatusCode::OK)
        );
    }
    let add = start.elapsed();
    let start = Instant::now();
    for uri in &uris {
        assert_eq!(t.get(S1, uri).unwrap().len(), 1);
    }
    let get = start.elapsed();
    let start = Instant::now();
    for uri in &uris {
        assert_eq!(
            t.replace(S1, uri, &Item::leaf(Format::Int, "54321")),
            Ok(StatusCode::OK)
        );
    }
    let replace = start.elapsed();
    let dir = temp_dir("bench");
    let file = dir.join("tree.json");
    let start = Instant::now();
    t.save(&file).unwrap();
    let save = start.elapsed();
    let start = Instant::now();
    let loaded = DmTree::load(&file, limits).unwrap();
    let load = start.elapsed();
    assert_eq!(loaded.root, t.root);
    let size = std::fs::metadata(&file).unwrap().len();
    println!(
        "10000 leaves: add {:?}/op, get {:?}/op, replace {:?}/op, save {save:?}, load {load:?}, file {size} bytes",
        add / 10_000,
        get / 10_000,
        replace / 10_000
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Outside input never panics: URIs, ACLs, Pkg#0 messages and ops from a simple PRNG.
#[test]
fn garbage_input_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"./%?=&+*AaZz09 -_\xc3\xa9";
    let (mut t, _) = tree_with_counter(true);
    for _ in 0..3000 {
        let len = (next() % 24) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = text.parse::<Acl>();
        let _ = t.get(S1, &text);
        let _ = t.add(S1, &text, &Item::leaf(Format::Int, bytes.clone()));
        let _ = t.replace(
            S1,
            &format!("{text}?prop=ACL"),
            &Item::leaf(Format::Chr, bytes.clone()),
        );
        let _ = t.exec(S1, &format!("./Counter/{text}"), Some(&bytes), None);
        let _ = crate::notification::decode(&bytes);
        let _ = crate::auth::parse_hmac_header(&text);
        let _ = crate::auth::parse_basic(&text);
        assert_bytes_consistent(&t);
    }
    // The tree still works.
    assert!(t.get(S1, ".").is_ok());
}

/// Random valid operations (including rolled-back Atomics) keep the byte count exact and the
/// tree saveable.
#[test]
fn random_operations_keep_the_byte_count() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = ["a", "b", "c"];
    let mut t = tree();
    let mut successes = 0;
    for round in 0..2000 {
        let uri = |n: &mut dyn FnMut(u64) -> u64| {
            let depth = 1 + n(3) as usize;
            let segs: Vec<&str> = (0..depth).map(|_| names[n(3) as usize]).collect();
            format!("./R/{}", segs.join("/"))
        };
        let target = uri(&mut next);
        let value = "x".repeat(next(20) as usize);
        let op = match next(5) {
            0 => DmOp::Add {
                target,
                item: chr(&value),
            },
            1 => DmOp::Add {
                target,
                item: Item::interior(),
            },
            2 => DmOp::Replace {
                target,
                item: chr(&value),
            },
            3 => DmOp::Delete { target },
            _ => DmOp::Copy {
                source: target,
                target: uri(&mut next),
            },
        };
        if round % 10 == 0 {
            let outcome = t.run_atomic(
                S1,
                &[
                    op.clone(),
                    DmOp::Delete {
                        target: "./Nope".into(),
                    },
                ],
            );
            assert_eq!(outcome.status, ATOMIC_FAILED);
        } else if t.execute(S1, &op).status.is_success() {
            successes += 1;
        }
        assert_bytes_consistent(&t);
    }
    assert!(
        successes > 200,
        "the random walk mostly failed ({successes} successes)"
    );
}
