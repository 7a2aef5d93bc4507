//! `<SyncHdr>` and the authentication elements `<Cred>` and `<Chal>`.

use std::fmt;
use std::str::FromStr;

use super::{Data, Location, Meta};

/// The only `<VerDTD>` OMA DM 1.2 and 1.3 use.
pub const VER_DTD: &str = "1.2";

/// `<VerProto>`: the DM protocol version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtoVersion {
    /// `DM/1.2`.
    Dm12,
    /// `DM/1.3`.
    Dm13,
}

impl ProtoVersion {
    /// The text of `<VerProto>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dm12 => "DM/1.2",
            Self::Dm13 => "DM/1.3",
        }
    }
}

impl fmt::Display for ProtoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `<VerProto>` text that is neither `DM/1.2` nor `DM/1.3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown DM protocol version {0:?} (expected DM/1.2 or DM/1.3)")]
pub struct UnknownProtoVersion(pub String);

impl FromStr for ProtoVersion {
    type Err = UnknownProtoVersion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "DM/1.2" => Ok(Self::Dm12),
            "DM/1.3" => Ok(Self::Dm13),
            other => Err(UnknownProtoVersion(other.to_owned())),
        }
    }
}

/// `<Cred>`: credentials; `meta` carries the scheme (`<Type>` `syncml:auth-basic`,
/// `syncml:auth-md5`...) and `<Format>` (`b64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    pub meta: Option<Meta>,
    pub data: Data,
}

impl Cred {
    /// Credentials of `auth_type` (e.g. `syncml:auth-md5`) in `format` (e.g. `b64`).
    pub fn new(
        auth_type: impl Into<String>,
        format: impl Into<String>,
        data: impl Into<Data>,
    ) -> Self {
        Self {
            meta: Some(Meta::format_and_type(format, auth_type)),
            data: data.into(),
        }
    }
}

/// `<Chal>`: an authentication challenge (in a Status 401/407); `meta` has `<Type>`, `<Format>`
/// and `<NextNonce>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chal {
    pub meta: Meta,
}

/// `<SyncHdr>`. `<VerDTD>` is always [`VER_DTD`] and is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncHdr {
    pub ver_proto: ProtoVersion,
    /// `<SessionID>`: chosen by whoever opens the session (the server in Pkg#0, else the client).
    pub session_id: String,
    /// `<MsgID>`: 1 for the first message of a session, then counting up per sender.
    pub msg_id: u32,
    /// `<Target>`: the recipient (server URI or device id).
    pub target: Location,
    /// `<Source>`: the sender (device id or server URI); `loc_name` is the user name for auth.
    pub source: Location,
    /// `<RespURI>`: where the recipient sends its next message.
    pub resp_uri: Option<String>,
    /// `<NoResp/>`: no Status for the header is wanted.
    pub no_resp: bool,
    pub cred: Option<Cred>,
    /// `<Meta>`: usually `MaxMsgSize` / `MaxObjSize`.
    pub meta: Option<Meta>,
}

impl SyncHdr {
    /// A header with the required fields; the optional ones are empty.
    pub fn new(
        ver_proto: ProtoVersion,
        session_id: impl Into<String>,
        msg_id: u32,
        target_uri: impl Into<String>,
        source_uri: impl Into<String>,
    ) -> Self {
        Self {
            ver_proto,
            session_id: session_id.into(),
            msg_id,
            target: Location::uri(target_uri),
            source: Location::uri(source_uri),
            resp_uri: None,
            no_resp: false,
            cred: None,
            meta: None,
        }
    }

    /// Sets `<Cred>`.
    pub fn with_cred(mut self, cred: Cred) -> Self {
        self.cred = Some(cred);
        self
    }

    /// Sets `<Meta>`.
    pub fn with_meta(mut self, meta: Meta) -> Self {
        self.meta = Some(meta);
        self
    }

    /// Sets `<RespURI>`.
    pub fn with_resp_uri(mut self, resp_uri: impl Into<String>) -> Self {
        self.resp_uri = Some(resp_uri.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_version_parses_only_dm_12_and_13() {
        assert_eq!("DM/1.2".parse(), Ok(ProtoVersion::Dm12));
        assert_eq!("DM/1.3".parse(), Ok(ProtoVersion::Dm13));
        assert_eq!(
            "DM/1.1".parse::<ProtoVersion>(),
            Err(UnknownProtoVersion("DM/1.1".into()))
        );
        assert_eq!(ProtoVersion::Dm13.to_string(), "DM/1.3");
    }
}
