//! TLS to PostgreSQL as libpq does it, on rustls.
//!
//! `sslmode` comes from the connection string (`?sslmode=` in a URL, `sslmode=` in
//! key=value form) or `PGSSLMODE`; `sslrootcert` likewise or `PGSSLROOTCERT`:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | no |
//! | `require` | always, or the connection fails | no |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA, and issued for the host name |
//!
//! Trusted CAs for the verify modes: the PEM file `sslrootcert` names, the
//! system's store for `sslrootcert=system`, else `~/.postgresql/root.crt` as
//! libpq does. tokio-postgres knows neither the verify modes nor `sslrootcert`,
//! so [`split`] takes them out of the string before it is parsed.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` tries without TLS first; nothing here needs that.
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// The TLS settings of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: SslMode,
    /// A PEM file of trusted CAs, or `system`.
    pub root_cert: Option<String>,
}

/// The connection string without `sslmode`/`sslrootcert` (for tokio-postgres),
/// and the TLS settings they and the environment (`env`, e.g. `std::env::var`)
/// give.
pub fn split(
    conn: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, Settings), String> {
    let (rest, taken) = if conn.trim_start().contains("://") {
        take_from_url(conn)
    } else {
        take_from_key_values(conn)?
    };
    let pick = |key: &str, var: &str| {
        taken
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| env(var).filter(|v| !v.is_empty()))
    };
    let mode = match pick("sslmode", "PGSSLMODE") {
        Some(m) => SslMode::parse(&m)?,
        None => SslMode::Prefer,
    };
    let settings = Settings {
        mode,
        root_cert: pick("sslrootcert", "PGSSLROOTCERT"),
    };
    Ok((rest, settings))
}

const OURS: [&str; 2] = ["sslmode", "sslrootcert"];

/// `scheme://…?a=b&sslmode=x`: the query's pairs named in [`OURS`] are taken out.
fn take_from_url(conn: &str) -> (String, Vec<(String, String)>) {
    // The password may hold `?`; the query starts after the userinfo.
    let after_userinfo = conn.rfind('@').map_or(0, |at| at + 1);
    let Some(q) = conn[after_userinfo..].find('?').map(|i| i + after_userinfo) else {
        return (conn.to_owned(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in conn[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if OURS.contains(&key) {
            let value: String = url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default();
            taken.push((key.to_owned(), value));
        } else {
            kept.push(pair);
        }
    }
    let mut rest = conn[..q].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, taken)
}

/// libpq's `key=value key='quoted \' value'` form.
fn take_from_key_values(conn: &str) -> Result<(String, Vec<(String, String)>), String> {
    let bytes = conn.as_bytes();
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    let mut i = 0;
    let mut word = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        word += 1;
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = conn[start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() || bytes[i] != b'=' {
            // Not quoted: a word without `=` may be a password cut at a space,
            // or a URL missing its `//`.
            return Err(format!(
                "word {word} of the connection string has no `=value` (not shown: it may \
                 hold a password); expected postgres://user:password@host/db or \
                 key=value pairs, a value with spaces single-quoted"
            ));
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1] as char);
                        i += 2;
                    }
                    Some(_) => {
                        let c = conn[i..].chars().next().expect("inside the string");
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
        } else {
            let v = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&conn[v..i]);
        }
        if OURS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(&conn[start..i]);
        }
    }
    Ok((kept.join(" "), taken))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration `settings` ask for (not for `disable`).
pub fn client_config(settings: &Settings) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match settings.mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(settings.root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("cannot use the trusted CAs: {e}"))?;
            if settings.mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(config)
}

/// The CAs the verify modes trust.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match root_cert {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(format!(
                    "sslrootcert=system: no CA certificates found in the system store ({:?})",
                    found.errors
                ));
            }
            found.certs
        }
        given => {
            let path = match given {
                Some(p) => PathBuf::from(p),
                None => std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                    .filter(|p| p.exists())
                    .ok_or_else(|| {
                        "sslmode verify-ca/verify-full needs trusted CAs: set sslrootcert=/path/to/ca.pem \
                         (or sslrootcert=system, or PGSSLROOTCERT) in the connection string"
                            .to_owned()
                    })?,
            };
            CertificateDer::pem_file_iter(&path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?
        }
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err("sslrootcert holds no usable CA certificate".into());
    }
    Ok(store)
}

/// `prefer` and `require`: encrypted, but any certificate is accepted (libpq's
/// meaning of these modes). The handshake's signatures are still checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name it was issued
/// for is not compared with the host.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn url_form_loses_only_the_tls_keys() {
        let (rest, s) = split(
            "postgres://u:p?w@db.example:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
            no_env,
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p?w@db.example:5432/x?application_name=a"
        );
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, s) = split("postgres://u@h/x?sslmode=require", no_env).unwrap();
        assert_eq!(
            (rest.as_str(), s.mode),
            ("postgres://u@h/x", SslMode::Require)
        );
    }

    #[test]
    fn key_value_form_with_quotes() {
        let (rest, s) = split(
            "host=h password='a b\\'c' sslmode = verify-ca sslrootcert='/x y/ca.pem' dbname=d",
            no_env,
        )
        .unwrap();
        assert_eq!(rest, "host=h password='a b\\'c' dbname=d");
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert.as_deref(), Some("/x y/ca.pem"));
        assert!(split("host=h password='open", no_env).is_err());
    }

    #[test]
    fn environment_fills_in_and_the_string_wins() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-full".to_owned()),
            "PGSSLROOTCERT" => Some("system".to_owned()),
            _ => None,
        };
        let (_, s) = split("postgres://h/x", env).unwrap();
        assert_eq!(
            (s.mode, s.root_cert.as_deref()),
            (SslMode::VerifyFull, Some("system"))
        );
        let (_, s) = split("postgres://h/x?sslmode=disable", env).unwrap();
        assert_eq!(s.mode, SslMode::Disable);
        assert_eq!(
            split("postgres://h/x", no_env).unwrap().1.mode,
            SslMode::Prefer
        );
        let bad = split("postgres://h/x?sslmode=verify_full", no_env).unwrap_err();
        assert!(bad.contains("verify-full"), "{bad}");
    }

    #[test]
    fn verify_modes_without_trusted_cas_say_how_to_give_them() {
        let settings = Settings {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        let e = client_config(&settings).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
