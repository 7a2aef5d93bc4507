//! Access control lists (OMA-TS-DM_TND 1.2, "ACL"): `Add=*&Get=srv1+srv2&Replace=srv1`.
//!
//! Rules this module and [`super::DmTree`] implement:
//! - A node whose ACL is empty inherits its parent's ACL, up to the root, which always has one.
//! - A non-empty ACL applies as a whole: a command it does not name is refused to every server
//!   (no per-command inheritance).
//! - `*` grants a command to every server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The commands an ACL can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclCommand {
    Add,
    Delete,
    Exec,
    Get,
    Replace,
}

impl AclCommand {
    pub const ALL: [Self; 5] = [
        Self::Add,
        Self::Delete,
        Self::Exec,
        Self::Get,
        Self::Replace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "Add",
            Self::Delete => "Delete",
            Self::Exec => "Exec",
            Self::Get => "Get",
            Self::Replace => "Replace",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|cmd| cmd.as_str() == s)
    }
}

/// The servers a command is granted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantees {
    /// `*`.
    Everyone,
    /// A list of server IDs (`srv1+srv2`).
    Servers(BTreeSet<String>),
}

impl Grantees {
    fn allows(&self, server_id: &str) -> bool {
        match self {
            Self::Everyone => true,
            Self::Servers(ids) => ids.contains(server_id),
        }
    }
}

/// Why an ACL string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("ACL entry `{0}` is not `<Command>=<servers>`")]
    MalformedEntry(String),
    #[error("ACL names the unknown command `{0}`")]
    UnknownCommand(String),
    #[error("ACL entry for {0} has an empty server ID")]
    EmptyServerId(&'static str),
    #[error("ACL entry for {command} has the invalid server ID `{id}`")]
    InvalidServerId { command: &'static str, id: String },
}

/// A parsed ACL. The empty ACL means "inherit from the parent".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    entries: BTreeMap<AclCommand, Grantees>,
}

impl Acl {
    /// The empty ACL (inherits).
    pub fn inherit() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Grants `command` to `server_id` (merged with what is already granted).
    pub fn grant(mut self, command: AclCommand, server_id: &str) -> Self {
        match self
            .entries
            .entry(command)
            .or_insert_with(|| Grantees::Servers(BTreeSet::new()))
        {
            Grantees::Everyone => {}
            Grantees::Servers(ids) => {
                ids.insert(server_id.to_owned());
            }
        }
        self
    }

    /// Grants `command` to every server.
    pub fn grant_everyone(mut self, command: AclCommand) -> Self {
        self.entries.insert(command, Grantees::Everyone);
        self
    }

    /// Whether this (non-empty) ACL lets `server_id` run `command`.
    pub fn allows(&self, command: AclCommand, server_id: &str) -> bool {
        self.entries
            .get(&command)
            .is_some_and(|g| g.allows(server_id))
    }

    pub fn grantees(&self, command: AclCommand) -> Option<&Grantees> {
        self.entries.get(&command)
    }
}

fn valid_server_id(id: &str) -> bool {
    !id.chars()
        .any(|c| matches!(c, '&' | '+' | '=' | '*') || c.is_whitespace())
}

impl FromStr for Acl {
    type Err = AclError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut acl = Acl::default();
        if s.is_empty() {
            return Ok(acl);
        }
        for entry in s.split('&') {
            let (cmd, servers) = entry
                .split_once('=')
                .ok_or_else(|| AclError::MalformedEntry(entry.to_owned()))?;
            let command =
                AclCommand::parse(cmd).ok_or_else(|| AclError::UnknownCommand(cmd.to_owned()))?;
            // A wildcard overrides server IDs listed with it (TND "ACL syntax").
            if servers.split('+').any(|id| id == "*") {
                acl.entries.insert(command, Grantees::Everyone);
                continue;
            }
            for id in servers.split('+') {
                if id.is_empty() {
                    return Err(AclError::EmptyServerId(command.as_str()));
                }
                if !valid_server_id(id) {
                    return Err(AclError::InvalidServerId {
                        command: command.as_str(),
                        id: id.to_owned(),
                    });
                }
                acl = acl.grant(command, id);
            }
        }
        Ok(acl)
    }
}

impl fmt::Display for Acl {
    /// Canonical form: commands in alphabetical order, server IDs sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (command, grantees)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            write!(f, "{}=", command.as_str())?;
            match grantees {
                Grantees::Everyone => f.write_str("*")?,
                Grantees::Servers(ids) => {
                    let joined: Vec<&str> = ids.iter().map(String::as_str).collect();
                    f.write_str(&joined.join("+"))?;
                }
            }
        }
        Ok(())
    }
}

impl Serialize for Acl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Acl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let acl: Acl = "Get=*&Replace=srv1+srv2&Exec=srv1".parse().unwrap();
        assert!(acl.allows(AclCommand::Get, "anyone"));
        assert!(acl.allows(AclCommand::Replace, "srv2"));
        assert!(!acl.allows(AclCommand::Replace, "srv3"));
        assert!(acl.allows(AclCommand::Exec, "srv1"));
        assert!(
            !acl.allows(AclCommand::Delete, "srv1"),
            "unnamed command is refused"
        );
        assert_eq!(acl.to_string(), "Exec=srv1&Get=*&Replace=srv1+srv2");
    }

    #[test]
    fn repeated_command_entries_merge() {
        let acl: Acl = "Get=a&Get=b".parse().unwrap();
        assert!(acl.allows(AclCommand::Get, "a") && acl.allows(AclCommand::Get, "b"));
        assert_eq!(acl.to_string(), "Get=a+b");
        let star: Acl = "Get=a+*".parse().unwrap();
        assert_eq!(star.to_string(), "Get=*");
    }

    #[test]
    fn empty_is_inherit() {
        let acl: Acl = "".parse().unwrap();
        assert!(acl.is_empty());
        assert_eq!(acl, Acl::inherit());
    }

    #[test]
    fn bad_acls_are_typed_errors() {
        assert_eq!(
            "Get".parse::<Acl>(),
            Err(AclError::MalformedEntry("Get".into()))
        );
        assert_eq!(
            "Copy=*".parse::<Acl>(),
            Err(AclError::UnknownCommand("Copy".into()))
        );
        assert_eq!(
            "Get=a++b".parse::<Acl>(),
            Err(AclError::EmptyServerId("Get"))
        );
        assert_eq!("Get=".parse::<Acl>(), Err(AclError::EmptyServerId("Get")));
        assert!(matches!(
            "Get=a b".parse::<Acl>(),
            Err(AclError::InvalidServerId { .. })
        ));
        assert!(matches!(
            "Get=a&".parse::<Acl>(),
            Err(AclError::MalformedEntry(_))
        ));
    }

    #[test]
    fn builder_and_serde_round_trip() {
        let acl = Acl::inherit()
            .grant(AclCommand::Get, "s")
            .grant_everyone(AclCommand::Add)
            .grant(AclCommand::Add, "ignored-under-star");
        assert_eq!(acl.to_string(), "Add=*&Get=s");
        let json = serde_json::to_string(&acl).unwrap();
        assert_eq!(json, "\"Add=*&Get=s\"");
        assert_eq!(serde_json::from_str::<Acl>(&json).unwrap(), acl);
        assert!(serde_json::from_str::<Acl>("\"Bogus=*\"").is_err());
    }
}
