//! The device's DM tree: DevInfo, DevDetail, DMAcc (from the account in the database) and the
//! VirMO object mounted on `./VirMO`.

use std::sync::Arc;

use omadm::auth::AuthScheme;
use omadm::tree::std_objects::{
    account_auth, install_standard_objects, AppAuthConfig, AuthLevel, DevDetailConfig,
    DevInfoConfig, DeviceConfig, DmAccountConfig,
};
use omadm::tree::{
    AccessTypes, Acl, AclCommand, DmTree, DmUri, Node, Scope, TreeError, TreeLimits,
};

use super::virmo_mo::{VirmoMo, MOUNT};
use crate::config::{AgentConfig, ServerConfig};
use crate::store::AccountRecord;
use crate::supervisor::Supervisor;

/// The `./DMAcc/<x>` node name of the agent's account.
pub const ACCOUNT_NODE: &str = "virmo";

/// `./DevInfo` as the session sends it.
pub fn dev_info(config: &AgentConfig, dev_id: &str) -> omadm::session::DevInfo {
    omadm::session::DevInfo {
        dev_id: dev_id.to_owned(),
        man: config.device.manufacturer.clone(),
        model: config.device.model.clone(),
        dm_version: "1.3".into(),
        lang: "en-US".into(),
    }
}

/// The account as seeded from `[server]` (nonces empty).
pub fn seed_account(server: &ServerConfig) -> AccountRecord {
    let auth_type = server.auth.scheme().dmacc_type().to_owned();
    let seed = crate::bundle::hex(&{
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            server.url.as_str(),
            &server.server_id,
            &auth_type,
            &server.client_name,
            &server.client_secret,
            server.server_name(),
            &server.server_secret,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.finalize()
    });
    AccountRecord {
        seed,
        server_url: server.url.clone(),
        server_id: server.server_id.clone(),
        auth_type,
        client_name: server.client_name.clone(),
        client_secret: server.client_secret.clone(),
        server_name: server.server_name().to_owned(),
        server_secret: server.server_secret.clone(),
        client_nonce: Vec::new(),
        server_nonce: Vec::new(),
        previous_server_nonces: Vec::new(),
    }
}

/// Builds the tree.
pub fn build(
    config: &AgentConfig,
    dev_id: &str,
    account: Option<&AccountRecord>,
    sup: Arc<Supervisor>,
) -> Result<DmTree, TreeError> {
    let mut root_acl = Acl::inherit();
    if let Some(account) = account {
        for command in AclCommand::ALL {
            root_acl = root_acl.grant(command, &account.server_id);
        }
    } else {
        root_acl = root_acl
            .grant(AclCommand::Add, "*")
            .grant(AclCommand::Get, "*");
    }
    let mut tree = DmTree::new(root_acl, TreeLimits::default())?;
    let accounts = account
        .map(|a| {
            vec![DmAccountConfig {
                account: ACCOUNT_NODE.into(),
                server_id: a.server_id.clone(),
                name: a.server_id.clone(),
                pref_con_ref: String::new(),
                addr: a.server_url.clone(),
                addr_type: "URI".into(),
                port: None,
                auth_pref: a.auth_type.clone(),
                auths: vec![
                    AppAuthConfig {
                        level: AuthLevel::Client,
                        auth_type: a.auth_type.clone(),
                        name: a.client_name.clone(),
                        secret: a.client_secret.clone(),
                        nonce: a.client_nonce.clone(),
                    },
                    AppAuthConfig {
                        level: AuthLevel::Server,
                        auth_type: a.auth_type.clone(),
                        name: a.server_name.clone(),
                        secret: a.server_secret.clone(),
                        nonce: a.server_nonce.clone(),
                    },
                ],
            }]
        })
        .unwrap_or_default();
    install_standard_objects(
        &mut tree,
        &DeviceConfig {
            dev_info: DevInfoConfig {
                dev_id: dev_id.to_owned(),
                manufacturer: config.device.manufacturer.clone(),
                model: config.device.model.clone(),
                dm_version: "1.3".into(),
                lang: "en-US".into(),
            },
            dev_detail: DevDetailConfig {
                dev_type: "virtualization host".into(),
                oem: config.device.manufacturer.clone(),
                fw_version: kernel_release(),
                sw_version: format!("virmo-agent {}", env!("CARGO_PKG_VERSION")),
                hw_version: std::env::consts::ARCH.into(),
                large_object: true,
            },
            accounts,
        },
    )?;
    let mount = DmUri::from_segments([MOUNT]);
    tree.put_node(
        &mount,
        Node::interior(Scope::Permanent, 0).with_access(AccessTypes::GET),
    )?;
    tree.mount(
        &mount,
        Box::new(VirmoMo::new(sup, config.device.manufacturer.clone())),
    )?;
    Ok(tree)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The account as the tree holds it now (the server may have replaced its address or secrets
/// during a session).
pub fn account_from_tree(tree: &DmTree, previous: &AccountRecord) -> AccountRecord {
    let mut account = previous.clone();
    let acc = DmUri::from_segments(["DMAcc", ACCOUNT_NODE]);
    if let Some(addr) = tree
        .device_read(&acc.child("AppAddr").child("1").child("Addr"))
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
    {
        account.server_url = addr;
    }
    if let Some(client) = account_auth(tree, &previous.server_id, AuthLevel::Client) {
        if AuthScheme::from_dmacc_type(&client.auth_type).is_some() {
            account.auth_type = client.auth_type;
        }
        account.client_name = client.name;
        account.client_secret = client.secret;
    }
    if let Some(server) = account_auth(tree, &previous.server_id, AuthLevel::Server) {
        account.server_name = server.name;
        account.server_secret = server.secret;
    }
    account
}
