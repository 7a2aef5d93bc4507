//! The element names of SyncML 1.2 (WBXML code page 0) and MetInf 1.2 (code page 1), with their
//! WBXML tokens (WAP-192 / SyncML RepPro "WBXML tokens"; same values as libwbxml's tables).

/// The XML namespace of SyncML 1.2 elements (code page 0).
pub const SYNCML_NS: &str = "SYNCML:SYNCML1.2";
/// The XML namespace of MetInf elements (code page 1).
pub const METINF_NS: &str = "syncml:metinf";

/// WBXML code page of SyncML elements.
pub(crate) const PAGE_SYNCML: u8 = 0;
/// WBXML code page of MetInf elements.
pub(crate) const PAGE_METINF: u8 = 1;

/// Page 0 is SyncML ([`PAGE_SYNCML`]), page 1 MetInf ([`PAGE_METINF`]).
macro_rules! tags {
    ($( $tag:ident = ($page:literal, $token:literal, $dm:literal) ),* $(,)?) => {
        /// A SyncML or MetInf element name (variants spelled exactly as the element names).
        #[expect(
            clippy::upper_case_acronyms,
            reason = "variant names are the element names (EMI), written out by stringify!"
        )]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Tag { $( $tag ),* }

        impl Tag {
            #[cfg(test)]
            const ALL: &'static [Tag] = &[ $( Tag::$tag ),* ];

            /// The element of `page` with WBXML `token` (content and attribute bits cleared).
            pub(crate) fn from_token(page: u8, token: u8) -> Option<Self> {
                match (page, token) {
                    $( ($page, $token) => Some(Tag::$tag), )*
                    _ => None,
                }
            }

            /// The element named `name` (SyncML and MetInf names do not collide).
            pub(crate) fn from_name(name: &[u8]) -> Option<Self> {
                match std::str::from_utf8(name).ok()? {
                    $( stringify!($tag) => Some(Tag::$tag), )*
                    _ => None,
                }
            }

            /// The element's local name.
            pub(crate) fn name(self) -> &'static str {
                match self { $( Tag::$tag => stringify!($tag) ),* }
            }

            /// The WBXML code page: [`PAGE_SYNCML`] or [`PAGE_METINF`].
            pub(crate) fn page(self) -> u8 {
                match self { $( Tag::$tag => $page ),* }
            }

            /// The WBXML tag token (without the attribute and content bits).
            pub(crate) fn token(self) -> u8 {
                match self { $( Tag::$tag => $token ),* }
            }

            /// Whether the OMA DM model uses the element. The others are valid SyncML (DS) that a
            /// DM peer does not send; the decoders answer them with 406.
            pub(crate) fn used_by_dm(self) -> bool {
                match self { $( Tag::$tag => $dm ),* }
            }
        }
    };
}

tags! {
    Add = (0, 0x05, true),
    Alert = (0, 0x06, true),
    Archive = (0, 0x07, false),
    Atomic = (0, 0x08, true),
    Chal = (0, 0x09, true),
    Cmd = (0, 0x0a, true),
    CmdID = (0, 0x0b, true),
    CmdRef = (0, 0x0c, true),
    Copy = (0, 0x0d, true),
    Cred = (0, 0x0e, true),
    Data = (0, 0x0f, true),
    Delete = (0, 0x10, true),
    Exec = (0, 0x11, true),
    Final = (0, 0x12, true),
    Get = (0, 0x13, true),
    Item = (0, 0x14, true),
    Lang = (0, 0x15, false),
    LocName = (0, 0x16, true),
    LocURI = (0, 0x17, true),
    Map = (0, 0x18, false),
    MapItem = (0, 0x19, false),
    Meta = (0, 0x1a, true),
    MsgID = (0, 0x1b, true),
    MsgRef = (0, 0x1c, true),
    NoResp = (0, 0x1d, true),
    NoResults = (0, 0x1e, false),
    Put = (0, 0x1f, false),
    Replace = (0, 0x20, true),
    RespURI = (0, 0x21, true),
    Results = (0, 0x22, true),
    Search = (0, 0x23, false),
    Sequence = (0, 0x24, true),
    SessionID = (0, 0x25, true),
    SftDel = (0, 0x26, false),
    Source = (0, 0x27, true),
    SourceRef = (0, 0x28, true),
    Status = (0, 0x29, true),
    Sync = (0, 0x2a, false),
    SyncBody = (0, 0x2b, true),
    SyncHdr = (0, 0x2c, true),
    SyncML = (0, 0x2d, true),
    Target = (0, 0x2e, true),
    TargetRef = (0, 0x2f, true),
    VerDTD = (0, 0x31, true),
    VerProto = (0, 0x32, true),
    NumberOfChanges = (0, 0x33, false),
    MoreData = (0, 0x34, true),
    Field = (0, 0x35, false),
    Filter = (0, 0x36, false),
    Record = (0, 0x37, false),
    FilterType = (0, 0x38, false),
    SourceParent = (0, 0x39, false),
    TargetParent = (0, 0x3a, false),
    Move = (0, 0x3b, false),
    Correlator = (0, 0x3c, true),
    Anchor = (1, 0x05, false),
    EMI = (1, 0x06, true),
    Format = (1, 0x07, true),
    FreeID = (1, 0x08, false),
    FreeMem = (1, 0x09, false),
    Last = (1, 0x0a, false),
    Mark = (1, 0x0b, true),
    MaxMsgSize = (1, 0x0c, true),
    Mem = (1, 0x0d, false),
    MetInf = (1, 0x0e, false),
    Next = (1, 0x0f, false),
    NextNonce = (1, 0x10, true),
    SharedMem = (1, 0x11, false),
    Size = (1, 0x12, true),
    Type = (1, 0x13, true),
    Version = (1, 0x14, true),
    MaxObjSize = (1, 0x15, true),
    FieldLevel = (1, 0x16, false),
}

impl Tag {
    /// The XML namespace the element belongs to.
    pub(crate) fn namespace(self) -> &'static str {
        if self.page() == PAGE_METINF {
            METINF_NS
        } else {
            SYNCML_NS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tokens_are_unique_and_invertible() {
        for &tag in Tag::ALL {
            assert_eq!(Tag::from_name(tag.name().as_bytes()), Some(tag));
            assert_eq!(Tag::from_token(tag.page(), tag.token()), Some(tag));
            assert!(tag.token() >= 0x05 && tag.token() < 0x40, "{tag:?}");
        }
    }

    #[test]
    fn tokens_match_the_syncml_12_tables() {
        assert_eq!(Tag::SyncML.token(), 0x2d);
        assert_eq!(Tag::Correlator.token(), 0x3c);
        assert_eq!((Tag::NextNonce.page(), Tag::NextNonce.token()), (1, 0x10));
        assert_eq!((Tag::MaxObjSize.page(), Tag::MaxObjSize.token()), (1, 0x15));
        assert_eq!(Tag::from_token(PAGE_SYNCML, 0x30), None);
    }
}
