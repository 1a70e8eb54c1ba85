//! `kind = "iec104"`: the plant's SCADA station over IEC 60870-5-104, the surplus a measured
//! value and the trip flag a single point, read by a station interrogation every `poll_ms`.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hashsink_plantio::PowerUnit;
use hashsink_plantio::iec104::Iec104Source;
use serde::Deserialize;

use super::{Common, host_port};

/// Information object addresses are three octets.
const MAX_IOA: u32 = 0xFF_FFFF;

/// A `[[signal]]` table of kind "iec104", less the common keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iec104Config {
    /// host:port of the station (2404 usually).
    pub address: Option<String>,
    /// The station's common address (ASDU address).
    pub common_address: Option<u16>,
    /// The information object address of the surplus (a measured value, M_ME_*).
    pub surplus_ioa: Option<u32>,
    /// A single point (M_SP_*) whose ON state is the plant's trip flag.
    pub trip_ioa: Option<u32>,
    /// watts = value * scale * unit (default 1).
    pub scale: Option<f64>,
    pub unit: Option<PowerUnit>,
}

impl Iec104Config {
    pub fn build(&self, common: &Common, at: &str) -> Result<Iec104Source> {
        let address = (self.address.as_deref()).ok_or_else(|| {
            anyhow!("{at}: an iec104 signal needs `address = \"rtu.plant:2404\"`")
        })?;
        let (host, port) = host_port(address)
            .ok_or_else(|| anyhow!("{at}: address = {address:?} is not like 10.0.0.5:2404"))?;
        let common_address = (self.common_address)
            .filter(|&a| a != 0 && a != 0xFFFF)
            .ok_or_else(|| anyhow!("{at}: an iec104 signal needs `common_address` (1-65534), the station's ASDU address"))?;
        let ioa = |key: &str, v: Option<u32>| -> Result<Option<u32>> {
            match v {
                Some(v) if v > MAX_IOA => {
                    bail!("{at}: {key} = {v} is above 16777215 (three octets)")
                }
                v => Ok(v),
            }
        };
        let surplus_ioa = ioa("surplus_ioa", self.surplus_ioa)?.ok_or_else(|| {
            anyhow!("{at}: an iec104 signal needs `surplus_ioa`, the information object address of the surplus (M_ME_NC_1 ...)")
        })?;
        let trip_ioa = ioa("trip_ioa", self.trip_ioa)?;
        if trip_ioa == Some(surplus_ioa) {
            bail!("{at}: trip_ioa and surplus_ioa must differ");
        }
        let scale = self.scale.unwrap_or(1.0);
        if !(scale.is_finite() && scale != 0.0) {
            bail!("{at}: scale must be a non-zero number");
        }
        Ok(Iec104Source {
            name: common.name.clone(),
            host,
            port,
            common_address,
            surplus_ioa,
            scale,
            unit: self.unit.unwrap_or_default(),
            trip_ioa,
            interrogate_every: Duration::from_millis(common.poll_ms()),
            timeout: Duration::from_millis(common.timeout_ms),
        })
    }
}
