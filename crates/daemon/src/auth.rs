//! Who may do what on the daemon's HTTP endpoint: bearer tokens with roles. The site file
//! holds only each token's SHA-256 (`[[api.token]]`), never the token; `hashsink token` makes
//! one. Roles are ordered: a `viewer` reads (status, miners, the ledger, `/metrics`, the
//! dashboard's data), an `operator` also acts (shed, resume, curtail, exclude or include a
//! miner, push the surplus), an `admin` may also enter pool payouts and coin sales into the
//! ledger. Comparison is in
//! constant time. With no tokens configured the endpoint is open, and the daemon then refuses
//! to listen anywhere but on loopback.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

/// One `[[api.token]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<(String, Role, [u8; 32])>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq)]
pub enum Denied {
    /// No token, or one that is not known: 401.
    Unauthenticated,
    /// A known token whose role is too low: 403.
    Forbidden { name: String, role: Role },
}

impl Tokens {
    /// Validates the tables; `at(i)` names the i-th one's place in the file.
    pub fn new(files: &[TokenFile], at: &dyn Fn(usize) -> String) -> Result<Self, String> {
        let mut entries: Vec<(String, Role, [u8; 32])> = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let bytes = hex32(&f.sha256).ok_or_else(|| {
                format!(
                    "{}: sha256 must be 64 hex digits (make a token with `hashsink token --name {} --role ..`)",
                    at(i),
                    f.name
                )
            })?;
            if f.name.trim().is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                return Err(format!(
                    "{}: name {:?} must be letters, digits, - _ . @",
                    at(i),
                    f.name
                ));
            }
            if entries.iter().any(|e| e.0 == f.name || e.2 == bytes) {
                return Err(format!(
                    "{}: a second token named {:?} or with the same hash",
                    at(i),
                    f.name
                ));
            }
            entries.push((f.name.clone(), f.role, bytes));
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks an `Authorization` header against the role a route needs; returns who it is.
    #[cfg(test)]
    pub fn check(&self, authorization: Option<&str>, needs: Role) -> Result<String, Denied> {
        self.caller(authorization, needs).map(|(actor, _)| actor)
    }

    /// Like `check`, with the caller's own role (an open endpoint's caller is an admin).
    pub fn caller(
        &self,
        authorization: Option<&str>,
        needs: Role,
    ) -> Result<(String, Role), Denied> {
        if self.entries.is_empty() {
            return Ok(("http".into(), Role::Admin));
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or(Denied::Unauthenticated)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, so the time does not say which one matched.
        let mut found = None;
        for (name, role, hash) in &self.entries {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some((name, *role));
            }
        }
        let (name, role) = found.ok_or(Denied::Unauthenticated)?;
        if role < needs {
            return Err(Denied::Forbidden {
                name: name.clone(),
                role,
            });
        }
        Ok((format!("operator:{name}"), role))
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random token and its hash (hex).
pub fn new_token() -> Result<(String, String), String> {
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness from the system: {e}"))?;
    let token = format!(
        "hs_{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let hash = hash_of(&token);
    Ok((token, hash))
}

/// The hash of a token as written in the site file.
pub fn hash_of(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_gets_what_it_should_and_nothing_more() {
        let (viewer, vh) = new_token().unwrap();
        let (operator, oh) = new_token().unwrap();
        let tokens = Tokens::new(
            &[
                TokenFile {
                    name: "screen".into(),
                    role: Role::Viewer,
                    sha256: vh,
                },
                TokenFile {
                    name: "alice".into(),
                    role: Role::Operator,
                    sha256: oh,
                },
            ],
            &|i| format!("site.toml token {i}"),
        )
        .unwrap();
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            tokens.check(Some(&bearer(&viewer)), Role::Viewer),
            Ok("operator:screen".into())
        );
        assert_eq!(
            tokens.check(Some(&bearer(&viewer)), Role::Operator),
            Err(Denied::Forbidden {
                name: "screen".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(
            tokens.check(Some(&bearer(&operator)), Role::Operator),
            Ok("operator:alice".into())
        );
        assert_eq!(
            tokens.check(Some(&bearer(&operator)), Role::Admin),
            Err(Denied::Forbidden {
                name: "alice".into(),
                role: Role::Operator
            })
        );
        for bad in [
            None,
            Some("Bearer "),
            Some("Basic YWxpY2U6eA=="),
            Some("Bearer hs_nope"),
            Some(viewer.as_str()),
        ] {
            assert_eq!(
                tokens.check(bad, Role::Viewer),
                Err(Denied::Unauthenticated),
                "{bad:?}"
            );
        }
        // No tokens: open (the daemon then binds loopback only).
        assert_eq!(
            Tokens::default().check(None, Role::Admin),
            Ok("http".into())
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        let at = |i: usize| format!("site.toml:{i}");
        let e = Tokens::new(
            &[TokenFile {
                name: "a".into(),
                role: Role::Admin,
                sha256: "abc".into(),
            }],
            &at,
        )
        .unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        let h = hash_of("x");
        let e = Tokens::new(
            &[
                TokenFile {
                    name: "a".into(),
                    role: Role::Admin,
                    sha256: h.clone(),
                },
                TokenFile {
                    name: "a".into(),
                    role: Role::Viewer,
                    sha256: hash_of("y"),
                },
            ],
            &at,
        )
        .unwrap_err();
        assert!(e.contains("second token"), "{e}");
        let e = Tokens::new(
            &[TokenFile {
                name: "a b".into(),
                role: Role::Admin,
                sha256: h,
            }],
            &at,
        )
        .unwrap_err();
        assert!(e.contains("letters"), "{e}");
    }
}
