//! `./DevInfo`: what the client tells the server in package 1 (Replace with one item per leaf).

use crate::model::{format, Item, ItemCommand, Meta};

/// The DevInfo leaves sent in package 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    pub dev_id: String,
    pub man: String,
    pub model: String,
    /// `DmV`: the DM client version (e.g. `1.3`).
    pub dm_version: String,
    pub lang: String,
}

impl DevInfo {
    const LEAVES: [&'static str; 5] = ["DevId", "Man", "Mod", "DmV", "Lang"];

    /// The Replace of package 1 (CmdID assigned when sent).
    pub fn to_replace(&self) -> ItemCommand {
        let values = [
            &self.dev_id,
            &self.man,
            &self.model,
            &self.dm_version,
            &self.lang,
        ];
        let items = Self::LEAVES
            .iter()
            .zip(values)
            .map(|(leaf, value)| {
                Item::source(format!("./DevInfo/{leaf}"))
                    .with_meta(Meta::with_format(format::CHR))
                    .with_data(value.as_str())
            })
            .collect();
        ItemCommand::new(0, items)
    }

    /// Reads a DevInfo Replace (`None` when it names no `./DevInfo/DevId`).
    pub fn from_items(items: &[crate::model::Item]) -> Option<Self> {
        let value = |leaf: &str| -> Option<String> {
            let uri = format!("./DevInfo/{leaf}");
            items
                .iter()
                .find(|item| item.source_uri() == Some(uri.as_str()))
                .and_then(|item| item.data.as_ref())
                .map(|data| data.to_string_lossy().into_owned())
        };
        Some(Self {
            dev_id: value("DevId")?,
            man: value("Man").unwrap_or_default(),
            model: value("Mod").unwrap_or_default(),
            dm_version: value("DmV").unwrap_or_default(),
            lang: value("Lang").unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_replace() {
        let info = DevInfo {
            dev_id: "virmo:host-1".into(),
            man: "VirMO".into(),
            model: "agent".into(),
            dm_version: "1.3".into(),
            lang: "en-US".into(),
        };
        let replace = info.to_replace();
        assert_eq!(replace.items.len(), 5);
        assert_eq!(DevInfo::from_items(&replace.items), Some(info));
        assert_eq!(DevInfo::from_items(&[]), None);
    }
}
