//! `[privacy]`: what the server may show of individual operators. Art. 4 of the Workers'
//! Statute (L. 300/1970) restricts tools that can monitor individual workers to what a union
//! agreement (or an authorisation) allows: so operator accounting is reported per group and
//! supplier by default, and per operator only where this section enables it, naming the
//! agreement; such rows are read only by the WORKFORCE role, every read is audited, and the
//! per-operator records are purged after `operator_retention_days` (see docs/privacy.md).

use serde::Deserialize;

/// `[privacy]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    /// Allow per-operator rows in `GetOperatorReport` (off by default: group and supplier totals
    /// only). Needs `agreement`.
    pub per_operator_reports: bool,
    /// Allow the live per-operator view in `GetSnapshot` (each logged-in operator's status,
    /// pause reason and time in status): off by default, when the snapshot gives counts per
    /// group and status only. Needs `agreement`; who reads it is audited.
    pub live_operator_view: bool,
    /// The reference of the union agreement (or authorisation) allowing per-operator reports,
    /// e.g. "Accordo sindacale 12/2026, art. 3"; required when they are enabled, at most 256
    /// printable characters. Logged at start-up.
    pub agreement: String,
    /// Operator state records (the per-operator accounting every report is folded from) older
    /// than this are purged, days (1..=3660). Reports, group totals included, reach back only
    /// this far.
    pub operator_retention_days: u32,
}

impl Default for PrivacySection {
    fn default() -> Self {
        PrivacySection {
            per_operator_reports: false,
            live_operator_view: false,
            agreement: String::new(),
            operator_retention_days: 93,
        }
    }
}

impl PrivacySection {
    /// Checks the section: `Err((key, problem))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (on, key) in
            [(self.per_operator_reports, "per_operator_reports"), (self.live_operator_view, "live_operator_view")]
        {
            if on && self.agreement.trim().is_empty() {
                return Err((
                    "privacy.agreement".into(),
                    format!(
                        "{key} = true needs the reference of the union agreement (or authorisation) that allows it"
                    ),
                ));
            }
        }
        if self.agreement.chars().count() > 256 || self.agreement.chars().any(smista_core::error::is_hazard) {
            return Err(("privacy.agreement".into(), "at most 256 printable characters".into()));
        }
        if !(1..=3660).contains(&self.operator_retention_days) {
            return Err(("privacy.operator_retention_days".into(), "must be 1..=3660".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_operator_reports_need_the_agreement() {
        assert!(PrivacySection::default().validate().is_ok());
        let on = PrivacySection { per_operator_reports: true, ..PrivacySection::default() };
        assert_eq!(on.validate().unwrap_err().0, "privacy.agreement");
        let agreed = PrivacySection { agreement: "Accordo 12/2026".into(), ..on };
        assert!(agreed.validate().is_ok());
        let live = PrivacySection { live_operator_view: true, ..PrivacySection::default() };
        assert_eq!(live.validate().unwrap_err().0, "privacy.agreement");
    }
}
