//! OMA DM status codes (SyncML DM Representation Protocol / DM Protocol 1.2–1.3, "Status codes").
//! Shared by the codec, the tree engine and the sessions.

use std::fmt;

/// A DM status code, as carried in `<Status><Data>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u16);

impl StatusCode {
    pub const OK: Self = Self(200);
    pub const ITEM_ADDED: Self = Self(201);
    pub const ACCEPTED_FOR_PROCESSING: Self = Self(202);
    pub const NON_AUTHORITATIVE_RESPONSE: Self = Self(203);
    pub const NO_CONTENT: Self = Self(204);
    pub const RESET_CONTENT: Self = Self(205);
    pub const PARTIAL_CONTENT: Self = Self(206);
    pub const CONFLICT_RESOLVED_WITH_MERGE: Self = Self(207);
    pub const DELETE_WITHOUT_ARCHIVE: Self = Self(210);
    pub const ITEM_NOT_DELETED: Self = Self(211);
    pub const AUTHENTICATION_ACCEPTED: Self = Self(212);
    pub const CHUNKED_ITEM_ACCEPTED: Self = Self(213);
    pub const OPERATION_CANCELLED: Self = Self(214);
    pub const NOT_EXECUTED: Self = Self(215);
    pub const ATOMIC_ROLLBACK_OK: Self = Self(216);
    pub const MULTIPLE_CHOICES: Self = Self(300);
    pub const BAD_REQUEST: Self = Self(400);
    pub const INVALID_CREDENTIALS: Self = Self(401);
    pub const PAYMENT_REQUIRED: Self = Self(402);
    pub const FORBIDDEN: Self = Self(403);
    pub const NOT_FOUND: Self = Self(404);
    pub const COMMAND_NOT_ALLOWED: Self = Self(405);
    pub const OPTIONAL_FEATURE_NOT_SUPPORTED: Self = Self(406);
    pub const MISSING_CREDENTIALS: Self = Self(407);
    pub const REQUEST_TIMEOUT: Self = Self(408);
    pub const INCOMPLETE_COMMAND: Self = Self(412);
    pub const REQUEST_ENTITY_TOO_LARGE: Self = Self(413);
    pub const URI_TOO_LONG: Self = Self(414);
    pub const UNSUPPORTED_MEDIA_TYPE: Self = Self(415);
    pub const REQUESTED_SIZE_TOO_BIG: Self = Self(416);
    pub const ALREADY_EXISTS: Self = Self(418);
    pub const DEVICE_FULL: Self = Self(420);
    pub const SIZE_MISMATCH: Self = Self(424);
    pub const PERMISSION_DENIED: Self = Self(425);
    pub const COMMAND_FAILED: Self = Self(500);
    pub const COMMAND_NOT_IMPLEMENTED: Self = Self(501);
    pub const SERVICE_UNAVAILABLE: Self = Self(503);
    pub const PROCESSING_ERROR: Self = Self(506);
    pub const ATOMIC_FAILED: Self = Self(507);
    pub const ATOMIC_ROLLBACK_FAILED: Self = Self(516);
    pub const ATOMIC_RESPONSE_TOO_LARGE: Self = Self(517);

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
