//! `kind = "mqtt"`: the surplus on one topic of the plant's broker (a plain number or a JSON
//! field, with an optional measurement time), the fleet's load published back, the plant's trip
//! flag on a topic of its own; TLS through the system's OpenSSL.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hashsink_plantio::PowerUnit;
use hashsink_plantio::mqtt::{MqttSource, MqttTls, Payload};
use serde::Deserialize;

use super::{Common, host_port};

/// A `[[signal]]` table of kind "mqtt", less the common keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// broker:port.
    pub address: Option<String>,
    /// The topic carrying the surplus.
    pub topic: Option<String>,
    /// The JSON field with the value (omit for a plain-number payload).
    pub field: Option<String>,
    /// The JSON field with the measurement time (RFC 3339 or epoch ms), if sent.
    pub time_field: Option<String>,
    /// The unit of the value (w, kw, mw; default kw).
    pub unit: Option<PowerUnit>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Where to publish the fleet's load and setpoint (JSON), every `publish_ms`.
    pub publish_topic: Option<String>,
    #[serde(default = "default_publish_ms")]
    pub publish_ms: u64,
    /// Connect over TLS (mqtts; port 8883 usually), verifying the broker's certificate.
    #[serde(default)]
    pub tls: bool,
    /// The PEM file of the CA that signed the broker's certificate (default: the system's
    /// roots); relative to the site file.
    pub ca_file: Option<String>,
    /// A PKCS#12 client identity (certificate + key) for brokers that require one.
    pub client_pkcs12: Option<String>,
    pub client_pkcs12_password: Option<String>,
    /// The plant's trip topic ("1"/"true"/"trip" sheds at once, "0"/"false"/"clear" lets the
    /// fleet come back, staggered).
    pub trip_topic: Option<String>,
}

fn default_publish_ms() -> u64 {
    1000
}

impl MqttConfig {
    /// `tag` tells this table's default client id from another's.
    pub fn build(
        &self,
        common: &Common,
        at: &str,
        tag: &str,
        base_dir: &Path,
    ) -> Result<MqttSource> {
        let address = (self.address.as_deref())
            .ok_or_else(|| anyhow!("{at}: an mqtt signal needs `address = \"broker:1883\"`"))?;
        let (host, port) = host_port(address).ok_or_else(|| {
            anyhow!("{at}: address = {address:?} is not like broker.plant.local:1883")
        })?;
        let topic = (self.topic.clone())
            .filter(|t| !t.is_empty() && !t.contains(['+', '#']))
            .ok_or_else(|| {
                anyhow!(
                    "{at}: an mqtt signal needs `topic = \"plant/surplus\"` (one topic, no wildcards)"
                )
            })?;
        if self.username.is_some() != self.password.is_some() {
            bail!("{at}: give both `username` and `password`, or neither");
        }
        if !(100..=60_000).contains(&self.publish_ms) {
            bail!("{at}: publish_ms must be between 100 and 60000");
        }
        let tls = self.tls(at, base_dir)?;
        Ok(MqttSource {
            name: common.name.clone(),
            host,
            port,
            client_id: (self.client_id.clone())
                .unwrap_or_else(|| format!("hashsink-{}-{tag}", std::process::id())),
            credentials: self.username.clone().zip(self.password.clone()),
            topic,
            payload: Payload {
                field: self.field.clone(),
                time_field: self.time_field.clone(),
                unit: self.unit.unwrap_or_default(),
            },
            publish_topic: self.publish_topic.clone(),
            publish_every: Duration::from_millis(self.publish_ms),
            keep_alive: Duration::from_secs(5),
            trip_topic: self.trip_topic.clone().filter(|t| !t.is_empty()),
            tls,
        })
    }

    /// The TLS settings, with their files read now (a missing or wrong file stops the site from
    /// loading, not the source later).
    fn tls(&self, at: &str, base_dir: &Path) -> Result<Option<MqttTls>> {
        let keys = TlsKeys {
            tls: self.tls,
            ca_file: self.ca_file.as_deref(),
            client_pkcs12: self.client_pkcs12.as_deref(),
            client_pkcs12_password: self.client_pkcs12_password.as_deref(),
        };
        keys.read(at, base_dir)
    }
}

/// The TLS keys of a table that connects to a broker (a `[[signal]]` of kind mqtt, the region
/// file's `[coordinator]`), as written.
pub(crate) struct TlsKeys<'a> {
    pub tls: bool,
    pub ca_file: Option<&'a str>,
    pub client_pkcs12: Option<&'a str>,
    pub client_pkcs12_password: Option<&'a str>,
}

impl TlsKeys<'_> {
    /// The TLS settings, with their files (relative to `base_dir`) read now; None without
    /// `tls = true`.
    pub(crate) fn read(&self, at: &str, base_dir: &Path) -> Result<Option<MqttTls>> {
        let given = self.ca_file.is_some()
            || self.client_pkcs12.is_some()
            || self.client_pkcs12_password.is_some();
        if !self.tls {
            if given {
                bail!("{at}: `ca_file` and `client_pkcs12` need `tls = true`");
            }
            return Ok(None);
        }
        let read = |key: &str, name: &str| -> Result<Vec<u8>> {
            let path = base_dir.join(name);
            hashsink_units::read_input_bytes(&path).map_err(|e| {
                anyhow!(
                    "{at}: {key} = {name:?}: cannot read {}: {e}",
                    path.display()
                )
            })
        };
        let ca_pem = (self.ca_file)
            .map(|name| {
                let pem = read("ca_file", name)?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    bail!(
                        "{at}: ca_file = {name:?} is not a PEM certificate (-----BEGIN CERTIFICATE-----)"
                    );
                }
                Ok(pem)
            })
            .transpose()?;
        let client_pkcs12 = match (self.client_pkcs12, self.client_pkcs12_password) {
            (Some(name), Some(password)) => {
                if ca_pem.is_none() {
                    bail!("{at}: a client identity (`client_pkcs12`) needs `ca_file` too");
                }
                Some((read("client_pkcs12", name)?, password.to_string()))
            }
            (None, None) => None,
            _ => bail!("{at}: give both `client_pkcs12` and `client_pkcs12_password`, or neither"),
        };
        Ok(Some(MqttTls {
            ca_pem,
            client_pkcs12,
        }))
    }
}
