//! `syncml:auth-basic` and `syncml:auth-md5` credentials (the `Cred` element's Data, b64).

use super::{b64, constant_time_eq, md5, unb64, user_key};

/// `b64(username:password)`.
pub fn basic_credential(username: &str, password: &str) -> String {
    b64(format!("{username}:{password}").as_bytes())
}

/// Splits a basic credential into (username, password); `None` when it is not b64 of `u:p`.
pub fn parse_basic(data: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(unb64(data)?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Checks a basic credential in constant time.
pub fn verify_basic(data: &str, username: &str, password: &str) -> bool {
    let expected = format!("{username}:{password}");
    unb64(data).is_some_and(|decoded| constant_time_eq(&decoded, expected.as_bytes()))
}

/// `md5(b64(md5(username:password)):nonce)` (OMA-TS-DM_Security 1.2, "MD5 digest"). The nonce is
/// the raw bytes (a NextNonce received in b64 is decoded first).
pub fn md5_digest(username: &str, password: &str, nonce: &[u8]) -> [u8; 16] {
    md5(&[user_key(username, password).as_bytes(), b":", nonce])
}

/// The `syncml:auth-md5` Cred Data: `b64(md5_digest)`.
pub fn md5_credential(username: &str, password: &str, nonce: &[u8]) -> String {
    b64(&md5_digest(username, password, nonce))
}

/// Checks an MD5 credential in constant time.
pub fn verify_md5(data: &str, username: &str, password: &str, nonce: &[u8]) -> bool {
    let expected = md5_digest(username, password, nonce);
    unb64(data).is_some_and(|presented| constant_time_eq(&presented, &expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_round_trip() {
        let cred = basic_credential("Bruce2", "OhBehave");
        assert_eq!(cred, "QnJ1Y2UyOk9oQmVoYXZl");
        assert_eq!(
            parse_basic(&cred),
            Some(("Bruce2".into(), "OhBehave".into()))
        );
        assert!(verify_basic(&cred, "Bruce2", "OhBehave"));
        assert!(!verify_basic(&cred, "Bruce2", "OhBehavE"));
        assert!(!verify_basic("!!", "Bruce2", "OhBehave"));
        assert_eq!(parse_basic("bm9jb2xvbg=="), None, "no colon");
    }

    #[test]
    fn md5_matches_an_independent_computation() {
        // The SyncML Representation Protocol example (Bruce2 / OhBehave / "Nonce"), also
        // recomputed with Python hashlib:
        // b64(md5(b64(md5(b"Bruce2:OhBehave")) + b":" + b"Nonce"))
        let cred = md5_credential("Bruce2", "OhBehave", b"Nonce");
        assert_eq!(cred, MD5_VECTOR);
        assert!(verify_md5(&cred, "Bruce2", "OhBehave", b"Nonce"));
        assert!(!verify_md5(&cred, "Bruce2", "OhBehave", b"Nonce2"));
        assert!(!verify_md5(&cred, "Bruce2", "wrong", b"Nonce"));
        assert!(!verify_md5("not b64!", "Bruce2", "OhBehave", b"Nonce"));
    }

    const MD5_VECTOR: &str = "Zz6EivR3yeaaENcRN6lpAQ==";
}
