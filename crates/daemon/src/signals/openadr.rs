//! `kind = "openadr"`: an OpenADR 2.0b VEN of the utility's programme; its events cap the fleet
//! from their start (SIMPLE levels, LOAD_DISPATCH values, a price ceiling), and the fleet's load
//! is offered back as a telemetry report.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hashsink_plantio::PowerUnit;
use hashsink_plantio::openadr::OpenAdrSource;
use hashsink_plantio::openadr::events::EventMapping;
use hashsink_units::Watts;
use serde::Deserialize;

use super::Common;

/// A `[[signal]]` table of kind "openadr", less the common keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAdrConfig {
    /// The VTN's base URL.
    pub address: Option<String>,
    /// The name this VEN registers under.
    pub ven_name: Option<String>,
    /// The cap when no event is active (default `max_mw`).
    pub no_event_mw: Option<f64>,
    /// The caps for SIMPLE levels 0-3 (default: `no_event_mw`, then 0, 0, 0).
    pub simple_levels_mw: Option<[f64; 4]>,
    /// Above this ELECTRICITY_PRICE (in the event's units) the fleet draws nothing.
    pub price_ceiling: Option<f64>,
    /// The unit of LOAD_DISPATCH values when the event names none (default kw).
    pub unit: Option<PowerUnit>,
    /// Offer the fleet's load to the VTN as a telemetry report (default true).
    #[serde(default = "yes")]
    pub report: bool,
}

fn yes() -> bool {
    true
}

impl OpenAdrConfig {
    pub fn build(&self, common: &Common, at: &str, max: Watts) -> Result<OpenAdrSource> {
        let url = self.address.as_deref().ok_or_else(|| {
            anyhow!("{at}: an openadr signal needs `address = \"http://vtn.example:8080/OpenADR2/Simple/2.0b\"`")
        })?;
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow!("{at}: address = {url:?} is not a URL ({e})"))?;
        if parsed.scheme() != "http" {
            bail!(
                "{at}: address = {url:?}: only http:// VTNs are supported (TLS is not built in yet; put the VEN behind a TLS-terminating proxy)"
            );
        }
        let ven_name = (self.ven_name.clone())
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| anyhow!("{at}: an openadr signal needs `ven_name = \"...\"`, the name the utility knows this site by"))?;
        let cap = |key: &str, v: f64| -> Result<Watts> {
            if v.is_finite() && v >= 0.0 && Watts::from_mw(v) <= max {
                Ok(Watts::from_mw(v))
            } else {
                let max_mw = max.mw();
                Err(anyhow!(
                    "{at}: {key} = {v} must be between 0 and max_mw = {max_mw}"
                ))
            }
        };
        let no_event = (self
            .no_event_mw
            .map(|v| cap("no_event_mw", v))
            .transpose()?)
        .unwrap_or(max);
        let simple_levels = match self.simple_levels_mw {
            Some(levels) => {
                let mut out = [Watts(0.0); 4];
                for (i, v) in levels.into_iter().enumerate() {
                    out[i] = cap(&format!("simple_levels_mw[{i}]"), v)?;
                }
                out
            }
            None => [no_event, Watts(0.0), Watts(0.0), Watts(0.0)],
        };
        if let Some(p) = self.price_ceiling.filter(|p| !p.is_finite()) {
            bail!("{at}: price_ceiling = {p} must be a number");
        }
        Ok(OpenAdrSource {
            name: common.name.clone(),
            vtn_url: url.to_string(),
            ven_name,
            poll: common.poll_ms.map(Duration::from_millis),
            max_age: Duration::from_secs_f64(common.max_age_s),
            timeout: Duration::from_millis(common.timeout_ms),
            mapping: EventMapping {
                no_event,
                default_watts_per_unit: self.unit.unwrap_or_default().watts(),
                simple_levels,
                price_ceiling: self.price_ceiling,
            },
            report: self.report,
        })
    }
}
