//! One driver per firmware behind [`MinerDriver`].
//!
//! Control goes through asic-rs where it has the operation and it is fast enough (Braiins OS
//! power target and pause/resume, stock Antminer sleep/normal), wrapped with our own timeout.
//! Native: what asic-rs lacks (LuxOS watts: LuxOS runs frequency profiles, we pick the profile
//! nearest the wanted watts; stock Antminer's low and high modes) and LuxOS curtail, where
//! asic-rs re-reads the session on every call and a shed of 10,000 miners took 3.0 s against
//! 0.8 s with the session kept. Telemetry is native for
//! every firmware: one `+`-joined cgminer request (plus the firmware's web read where state
//! lives only there), where asic-rs's `get_data` makes a dozen calls per miner.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hashsink_units::{HashRate, Watts};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use crate::cgminer::{CgminerClient, RPC_PORT, number_at, section};
use crate::{Control, DriverError, MinerDriver, MinerState, Telemetry};

/// A miner handle built by asic-rs's discovery, shared by calls.
pub type AsicRsMiner = Arc<Box<dyn asic_rs::core::traits::miner::Miner>>;

/// Per-call settings shared by every driver.
#[derive(Clone, Debug)]
pub struct CallSettings {
    /// Limit on one call to one miner (connect, request, reply).
    pub timeout: Duration,
    pub rpc_port: u16,
    pub web_port: u16,
    /// Keep a miner's web connection open after a call, for the next one (a small fleet). Off,
    /// a call's last request closes it, so that the connections left open do not grow with the
    /// fleet (tens of thousands of miners against the process's descriptor limit).
    pub keep_alive: bool,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            rpc_port: RPC_PORT,
            web_port: 80,
            keep_alive: true,
        }
    }
}

async fn with_timeout<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = anyhow_like::Result<T>>,
) -> Result<T, DriverError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(DriverError::Timeout(timeout.as_millis() as u64)),
        Ok(Err(e)) => Err(classify(&e.to_string())),
        Ok(Ok(v)) => Ok(v),
    }
}

/// asic-rs reports errors as text; sort them into transport failures and refusals.
fn classify(message: &str) -> DriverError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("connect")
        || lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("network")
    {
        DriverError::Connect(message.to_string())
    } else if lower.contains("json") || lower.contains("parse") || lower.contains("decode") {
        DriverError::Malformed(message.to_string())
    } else {
        DriverError::Rejected(message.to_string())
    }
}

/// asic-rs returns `anyhow::Result`; we only need its error's text.
mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::fmt::Display + Send + Sync>>;
    pub fn boxed<T, E: std::fmt::Display + Send + Sync + 'static>(
        r: std::result::Result<T, E>,
    ) -> Result<T> {
        r.map_err(|e| Box::new(e) as Box<dyn std::fmt::Display + Send + Sync>)
    }
}
use anyhow_like::boxed;

fn temps_from(value: &Value, key: &str, field: &str) -> Option<f64> {
    let list = value.get(key)?.as_array()?;
    let temps: Vec<f64> = list
        .iter()
        .filter_map(|t| t.get(field).and_then(Value::as_f64))
        .collect();
    (!temps.is_empty()).then(|| temps.iter().cloned().fold(f64::MIN, f64::max))
}

// ---- LuxOS ------------------------------------------------------------------------------------

pub struct LuxOsDriver {
    ip: IpAddr,
    rpc: CgminerClient,
    asic: Option<AsicRsMiner>,
    session: Mutex<Option<String>>,
    /// (profile name, watts), ascending by watts, read once.
    profiles: OnceCell<Vec<(String, f64)>>,
}

impl LuxOsDriver {
    pub fn new(ip: IpAddr, asic: Option<AsicRsMiner>, settings: CallSettings) -> Self {
        Self {
            ip,
            rpc: CgminerClient::new(ip, settings.rpc_port, settings.timeout),
            asic,
            session: Mutex::new(None),
            profiles: OnceCell::new(),
        }
    }

    async fn session(&self) -> Result<String, DriverError> {
        let mut cached = self.session.lock().await;
        if let Some(s) = cached.as_ref() {
            return Ok(s.clone());
        }
        let current = self.rpc.command("session", None).await?;
        let mut id = current
            .pointer("/SESSION/0/SessionID")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if id.is_empty() {
            let logon = self.rpc.command("logon", None).await?;
            id = logon
                .pointer("/SESSION/0/SessionID")
                .and_then(Value::as_str)
                .ok_or_else(|| DriverError::Malformed("logon gave no SessionID".into()))?
                .to_string();
        }
        *cached = Some(id.clone());
        Ok(id)
    }

    /// A privileged command with the session id, logging on again once if the session expired.
    async fn privileged(&self, command: &str, argument: &str) -> Result<Value, DriverError> {
        for attempt in 0..2 {
            let session = self.session().await?;
            match self
                .rpc
                .command(command, Some(&format!("{session},{argument}")))
                .await
            {
                Err(DriverError::Rejected(msg))
                    if attempt == 0 && msg.to_ascii_lowercase().contains("session") =>
                {
                    *self.session.lock().await = None;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn profiles(&self) -> Result<&Vec<(String, f64)>, DriverError> {
        self.profiles
            .get_or_try_init(|| async {
                let reply = self.rpc.command("profiles", None).await?;
                luxos_profiles(&reply)
            })
            .await
    }

    /// The profile whose power is nearest `watts`.
    pub async fn profile_for(&self, watts: Watts) -> Result<String, DriverError> {
        let profiles = self.profiles().await?;
        let best = profiles
            .iter()
            .min_by(|a, b| (a.1 - watts.w()).abs().total_cmp(&(b.1 - watts.w()).abs()))
            .expect("profiles are not empty");
        Ok(best.0.clone())
    }

    /// `profileset` to the profile nearest `watts`, with the cached session.
    async fn set_profile(&self, watts: Watts) -> Result<(), DriverError> {
        let profile = self.profile_for(watts).await?;
        self.privileged("profileset", &profile)
            .await
            .map(|_| ())
            .map_err(level_refused)
    }

    /// `curtail sleep|wakeup` with the cached session: one round trip. (asic-rs's LuxOS pause
    /// and resume ask for the session on every call, two or three round trips: measured on
    /// 10,000 emulated miners, a shed took 3.0 s that way and 0.8 s this way.)
    async fn curtail(&self, sleep: bool) -> Result<(), DriverError> {
        match self
            .privileged("curtail", if sleep { "sleep" } else { "wakeup" })
            .await
        {
            // Already in the wanted state: that is success (the read-back confirms it).
            Err(DriverError::Rejected(msg)) if msg.to_ascii_lowercase().contains("already") => {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// The asic-rs handle discovery built, if any (for callers that want asic-rs's full reads).
    pub fn asic_rs(&self) -> Option<&AsicRsMiner> {
        self.asic.as_ref()
    }
}

#[async_trait]
impl MinerDriver for LuxOsDriver {
    fn address(&self) -> IpAddr {
        self.ip
    }
    fn firmware(&self) -> &'static str {
        "LuxOS"
    }

    async fn telemetry(&self) -> Result<Telemetry, DriverError> {
        let reply = self.rpc.command("summary+power+config+temps", None).await?;
        luxos_telemetry(&reply)
    }

    async fn prepare(&self) -> Result<(), DriverError> {
        self.session().await?;
        self.profiles().await.map(|_| ())
    }

    async fn apply(&self, control: Control) -> Result<(), DriverError> {
        match control {
            Control::Sleep => self.curtail(true).await,
            Control::Resume => self.curtail(false).await,
            Control::Run { watts, .. } => {
                self.set_profile(watts).await?;
                self.curtail(false).await
            }
            Control::Level { watts, .. } => self.set_profile(watts).await,
        }
    }
}

fn state_of(asleep: bool, ghs: f64) -> MinerState {
    if asleep {
        MinerState::Asleep
    } else if ghs > 0.0 {
        MinerState::Mining
    } else {
        MinerState::Booting
    }
}

// ---- Braiins OS -------------------------------------------------------------------------------

/// Braiins OS through its REST API (`/api/v1`, a token from `auth/login`), reads and control.
pub struct BraiinsDriver {
    ip: IpAddr,
    settings: CallSettings,
    http: reqwest::Client,
    token: Mutex<Option<String>>,
}

impl BraiinsDriver {
    pub fn new(ip: IpAddr, settings: CallSettings, http: reqwest::Client) -> Self {
        Self {
            ip,
            settings,
            http,
            token: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://{}:{}/api/v1/{path}",
            self.ip, self.settings.web_port
        )
    }

    async fn token(&self) -> Result<String, DriverError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let reply = self
            .http
            .post(self.url("auth/login"))
            .json(&serde_json::json!({"username": "root", "password": "root"}))
            .timeout(self.settings.timeout)
            .send()
            .await
            .map_err(http_error)?;
        let reply: Value = serde_json::from_slice(&capped_body(reply).await?)
            .map_err(|e| DriverError::Malformed(format!("auth/login: {e}")))?;
        let token = reply
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| DriverError::Rejected("login gave no token (wrong password?)".into()))?
            .to_string();
        *cached = Some(token.clone());
        Ok(token)
    }

    /// A `GET /api/v1/{path}`, its reply as JSON; `keep_open: false` asks the miner to close the
    /// connection after.
    async fn get(&self, path: &str, keep_open: bool) -> Result<Value, DriverError> {
        let body = self
            .send(reqwest::Method::GET, path, None, keep_open)
            .await?;
        serde_json::from_slice(&body).map_err(|e| DriverError::Malformed(format!("{path}: {e}")))
    }

    /// `PUT performance/power-target {"watt": W}`. `more`: a resume follows on the connection
    /// (else it is closed, unless the settings keep connections: a level alone must not leave
    /// one open per miner).
    async fn set_power_target(&self, watts: Watts, more: bool) -> Result<(), DriverError> {
        let target = serde_json::json!({"watt": watts.w().round() as u64});
        self.put("performance/power-target", Some(target), more)
            .await
            .map_err(level_refused)
    }

    /// A privileged `PUT /api/v1/{path}`. `more`: another request follows on the same
    /// connection (else it is closed after, unless the settings keep it alive).
    async fn put(&self, path: &str, body: Option<Value>, more: bool) -> Result<(), DriverError> {
        let keep_open = more || self.settings.keep_alive;
        self.send(reqwest::Method::PUT, path, body, keep_open)
            .await
            .map(|_| ())
    }

    /// One request with the token, its reply's body (capped); an expired token is renewed
    /// once. A refusal carries the firmware's own reason (its `message`).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        keep_open: bool,
    ) -> Result<Vec<u8>, DriverError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut request = self
                .http
                .request(method.clone(), self.url(path))
                .header("Authorization", token)
                .timeout(self.settings.timeout);
            if !keep_open {
                request = request.header(reqwest::header::CONNECTION, "close");
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(http_error)?;
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                *self.token.lock().await = None;
                continue;
            }
            let reply = capped_body(response).await?;
            if status.is_success() {
                return Ok(reply);
            }
            let why = serde_json::from_slice::<Value>(&reply)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&reply).chars().take(200).collect());
            return Err(DriverError::Rejected(format!(
                "HTTP {status} on {path}: {why}"
            )));
        }
        Err(DriverError::Rejected(format!(
            "{path}: the miner refused a fresh token"
        )))
    }
}

/// The most a miner's web reply may hold: its largest real page is a few kilobytes.
pub const MAX_WEB_REPLY: usize = 1 << 20;

/// A miner's web reply, read up to `MAX_WEB_REPLY` bytes: a miner that sends more (a broken or
/// hostile one) is a malformed reply, never a process out of memory.
async fn capped_body(mut response: reqwest::Response) -> Result<Vec<u8>, DriverError> {
    let too_long = || DriverError::Malformed(format!("reply longer than {MAX_WEB_REPLY} bytes"));
    if response
        .content_length()
        .is_some_and(|n| n > MAX_WEB_REPLY as u64)
    {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http_error)? {
        if body.len() + chunk.len() > MAX_WEB_REPLY {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn http_error(e: reqwest::Error) -> DriverError {
    if e.is_timeout() {
        DriverError::Timeout(0)
    } else if e.is_decode() {
        DriverError::Malformed(e.to_string())
    } else {
        DriverError::Connect(e.to_string())
    }
}

#[async_trait]
impl MinerDriver for BraiinsDriver {
    fn address(&self) -> IpAddr {
        self.ip
    }
    fn firmware(&self) -> &'static str {
        "Braiins OS"
    }

    /// The two reads one after the other, on one connection (the second closes it unless the
    /// settings keep it alive).
    async fn telemetry(&self) -> Result<Telemetry, DriverError> {
        let stats = self.get("miner/stats", true).await?;
        let details = self.get("miner/details", self.settings.keep_alive).await?;
        braiins_telemetry(&stats, &details)
    }

    /// Pause, resume and power target through the REST API, over the driver's shared client:
    /// the same requests asic-rs's Braiins OS backend sends (`PUT /api/v1/actions/pause`,
    /// `actions/resume`, `performance/power-target {"watt": W}`), without its HTTP client per
    /// miner (each with its own connection pool and certificate store: 2 GB and every
    /// descriptor at 100,000 miners).
    async fn apply(&self, control: Control) -> Result<(), DriverError> {
        match control {
            Control::Sleep => self.put("actions/pause", None, false).await,
            Control::Resume => self.put("actions/resume", None, false).await,
            Control::Run { watts, .. } => {
                self.set_power_target(watts, true).await?;
                self.put("actions/resume", None, false).await
            }
            Control::Level { watts, .. } => self.set_power_target(watts, false).await,
        }
    }
}

// ---- stock Antminer ---------------------------------------------------------------------------

pub struct AntminerDriver {
    ip: IpAddr,
    rpc: CgminerClient,
    asic: Option<AsicRsMiner>,
    settings: CallSettings,
    http: reqwest::Client,
    /// Rated draw of the spec's [low, normal, high] rungs and of standby, for firmware that does
    /// not report its draw.
    rated: Vec<Watts>,
    standby: Watts,
    /// Index of the "normal" rung.
    normal_level: u8,
}

impl AntminerDriver {
    pub fn new(
        ip: IpAddr,
        asic: Option<AsicRsMiner>,
        settings: CallSettings,
        http: reqwest::Client,
        spec: &hashsink_core::MinerSpec,
    ) -> Self {
        Self {
            ip,
            rpc: CgminerClient::new(ip, settings.rpc_port, settings.timeout),
            asic,
            settings,
            http,
            rated: spec.levels.clone(),
            standby: spec.standby,
            normal_level: spec.preferred_level,
        }
    }

    async fn web(&self, page: &str, body: Option<Value>) -> Result<Value, DriverError> {
        use diqwest::WithDigestAuth;
        let url = format!(
            "http://{}:{}/cgi-bin/{page}",
            self.ip, self.settings.web_port
        );
        let request = match &body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        }
        .timeout(self.settings.timeout);
        let response = tokio::time::timeout(
            self.settings.timeout * 2,
            request.send_digest_auth(("root", "root")),
        )
        .await
        .map_err(|_| DriverError::Timeout(self.settings.timeout.as_millis() as u64))?
        .map_err(|e| DriverError::Connect(e.to_string()))?;
        if !response.status().is_success() {
            return Err(DriverError::Rejected(format!(
                "HTTP {} on {page}",
                response.status()
            )));
        }
        let bytes = capped_body(response).await?;
        serde_json::from_slice(&bytes).map_err(|e| DriverError::Malformed(format!("{page}: {e}")))
    }

    async fn set_mode(&self, mode: &str) -> Result<(), DriverError> {
        let mut conf = self.web("get_miner_conf.cgi", None).await?;
        conf["bitmain-work-mode"] = Value::String(mode.to_string());
        let reply = self.web("set_miner_conf.cgi", Some(conf)).await?;
        match reply.get("code").and_then(Value::as_str) {
            Some("M000") => Ok(()),
            _ => Err(DriverError::Rejected(format!(
                "set_miner_conf answered {reply}"
            ))),
        }
    }
}

#[async_trait]
impl MinerDriver for AntminerDriver {
    fn address(&self) -> IpAddr {
        self.ip
    }
    fn firmware(&self) -> &'static str {
        "stock Antminer"
    }

    async fn telemetry(&self) -> Result<Telemetry, DriverError> {
        let (reply, conf) = tokio::join!(
            self.rpc.command("summary+stats", None),
            self.web("get_miner_conf.cgi", None)
        );
        antminer_telemetry(
            &reply?,
            &conf?,
            &self.rated,
            self.normal_level,
            self.standby,
        )
    }

    async fn apply(&self, control: Control) -> Result<(), DriverError> {
        let timeout = self.settings.timeout * 3;
        // A mode is one request whether the miner sleeps or not: a level is a run.
        match (control, &self.asic) {
            (Control::Sleep, Some(miner)) => {
                let m = miner.clone();
                accepted(with_timeout(timeout, async move { boxed(m.pause(None).await) }).await?)
            }
            (Control::Resume, Some(miner)) => {
                let m = miner.clone();
                accepted(with_timeout(timeout, async move { boxed(m.resume(None).await) }).await?)
            }
            (Control::Resume, None) => self.set_mode("0").await,
            (Control::Run { level, .. } | Control::Level { level, .. }, Some(miner))
                if level == self.normal_level =>
            {
                let m = miner.clone();
                accepted(with_timeout(timeout, async move { boxed(m.resume(None).await) }).await?)
            }
            (Control::Sleep, None) => self.set_mode("1").await,
            (Control::Run { level, .. } | Control::Level { level, .. }, _) => {
                let mode = match level.cmp(&self.normal_level) {
                    std::cmp::Ordering::Less => "3",
                    std::cmp::Ordering::Equal => "0",
                    std::cmp::Ordering::Greater => "2",
                };
                let result = self.set_mode(mode).await;
                // Firmware without the low and high modes refuses those, not the miner.
                if level == self.normal_level {
                    result
                } else {
                    result.map_err(level_refused)
                }
            }
        }
    }
}

/// The firmware's "no" to a level write is a refusal of the level, not of the miner: it may
/// still obey sleep and wake. Transport failures stay what they are.
fn level_refused(e: DriverError) -> DriverError {
    match e {
        DriverError::Rejected(why) | DriverError::Unsupported(why) => {
            DriverError::LevelRefused(why)
        }
        other => other,
    }
}

fn accepted(ok: bool) -> Result<(), DriverError> {
    if ok {
        Ok(())
    } else {
        Err(DriverError::Rejected(
            "the miner did not accept the work mode".into(),
        ))
    }
}

/// The power profiles a LuxOS `profiles` reply lists, (name, W), lowest first.
pub fn luxos_profiles(reply: &Value) -> Result<Vec<(String, f64)>, DriverError> {
    let mut list: Vec<(String, f64)> = reply
        .get("PROFILES")
        .and_then(Value::as_array)
        .ok_or_else(|| DriverError::Malformed("no PROFILES in the reply".into()))?
        .iter()
        .filter_map(|p| {
            Some((
                p.get("Profile Name")?.as_str()?.to_string(),
                p.get("Watts")?.as_f64()?,
            ))
        })
        .collect();
    if list.is_empty() {
        return Err(DriverError::Malformed("the miner lists no profiles".into()));
    }
    list.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(list)
}

/// A LuxOS miner's reading from its `summary+power+config+temps` reply.
pub fn luxos_telemetry(reply: &Value) -> Result<Telemetry, DriverError> {
    let summary = section(reply, "summary")?;
    let power = section(reply, "power")?;
    let config = section(reply, "config")?;
    let ghs = number_at(summary, "/SUMMARY/0/GHS 5s")
        .ok_or_else(|| DriverError::Malformed("summary has no 'GHS 5s'".into()))?;
    let watts = number_at(power, "/POWER/0/Watts")
        .ok_or_else(|| DriverError::Malformed("power has no 'Watts'".into()))?;
    let curtailed = config
        .pointer("/CONFIG/0/CurtailMode")
        .and_then(Value::as_str)
        .is_some_and(|m| !m.eq_ignore_ascii_case("none"));
    let temps = section(reply, "temps").ok();
    let level_owned = config
        .pointer("/CONFIG/0/IsAtmEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Telemetry {
        state: state_of(curtailed, ghs),
        power: Watts(watts),
        power_estimated: false,
        level_owned,
        hashrate: HashRate::from_ths(ghs / 1000.0),
        board_temp_c: temps.and_then(|t| temps_from(t, "TEMPS", "Board")),
        chip_temp_c: temps.and_then(|t| temps_from(t, "TEMPS", "Chip")),
        fan_rpm: None,
    })
}

/// A Braiins OS miner's reading from its REST `miner/stats` and `miner/details` replies.
pub fn braiins_telemetry(stats: &Value, details: &Value) -> Result<Telemetry, DriverError> {
    let ghs = number_at(
        stats,
        "/miner_stats/real_hashrate/last_5s/gigahash_per_second",
    )
    .ok_or_else(|| DriverError::Malformed("miner/stats has no real_hashrate".into()))?;
    let watts =
        number_at(stats, "/power_stats/approximated_consumption/watt").ok_or_else(|| {
            DriverError::Malformed("miner/stats has no approximated_consumption".into())
        })?;
    // bos.v1 MinerStatus: 2 normal; 3 paused and 4 suspended are asleep; 1 not started.
    let status = details.get("status").and_then(Value::as_u64).unwrap_or(0);
    Ok(Telemetry {
        state: state_of(matches!(status, 3 | 4), ghs),
        power: Watts(watts),
        power_estimated: false,
        level_owned: false,
        hashrate: HashRate::from_ths(ghs / 1000.0),
        board_temp_c: None,
        chip_temp_c: None,
        fan_rpm: None,
    })
}

/// A stock Antminer's reading from its `summary+stats` reply and its miner configuration. The
/// draw is `chain_power` ("3250 W"), `power` or `watt` in stats, whichever the firmware has;
/// firmware that reports none gets the rated draw of its work mode (marked as an estimate).
pub fn antminer_telemetry(
    reply: &Value,
    conf: &Value,
    rated: &[Watts],
    normal_level: u8,
    standby: Watts,
) -> Result<Telemetry, DriverError> {
    let summary = section(reply, "summary")?;
    let stats = section(reply, "stats")?;
    let ghs = number_at(summary, "/SUMMARY/0/GHS 5s")
        .ok_or_else(|| DriverError::Malformed("summary has no 'GHS 5s'".into()))?;
    let mode = conf
        .get("miner-mode")
        .or_else(|| conf.get("bitmain-work-mode"))
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
        .ok_or_else(|| DriverError::Malformed("miner configuration has no work mode".into()))?;
    let asleep = mode == "1";
    let state = state_of(asleep, ghs);
    let measured = ["/STATS/1/chain_power", "/STATS/1/power", "/STATS/1/watt"]
        .iter()
        .find_map(|p| number_at(stats, p));
    let (power, power_estimated) = match measured {
        Some(w) => (Watts(w), false),
        None => {
            let rung = match mode.as_str() {
                "3" => 0,
                "2" => rated.len().saturating_sub(1),
                _ => normal_level as usize,
            };
            let w = match state {
                MinerState::Mining => rated.get(rung).copied().unwrap_or(standby),
                MinerState::Booting | MinerState::Asleep => standby,
            };
            (w, true)
        }
    };
    Ok(Telemetry {
        state,
        power,
        power_estimated,
        level_owned: false,
        hashrate: HashRate::from_ths(ghs / 1000.0),
        board_temp_c: number_at(stats, "/STATS/1/temp1"),
        chip_temp_c: number_at(stats, "/STATS/1/temp2_1"),
        fan_rpm: number_at(stats, "/STATS/1/fan1").map(|f| f as u32),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reply(stats: Value) -> Value {
        json!({
            "summary": [{"SUMMARY": [{"GHS 5s": 104000.0}]}],
            "stats": [{"STATS": [{"Type": "Antminer S19j Pro"}, stats]}],
        })
    }

    const RATED: [Watts; 3] = [Watts(2300.0), Watts(3068.0), Watts(3375.0)];

    #[test]
    fn antminer_power_is_read_where_the_firmware_has_it() {
        let conf = json!({"bitmain-work-mode": "0"});
        let t = antminer_telemetry(
            &reply(json!({"chain_power": "3050 W"})),
            &conf,
            &RATED,
            1,
            Watts(15.0),
        )
        .unwrap();
        assert_eq!(
            (t.power, t.power_estimated, t.state),
            (Watts(3050.0), false, MinerState::Mining)
        );
        let t = antminer_telemetry(&reply(json!({"watt": 3010})), &conf, &RATED, 1, Watts(15.0))
            .unwrap();
        assert_eq!((t.power, t.power_estimated), (Watts(3010.0), false));
    }

    #[test]
    fn antminer_without_a_power_reading_gets_its_modes_rating() {
        let t = antminer_telemetry(
            &reply(json!({"temp1": 60})),
            &json!({"miner-mode": 3}),
            &RATED,
            1,
            Watts(15.0),
        )
        .unwrap();
        assert_eq!(
            (t.power, t.power_estimated),
            (Watts(2300.0), true),
            "low mode"
        );
        let t = antminer_telemetry(
            &reply(json!({})),
            &json!({"bitmain-work-mode": "1"}),
            &RATED,
            1,
            Watts(15.0),
        )
        .unwrap();
        assert_eq!(
            (t.power, t.state),
            (Watts(15.0), MinerState::Asleep),
            "sleep mode"
        );
        let e =
            antminer_telemetry(&reply(json!({})), &json!({}), &RATED, 1, Watts(15.0)).unwrap_err();
        assert!(matches!(e, DriverError::Malformed(_)), "{e}");
    }
}

/// The Braiins OS driver's requests on the wire, against a peer that records each request's
/// path and whether it asked to close the connection (the failure a real peer cannot report).
#[cfg(test)]
mod braiins_wire {
    use std::sync::{Arc, Mutex as StdMutex};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    type Log = Arc<StdMutex<Vec<(String, bool)>>>;

    /// Answers every request 200 with a token; closes when asked to.
    async fn peer() -> (u16, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: Log = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let (mut length, mut close) = (0, false);
                        loop {
                            let mut header = String::new();
                            stream.read_line(&mut header).await.unwrap();
                            let header = header.trim().to_ascii_lowercase();
                            if header.is_empty() {
                                break;
                            }
                            if let Some(v) = header.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                            close |= header == "connection: close";
                        }
                        let mut body = vec![0; length];
                        stream.read_exact(&mut body).await.unwrap();
                        seen.lock().unwrap().push((path, close));
                        let reply = br#"{"token":"t"}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
                            reply.len(),
                            if close { "connection: close\r\n" } else { "" }
                        );
                        let out = stream.get_mut();
                        out.write_all(head.as_bytes()).await.unwrap();
                        out.write_all(reply).await.unwrap();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (port, log)
    }

    #[tokio::test]
    async fn a_level_alone_closes_its_connection_and_a_run_closes_after_the_resume() {
        let (port, log) = peer().await;
        let settings = CallSettings {
            web_port: port,
            keep_alive: false,
            ..CallSettings::default()
        };
        let ip = "127.0.0.1".parse().unwrap();
        let driver = BraiinsDriver::new(ip, settings, reqwest::Client::new());
        let watts = Watts(3000.0);
        driver
            .apply(Control::Level { level: 3, watts })
            .await
            .unwrap();
        driver
            .apply(Control::Run { level: 3, watts })
            .await
            .unwrap();
        let writes: Vec<(String, bool)> = (log.lock().unwrap().iter())
            .filter(|(path, _)| !path.ends_with("auth/login"))
            .cloned()
            .collect();
        let target = "/api/v1/performance/power-target".to_string();
        let resume = "/api/v1/actions/resume".to_string();
        assert_eq!(
            writes,
            [(target.clone(), true), (target, false), (resume, true)],
            "(path, asked to close)"
        );
    }
}
