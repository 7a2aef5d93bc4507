//! Generic Alert (1226): how the device reports an event or the outcome of an asynchronous Exec.

use crate::model::{Alert, Data, Item, Meta};

/// One Generic Alert the agent wants delivered. Queued while no session runs, sent in the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericAlert {
    /// The `Correlator` of the Exec this answers, if any.
    pub correlator: Option<String>,
    /// `Item/Source/LocURI`: the node the alert is about (e.g. `./VirMO/VM/work/Operations/Suspend`).
    pub source: Option<String>,
    /// `Meta/Type`: the alert type URN (e.g. `urn:oma:at:virmo:1.0:OperationComplete`).
    pub alert_type: String,
    /// `Meta/Format` of the data (e.g. `int`, `chr`).
    pub format: String,
    /// `Meta/Mark`: `critical`, `major`, `minor`, `informational`...
    pub mark: Option<String>,
    /// `Item/Data` (e.g. the result code `1200`).
    pub data: Option<Data>,
}

impl GenericAlert {
    /// An alert of `alert_type` with `data` in `format`.
    pub fn new(
        alert_type: impl Into<String>,
        format: impl Into<String>,
        data: impl Into<Data>,
    ) -> Self {
        Self {
            correlator: None,
            source: None,
            alert_type: alert_type.into(),
            format: format.into(),
            mark: None,
            data: Some(data.into()),
        }
    }

    /// Sets the correlator of the Exec it answers.
    pub fn with_correlator(mut self, correlator: impl Into<String>) -> Self {
        self.correlator = Some(correlator.into());
        self
    }

    /// Sets the source node.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the mark.
    pub fn with_mark(mut self, mark: impl Into<String>) -> Self {
        self.mark = Some(mark.into());
        self
    }

    /// The `<Alert>` command (CmdID assigned when sent).
    pub fn to_alert(&self) -> Alert {
        let meta = Meta {
            type_: Some(self.alert_type.clone()),
            format: Some(self.format.clone()),
            mark: self.mark.clone(),
            ..Meta::default()
        };
        let mut item = Item::default().with_meta(meta);
        if let Some(source) = &self.source {
            item = item.with_source(source.clone());
        }
        item.data = self.data.clone();
        Alert::generic(0, self.correlator.clone(), vec![item])
    }

    /// Reads the first item of a received Generic Alert (`None` unless code 1226 with an item).
    pub fn from_alert(alert: &Alert) -> Option<Self> {
        if alert.data != crate::model::AlertCode::GENERIC_ALERT {
            return None;
        }
        let item = alert.items.first()?;
        let meta = item.meta.clone().unwrap_or_default();
        Some(Self {
            correlator: alert.correlator.clone(),
            source: item.source_uri().map(str::to_owned),
            alert_type: meta.type_.unwrap_or_default(),
            format: meta.format.unwrap_or_default(),
            mark: meta.mark,
            data: item.data.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_an_alert_command() {
        let alert = GenericAlert::new("urn:oma:at:virmo:1.0:OperationComplete", "int", "1200")
            .with_correlator("op-7")
            .with_source("./VirMO/VM/work/Operations/Suspend")
            .with_mark("informational");
        let command = alert.to_alert();
        assert_eq!(command.data, crate::model::AlertCode::GENERIC_ALERT);
        assert_eq!(GenericAlert::from_alert(&command), Some(alert));
    }
}
