//! The local user's unlock code: stored only as a salted, slow hash (PBKDF2-HMAC-SHA256), and
//! wrong attempts rate-limited.
//!
//! Stored form: `pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>`.

use base64::Engine as _;

use crate::store::LockRecord;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// The hash of `code` with a fresh salt.
pub fn hash_code(code: &str, iterations: u32) -> String {
    let salt = crate::model::random_bytes(16);
    let hash = derive(code, &salt, iterations);
    format!(
        "pbkdf2-sha256${iterations}${}${}",
        B64.encode(&salt),
        B64.encode(hash)
    )
}

fn derive(code: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(code.as_bytes(), salt, iterations)
}

/// Whether `code` matches the stored hash (a malformed hash matches nothing).
pub fn verify_code(code: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let ["pbkdf2-sha256", iterations, salt, hash] = parts.as_slice() else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(hash)) = (
        iterations.parse::<u32>(),
        B64.decode(salt),
        B64.decode(hash),
    ) else {
        return false;
    };
    if iterations == 0 {
        return false;
    }
    omadm::auth::constant_time_eq(&derive(code, &salt, iterations), &hash)
}

/// The rate limit of wrong codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Wrong codes in a row before a wait.
    pub max_attempts: u32,
    /// The first wait; each further one doubles.
    pub backoff_secs: u64,
}

/// Why a code was not tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub retry_after_secs: u64,
}

impl RateLimit {
    /// Whether a code may be tried at `now`.
    pub fn check(&self, lock: &LockRecord, now: i64) -> Result<(), Blocked> {
        if now < lock.blocked_until {
            Err(Blocked {
                retry_after_secs: u64::try_from(lock.blocked_until - now).unwrap_or(0),
            })
        } else {
            Ok(())
        }
    }

    /// Records a wrong code at `now` (may impose a wait).
    pub fn failed(&self, lock: &mut LockRecord, now: i64) {
        lock.failed_attempts += 1;
        if lock.failed_attempts >= self.max_attempts {
            let factor = 1u64 << lock.lockouts.min(16);
            let wait = self.backoff_secs.saturating_mul(factor);
            lock.blocked_until = now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
            lock.lockouts += 1;
            lock.failed_attempts = 0;
        }
    }

    /// A good code: the counters start over.
    pub fn succeeded(&self, lock: &mut LockRecord) {
        lock.failed_attempts = 0;
        lock.lockouts = 0;
        lock.blocked_until = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_verify_only_themselves_and_hashes_are_salted() {
        let a = hash_code("1234", 1000);
        let b = hash_code("1234", 1000);
        assert_ne!(a, b, "fresh salt each time");
        assert!(a.starts_with("pbkdf2-sha256$1000$"));
        assert!(!a.contains("1234$"));
        assert!(verify_code("1234", &a) && verify_code("1234", &b));
        assert!(!verify_code("1235", &a));
        assert!(!verify_code("1234", "garbage"));
        assert!(!verify_code("1234", "pbkdf2-sha256$0$AA$AA"));
    }

    #[test]
    fn wrong_codes_impose_doubling_waits() {
        let limit = RateLimit {
            max_attempts: 3,
            backoff_secs: 30,
        };
        let mut lock = LockRecord::default();
        for _ in 0..2 {
            assert!(limit.check(&lock, 100).is_ok());
            limit.failed(&mut lock, 100);
        }
        assert!(limit.check(&lock, 100).is_ok());
        limit.failed(&mut lock, 100);
        assert_eq!(
            limit.check(&lock, 110),
            Err(Blocked {
                retry_after_secs: 20
            })
        );
        assert!(limit.check(&lock, 130).is_ok());
        for _ in 0..3 {
            limit.failed(&mut lock, 130);
        }
        assert_eq!(lock.blocked_until, 190, "second wait: 60 s");
        limit.succeeded(&mut lock);
        assert!(limit.check(&lock, 131).is_ok());
    }
}
