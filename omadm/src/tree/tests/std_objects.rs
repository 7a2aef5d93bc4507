//! DevInfo, DevDetail, DMAcc.

use super::super::std_objects::{
    account_auth, install_standard_objects, set_account_nonce, AppAuthConfig, AuthLevel,
    DevDetailConfig, DevInfoConfig, DeviceConfig, DmAccountConfig,
};
use super::*;

fn device_config() -> DeviceConfig {
    DeviceConfig {
        dev_info: DevInfoConfig {
            dev_id: "IMEI:0001".into(),
            manufacturer: "virmo".into(),
            model: "agent".into(),
            dm_version: "1.3".into(),
            lang: "en-US".into(),
        },
        dev_detail: DevDetailConfig {
            dev_type: "hypervisor".into(),
            oem: "virmo".into(),
            fw_version: "1".into(),
            sw_version: "0.1.0".into(),
            hw_version: "x86_64".into(),
            large_object: true,
        },
        accounts: vec![DmAccountConfig {
            account: "srv1acc".into(),
            server_id: "srv1".into(),
            name: "VirMO server".into(),
            pref_con_ref: String::new(),
            addr: "https://dm.example/dm".into(),
            addr_type: "URI".into(),
            port: Some(443),
            auth_pref: "DIGEST".into(),
            auths: vec![
                AppAuthConfig {
                    level: AuthLevel::Client,
                    auth_type: "DIGEST".into(),
                    name: "dev1".into(),
                    secret: "clientpw".into(),
                    nonce: b"cn".to_vec(),
                },
                AppAuthConfig {
                    level: AuthLevel::Server,
                    auth_type: "DIGEST".into(),
                    name: "srv1".into(),
                    secret: "serverpw".into(),
                    nonce: b"sn".to_vec(),
                },
            ],
        }],
    }
}

#[test]
fn standard_objects() {
    let mut t = DmTree::new("Add=*&Get=*".parse().unwrap(), TreeLimits::default()).unwrap();
    install_standard_objects(&mut t, &device_config()).unwrap();
    assert_eq!(data(&t, S2, "./DevInfo/DevId").unwrap(), "IMEI:0001");
    assert_eq!(data(&t, S2, "./DevInfo/DmV").unwrap(), "1.3");
    assert_eq!(data(&t, S2, "./DevInfo").unwrap(), "DevId/DmV/Lang/Man/Mod");
    assert_eq!(data(&t, S2, "./DevDetail/LrgObj").unwrap(), "true");
    assert_eq!(data(&t, S2, "./DevDetail/URI/MaxDepth").unwrap(), "16");
    assert_eq!(
        t.add(S2, "./DevInfo/X", &chr("x")),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    assert_eq!(
        t.delete(S2, "./DevInfo/DevId"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    // The account belongs to srv1.
    let acc = "./DMAcc/srv1acc";
    assert_eq!(
        data(&t, S1, &format!("{acc}/AppAddr/1/Addr")).unwrap(),
        "https://dm.example/dm"
    );
    assert_eq!(
        data(&t, S1, &format!("{acc}/AppAddr/1/Port/1/PortNbr")).unwrap(),
        "443"
    );
    assert_eq!(
        t.get(S2, &format!("{acc}/ServerID")),
        Err(StatusCode::PERMISSION_DENIED)
    );
    let secret = format!("{acc}/AppAuth/1/AAuthSecret");
    assert_eq!(t.get(S1, &secret), Err(StatusCode::COMMAND_NOT_ALLOWED));
    assert_eq!(t.replace(S1, &secret, &chr("newpw")), Ok(StatusCode::OK));
    assert_eq!(
        t.copy(S1, &secret, "./Leak"),
        Err(StatusCode::COMMAND_NOT_ALLOWED)
    );
    let clcred = account_auth(&t, "srv1", AuthLevel::Client).unwrap();
    assert_eq!(
        (clcred.name.as_str(), clcred.secret.as_str()),
        ("dev1", "newpw")
    );
    assert!(set_account_nonce(
        &mut t,
        "srv1",
        AuthLevel::Server,
        b"next"
    ));
    assert_eq!(
        account_auth(&t, "srv1", AuthLevel::Server).unwrap().nonce,
        b"next"
    );
    assert!(account_auth(&t, "srv9", AuthLevel::Server).is_none());
    // A Pkg#0 from srv1 verifies with the SRVCRED secret and nonce stored in the tree.
    let n = crate::notification::Notification {
        version: crate::notification::VERSION_1_2,
        ui_mode: crate::notification::UiMode::Background,
        initiator: crate::notification::Initiator::Server,
        session_id: 7,
        server_id: "srv1".into(),
        vendor_specific: Vec::new(),
    };
    let msg = crate::notification::encode(&n, "serverpw", b"next").unwrap();
    let lookup =
        |id: &str| account_auth(&t, id, AuthLevel::Server).map(|a| (a.secret, vec![a.nonce]));
    assert_eq!(crate::notification::verify(&msg, lookup), Ok(n));
    // The server may delete its own account.
    assert_eq!(t.delete(S1, acc), Ok(StatusCode::OK));
    assert!(account_auth(&t, "srv1", AuthLevel::Client).is_none());
    assert_bytes_consistent(&t);
}
