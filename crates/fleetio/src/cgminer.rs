//! The cgminer-style JSON API on TCP 4028, as LuxOS, Braiins OS (BOSer) and stock Antminer
//! firmware speak it: one JSON request per connection, the miner answers and closes.
//! Several read commands travel in one request joined by `+`, which is how a telemetry sweep
//! gets everything it needs from a miner in one round trip.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::DriverError;

pub const RPC_PORT: u16 = 4028;
/// Replies larger than this are not miner replies.
const MAX_REPLY: usize = 1 << 20;

/// A client for one miner's cgminer API.
#[derive(Clone, Debug)]
pub struct CgminerClient {
    addr: SocketAddr,
    timeout: Duration,
}

impl CgminerClient {
    pub fn new(ip: IpAddr, port: u16, timeout: Duration) -> Self {
        Self {
            addr: SocketAddr::new(ip, port),
            timeout,
        }
    }

    /// Sends one command (or several joined by `+`) and returns the parsed reply. A reply whose
    /// STATUS is an error comes back as [`DriverError::Rejected`] with the miner's message.
    pub async fn command(
        &self,
        command: &str,
        parameter: Option<&str>,
    ) -> Result<Value, DriverError> {
        let mut request = json!({ "command": command });
        if let Some(p) = parameter {
            request["parameter"] = Value::String(p.to_string());
        }
        let text = tokio::time::timeout(self.timeout, self.exchange(request.to_string()))
            .await
            .map_err(|_| DriverError::Timeout(self.timeout.as_millis() as u64))??;
        let value = parse_reply(&text)?;
        if let Some(message) = error_status(&value) {
            return Err(DriverError::Rejected(message));
        }
        Ok(value)
    }

    async fn exchange(&self, request: String) -> Result<String, DriverError> {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| DriverError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| DriverError::Connect(e.to_string()))?;
        let mut reply = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| DriverError::Connect(e.to_string()))?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
            if reply.len() > MAX_REPLY {
                return Err(DriverError::Malformed(format!(
                    "reply over {MAX_REPLY} bytes"
                )));
            }
        }
        String::from_utf8(reply).map_err(|_| DriverError::Malformed("reply is not UTF-8".into()))
    }
}

/// Parses a cgminer reply, tolerating the trailing NUL byte some firmwares send.
pub fn parse_reply(text: &str) -> Result<Value, DriverError> {
    let trimmed = text.trim_end_matches(['\0', '\n', '\r', ' ']);
    serde_json::from_str(trimmed).map_err(|e| {
        let head: String = trimmed.chars().take(60).collect();
        DriverError::Malformed(format!("{e} in {head:?}"))
    })
}

/// The miner's error message if the reply's STATUS says E (error) or F (fatal).
fn error_status(value: &Value) -> Option<String> {
    let status = value.pointer("/STATUS/0")?;
    match status.get("STATUS").and_then(Value::as_str) {
        Some("E") | Some("F") => Some(
            status
                .get("Msg")
                .and_then(Value::as_str)
                .unwrap_or("error without a message")
                .to_string(),
        ),
        _ => None,
    }
}

/// One command's section of a `+`-joined reply: `reply[command][0]`.
pub fn section<'a>(reply: &'a Value, command: &str) -> Result<&'a Value, DriverError> {
    reply
        .get(command)
        .and_then(|v| v.get(0))
        .ok_or_else(|| DriverError::Malformed(format!("no '{command}' section in the reply")))
}

/// A number at a JSON pointer, accepting numbers and numeric strings.
pub fn number_at(value: &Value, pointer: &str) -> Option<f64> {
    match value.pointer(pointer)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches(" W").parse().ok(),
        _ => None,
    }
}
