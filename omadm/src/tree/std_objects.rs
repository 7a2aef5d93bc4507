//! The standard management objects every DM device has: DevInfo, DevDetail and DMAcc (DM 1.2
//! "DMAcc" layout, OMA-TS-DM_StdObj 1.2), built from a small config.

use super::{AccessTypes, Acl, AclCommand, DmTree, DmUri, Format, Node, Scope, TreeError};

/// `./DevInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfoConfig {
    pub dev_id: String,
    pub manufacturer: String,
    pub model: String,
    /// `DmV`, e.g. "1.3".
    pub dm_version: String,
    pub lang: String,
}

/// `./DevDetail` (the URI limits come from the tree's own limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevDetailConfig {
    pub dev_type: String,
    pub oem: String,
    pub fw_version: String,
    pub sw_version: String,
    pub hw_version: String,
    /// `LrgObj`: whether the device supports large objects.
    pub large_object: bool,
}

/// Which direction a credential authenticates (`AAuthLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    /// `SRVCRED`: the server proves itself to the client.
    Server,
    /// `CLCRED`: the client proves itself to the server.
    Client,
}

impl AuthLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "SRVCRED",
            Self::Client => "CLCRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SRVCRED" => Some(Self::Server),
            "CLCRED" => Some(Self::Client),
            _ => None,
        }
    }
}

/// One `AppAuth/<x>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAuthConfig {
    pub level: AuthLevel,
    /// `AAuthType`: "BASIC", "DIGEST" or "HMAC".
    pub auth_type: String,
    pub name: String,
    pub secret: String,
    /// `AAuthData`: the current nonce.
    pub nonce: Vec<u8>,
}

/// One `./DMAcc/<account>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmAccountConfig {
    /// The `<x>` node name.
    pub account: String,
    pub server_id: String,
    pub name: String,
    pub pref_con_ref: String,
    /// `AppAddr/1/Addr`: the server URL.
    pub addr: String,
    /// `AppAddr/1/AddrType`: "URI" for an HTTP(S) URL.
    pub addr_type: String,
    /// `AppAddr/1/Port/1/PortNbr`, when the URL does not say.
    pub port: Option<u16>,
    /// `AAuthPref`: the preferred AAuthType.
    pub auth_pref: String,
    pub auths: Vec<AppAuthConfig>,
}

/// All standard objects of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub dev_info: DevInfoConfig,
    pub dev_detail: DevDetailConfig,
    pub accounts: Vec<DmAccountConfig>,
}

const GET: AccessTypes = AccessTypes::GET;
const GET_REPLACE: AccessTypes = AccessTypes::GET.union(AccessTypes::REPLACE);
const WRITE_ONLY: AccessTypes = AccessTypes::ADD.union(AccessTypes::REPLACE);

fn leaf(scope: Scope, format: Format, value: &str, access: AccessTypes) -> Node {
    Node::leaf(scope, format, value.as_bytes().to_vec(), 0).with_access(access)
}

fn put(tree: &mut DmTree, path: &[&str], node: Node) -> Result<(), TreeError> {
    tree.put_node(&DmUri::from_segments(path.iter().copied()), node)
}

/// Installs DevInfo, DevDetail and DMAcc.
pub fn install_standard_objects(tree: &mut DmTree, config: &DeviceConfig) -> Result<(), TreeError> {
    install_dev_info(tree, &config.dev_info)?;
    install_dev_detail(tree, &config.dev_detail)?;
    put(
        tree,
        &["DMAcc"],
        Node::interior(Scope::Permanent, 0).with_access(GET.union(AccessTypes::ADD)),
    )?;
    for account in &config.accounts {
        install_account(tree, account)?;
    }
    Ok(())
}

/// The permanent, read-only interior node `object` with the text leaves `leaves` (name, value).
fn install_read_only(
    tree: &mut DmTree,
    object: &str,
    leaves: &[(&str, &str)],
) -> Result<(), TreeError> {
    put(
        tree,
        &[object],
        Node::interior(Scope::Permanent, 0).with_access(GET),
    )?;
    for (name, value) in leaves {
        put(
            tree,
            &[object, name],
            leaf(Scope::Permanent, Format::Chr, value, GET),
        )?;
    }
    Ok(())
}

fn install_dev_info(tree: &mut DmTree, c: &DevInfoConfig) -> Result<(), TreeError> {
    install_read_only(
        tree,
        "DevInfo",
        &[
            ("DevId", &c.dev_id),
            ("Man", &c.manufacturer),
            ("Mod", &c.model),
            ("DmV", &c.dm_version),
            ("Lang", &c.lang),
        ],
    )
}

fn install_dev_detail(tree: &mut DmTree, c: &DevDetailConfig) -> Result<(), TreeError> {
    install_read_only(
        tree,
        "DevDetail",
        &[
            ("DevTyp", &c.dev_type),
            ("OEM", &c.oem),
            ("FwV", &c.fw_version),
            ("SwV", &c.sw_version),
            ("HwV", &c.hw_version),
        ],
    )?;
    let lrg = if c.large_object { "true" } else { "false" };
    put(
        tree,
        &["DevDetail", "LrgObj"],
        leaf(Scope::Permanent, Format::Bool, lrg, GET),
    )?;
    put(
        tree,
        &["DevDetail", "URI"],
        Node::interior(Scope::Permanent, 0).with_access(GET),
    )?;
    let limits = tree.limits().uri;
    for (name, value) in [
        ("MaxDepth", limits.max_depth),
        ("MaxTotLen", limits.max_total_len),
        ("MaxSegLen", limits.max_segment_len),
    ] {
        let text = value.to_string();
        put(
            tree,
            &["DevDetail", "URI", name],
            leaf(Scope::Permanent, Format::Chr, &text, GET),
        )?;
    }
    Ok(())
}

fn install_account(tree: &mut DmTree, a: &DmAccountConfig) -> Result<(), TreeError> {
    let base = ["DMAcc", a.account.as_str()];
    fn at<'a>(base: &[&'a str; 2], rest: &[&'a str]) -> Vec<&'a str> {
        base.iter().copied().chain(rest.iter().copied()).collect()
    }
    let owner = [
        AclCommand::Add,
        AclCommand::Delete,
        AclCommand::Get,
        AclCommand::Replace,
    ]
    .into_iter()
    .fold(Acl::inherit(), |acl, cmd| acl.grant(cmd, &a.server_id));
    let interior = || Node::interior(Scope::Dynamic, 0);
    put(tree, &base, interior().with_acl(owner))?;
    let chr = |v: &str| leaf(Scope::Dynamic, Format::Chr, v, GET_REPLACE);
    put(tree, &at(&base, &["AppID"]), chr("w7"))?;
    put(tree, &at(&base, &["ServerID"]), chr(&a.server_id))?;
    put(tree, &at(&base, &["Name"]), chr(&a.name))?;
    put(tree, &at(&base, &["PrefConRef"]), chr(&a.pref_con_ref))?;
    put(tree, &at(&base, &["AAuthPref"]), chr(&a.auth_pref))?;
    put(tree, &at(&base, &["AppAddr"]), interior())?;
    put(tree, &at(&base, &["AppAddr", "1"]), interior())?;
    put(tree, &at(&base, &["AppAddr", "1", "Addr"]), chr(&a.addr))?;
    put(
        tree,
        &at(&base, &["AppAddr", "1", "AddrType"]),
        chr(&a.addr_type),
    )?;
    if let Some(port) = a.port {
        put(tree, &at(&base, &["AppAddr", "1", "Port"]), interior())?;
        put(tree, &at(&base, &["AppAddr", "1", "Port", "1"]), interior())?;
        let nbr = leaf(Scope::Dynamic, Format::Int, &port.to_string(), GET_REPLACE);
        put(
            tree,
            &at(&base, &["AppAddr", "1", "Port", "1", "PortNbr"]),
            nbr,
        )?;
    }
    put(tree, &at(&base, &["AppAuth"]), interior())?;
    for (i, auth) in a.auths.iter().enumerate() {
        let n = (i + 1).to_string();
        put(tree, &at(&base, &["AppAuth", &n]), interior())?;
        put(
            tree,
            &at(&base, &["AppAuth", &n, "AAuthLevel"]),
            chr(auth.level.as_str()),
        )?;
        put(
            tree,
            &at(&base, &["AppAuth", &n, "AAuthType"]),
            chr(&auth.auth_type),
        )?;
        put(
            tree,
            &at(&base, &["AppAuth", &n, "AAuthName"]),
            chr(&auth.name),
        )?;
        let secret = leaf(Scope::Dynamic, Format::Chr, &auth.secret, WRITE_ONLY);
        put(tree, &at(&base, &["AppAuth", &n, "AAuthSecret"]), secret)?;
        let nonce =
            Node::leaf(Scope::Dynamic, Format::Bin, auth.nonce.clone(), 0).with_access(GET_REPLACE);
        put(tree, &at(&base, &["AppAuth", &n, "AAuthData"]), nonce)?;
    }
    Ok(())
}

/// A credential of a DM account as stored in the tree (read on the device side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuth {
    /// `./DMAcc/<x>/AppAuth/<n>`.
    pub uri: DmUri,
    pub level: AuthLevel,
    pub auth_type: String,
    pub name: String,
    pub secret: String,
    pub nonce: Vec<u8>,
}

fn text(tree: &DmTree, uri: &DmUri) -> Option<String> {
    tree.device_read(uri)
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
}

/// The `./DMAcc/<x>` whose ServerID is `server_id`.
pub fn find_account(tree: &DmTree, server_id: &str) -> Option<DmUri> {
    let dmacc = DmUri::from_segments(["DMAcc"]);
    tree.device_children(&dmacc)
        .into_iter()
        .map(|x| dmacc.child(&x))
        .find(|acc| text(tree, &acc.child("ServerID")).as_deref() == Some(server_id))
}

/// The credentials of `server_id`'s account at `level`.
pub fn account_auth(tree: &DmTree, server_id: &str, level: AuthLevel) -> Option<StoredAuth> {
    let app_auth = find_account(tree, server_id)?.child("AppAuth");
    tree.device_children(&app_auth)
        .into_iter()
        .map(|n| app_auth.child(&n))
        .find_map(|uri| {
            let stored = StoredAuth {
                level: AuthLevel::parse(&text(tree, &uri.child("AAuthLevel"))?)?,
                auth_type: text(tree, &uri.child("AAuthType"))?,
                name: text(tree, &uri.child("AAuthName"))?,
                secret: text(tree, &uri.child("AAuthSecret"))?,
                nonce: tree.device_read(&uri.child("AAuthData"))?.to_vec(),
                uri,
            };
            (stored.level == level).then_some(stored)
        })
}

/// Stores a new nonce (NextNonce) for `server_id`'s credential at `level`; false if absent.
pub fn set_account_nonce(
    tree: &mut DmTree,
    server_id: &str,
    level: AuthLevel,
    nonce: &[u8],
) -> bool {
    let Some(auth) = account_auth(tree, server_id, level) else {
        return false;
    };
    tree.device_write(&auth.uri.child("AAuthData"), nonce)
}
