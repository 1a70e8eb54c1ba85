//! `kind = "modbus"`: a meter or PLC read over Modbus TCP, the surplus in one register or as
//! generation less consumption less an export limit; the fleet's load and setpoint written back,
//! and the plant's trip flag read, in registers of the plant's choosing.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hashsink_plantio::modbus::{Measure, ModbusSource, Register, Table};
use serde::Deserialize;

use super::{Common, mw};

/// A `[[signal]]` table of kind "modbus", less the common keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// host:port of the meter or PLC.
    pub address: Option<String>,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// The register holding the surplus...
    pub surplus: Option<Register>,
    /// ... or generation and consumption, with the export limit.
    pub generation: Option<Register>,
    pub consumption: Option<Register>,
    pub export_limit_mw: Option<f64>,
    /// Registers the plant reads: the fleet's load and the controller's setpoint.
    pub write_fleet_load: Option<Register>,
    pub write_setpoint: Option<Register>,
    /// A holding register for the daemon's heartbeat: a u16 counter, +1 each turn of the
    /// control loop (about a second), wrapping. The plant opens the mining feeder when it
    /// stops changing (the daemon or its host is gone).
    pub write_heartbeat: Option<HeartbeatRegister>,
    /// The plant's trip flag register (non-zero sheds at once).
    pub trip: Option<TripRegister>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRegister {
    pub address: u16,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripRegister {
    #[serde(default = "holding")]
    pub table: Table,
    pub address: u16,
}

fn holding() -> Table {
    Table::Holding
}

fn default_unit_id() -> u8 {
    1
}

impl ModbusConfig {
    pub fn build(&self, common: &Common, at: &str) -> Result<ModbusSource> {
        let address = (self.address.as_deref())
            .ok_or_else(|| anyhow!("{at}: a modbus signal needs `address = \"host:502\"`"))?;
        let address = address
            .parse()
            .map_err(|_| anyhow!("{at}: address = {address:?} is not like 192.168.1.20:502"))?;
        for (key, register) in [
            ("surplus", &self.surplus),
            ("generation", &self.generation),
            ("consumption", &self.consumption),
            ("write_fleet_load", &self.write_fleet_load),
            ("write_setpoint", &self.write_setpoint),
        ] {
            if register.is_some_and(|r| !(r.scale.is_finite() && r.scale != 0.0)) {
                bail!("{at}: {key}.scale must be a non-zero number");
            }
        }
        for (key, register) in [
            ("write_fleet_load", &self.write_fleet_load),
            ("write_setpoint", &self.write_setpoint),
        ] {
            if register.is_some_and(|r| r.table == Table::Input) {
                bail!("{at}: {key} must be a holding register (input registers are read-only)");
            }
        }
        let measure = match (
            self.surplus,
            self.generation,
            self.consumption,
            self.export_limit_mw,
        ) {
            (Some(r), None, None, None) => Measure::Surplus(r),
            (None, Some(g), Some(c), Some(limit)) => Measure::Balance {
                generation: g,
                consumption: c,
                export_limit: mw(at, "export_limit_mw", limit)?,
            },
            _ => bail!(
                "{at}: give either `surplus = {{ address = .., type = .. }}` or `generation`, `consumption` and `export_limit_mw`"
            ),
        };
        Ok(ModbusSource {
            name: common.name.clone(),
            address,
            unit_id: self.unit_id,
            poll: Duration::from_millis(common.poll_ms()),
            timeout: Duration::from_millis(common.timeout_ms),
            measure,
            write_fleet_load: self.write_fleet_load,
            write_setpoint: self.write_setpoint,
            write_heartbeat: self.write_heartbeat.map(|h| h.address),
            trip: self.trip.map(|t| (t.table, t.address)),
        })
    }
}
