//! Devices at the edge (issue 16): the values an operator gives when
//! registering a device at a site, parsed once here.
//!
//! A device's name is a [`rule::slug`] (it shows in CLI tables and logs and
//! must never carry anything a config or subject could misread). Its limits
//! end up in the NATS user a site's leaf gives the device, so they are bounded
//! here: defaults from the seed (`data` 1 MiB/s, `subs` 100, `payload`
//! 64 KiB), and never above what a leaf accepts anyway (1 MiB payload).

use serde::Serialize;

use crate::validate::{FieldError, FieldErrors, rule};

/// A device's name, unique within its site: a slug (`[a-z0-9-]`, 1–63).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceName(String);

impl DeviceName {
    /// Parses a name exactly as given (the slug rule, no normalisation).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        rule::slug(raw).map_err(|m| FieldError::new("name", m))?;
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a device's NATS user may use at its leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceLimits {
    /// Largest message, in bytes.
    pub max_payload: i64,
    /// Most subscriptions at once.
    pub max_subscriptions: i64,
    /// Data rate, in bytes per second.
    pub data_rate: i64,
}

impl DeviceLimits {
    /// The seed's defaults: 64 KiB messages, 100 subscriptions, 1 MiB/s.
    pub const DEFAULT: DeviceLimits = DeviceLimits {
        max_payload: 64 * 1024,
        max_subscriptions: 100,
        data_rate: 1024 * 1024,
    };
    /// Largest `max_payload` (a leaf's own limit).
    pub const MAX_PAYLOAD: i64 = 1024 * 1024;
    /// Largest `max_subscriptions`.
    pub const MAX_SUBSCRIPTIONS: i64 = 10_000;
    /// Largest `data_rate` (100 MiB/s).
    pub const MAX_DATA_RATE: i64 = 100 * 1024 * 1024;

    /// Limits from optional inputs (absent = the default), each checked
    /// against its bounds; every bad field is added to `errors`.
    pub fn parse(
        max_payload: Option<i64>,
        max_subscriptions: Option<i64>,
        data_rate: Option<i64>,
        errors: &mut FieldErrors,
    ) -> Option<Self> {
        let d = Self::DEFAULT;
        let payload = errors.check(
            "max_payload",
            bounded("max_payload", max_payload, d.max_payload, Self::MAX_PAYLOAD),
        );
        let subs = errors.check(
            "max_subscriptions",
            bounded(
                "max_subscriptions",
                max_subscriptions,
                d.max_subscriptions,
                Self::MAX_SUBSCRIPTIONS,
            ),
        );
        let rate = errors.check(
            "data_rate",
            bounded("data_rate", data_rate, d.data_rate, Self::MAX_DATA_RATE),
        );
        Some(Self {
            max_payload: payload?,
            max_subscriptions: subs?,
            data_rate: rate?,
        })
    }
}

impl Default for DeviceLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn bounded(field: &str, value: Option<i64>, default: i64, max: i64) -> Result<i64, FieldError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(_) => Err(FieldError::new(
            field,
            format!("must be between 1 and {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_slugs() {
        assert!(DeviceName::parse("sensor-01").is_ok());
        for bad in ["", "Sensor", "a.b", "a b", "-a", "a>", &"a".repeat(64)] {
            let err = DeviceName::parse(bad).expect_err(bad);
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn limits_default_and_bounds() {
        let mut errors = FieldErrors::default();
        assert_eq!(
            DeviceLimits::parse(None, None, None, &mut errors),
            Some(DeviceLimits::DEFAULT)
        );
        assert!(errors.0.is_empty());
        let got = DeviceLimits::parse(Some(1), Some(10_000), Some(5), &mut errors);
        assert_eq!(got.map(|l| l.max_subscriptions), Some(10_000));
        let got = DeviceLimits::parse(Some(0), Some(10_001), Some(-1), &mut errors);
        assert_eq!(got, None);
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["max_payload", "max_subscriptions", "data_rate"]);
        let mut errors = FieldErrors::default();
        assert_eq!(
            DeviceLimits::parse(Some(DeviceLimits::MAX_PAYLOAD + 1), None, None, &mut errors),
            None
        );
        assert_eq!(errors.0.len(), 1);
    }
}
