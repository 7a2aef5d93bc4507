//! Server-initiated session notification (OMA-TS-DM_Notification 1.2, "Package #0").

mod pkg0;

pub use pkg0::{
    decode, encode, trigger_digest, verify, Initiator, Notification, NotificationError, UiMode,
    DIGEST_LEN, VERSION_1_2,
};
