//! What a certificate is, to show it and to reason about trust: its subject, serial, expiry and
//! fingerprint, and whether a leaf chains to a set of CAs for both ends of a distribution link.
//! Pure: bytes in, facts out.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

/// One certificate, as an operator identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// Upper-case hex, without separators (as `openssl x509 -serial` prints it).
    pub serial: String,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// sha256 of the DER, lower-case hex.
    pub sha256: String,
}

impl CertSummary {
    pub fn from_der(der: &[u8]) -> Result<CertSummary, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|err| format!("not a valid X.509 certificate: {err}"))?;
        Ok(CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: hex::encode_upper(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
            sha256: crate::atomic_file::sha256_hex(der),
        })
    }

    /// `not_after` as RFC 3339 (UTC).
    pub fn not_after_text(&self) -> String {
        let at = UNIX_EPOCH + Duration::from_secs(self.not_after.max(0).unsigned_abs());
        humantime::format_rfc3339_seconds(at).to_string()
    }

    /// Whole days from `now` to its expiry (negative once expired).
    pub fn days_left(&self, now: SystemTime) -> i64 {
        (self.not_after - unix_seconds(now)).div_euclid(86_400)
    }

    /// `subject CN=…, serial 1A2B…, expires 2027-01-01T00:00:00Z`.
    pub fn describe(&self) -> String {
        format!(
            "{}, serial {}, expires {}",
            self.subject,
            self.serial,
            self.not_after_text()
        )
    }
}

/// Every CERTIFICATE block of a PEM file, as DER.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("bad PEM: {err}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block".to_string());
    }
    Ok(certs)
}

/// Whether `chain` (leaf first, then intermediates) verifies against the trust anchors `cas`
/// for serverAuth and for clientAuth (a distribution link verifies both ends), at `now` clamped
/// into the leaf's validity (expiry is a check of its own). `Err`: why, per usage.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    cas: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), String> {
    let leaf = chain.first().ok_or("no certificate")?;
    let anchors = cas
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("a CA certificate cannot be a trust anchor: {err:?}"))?;
    let end_entity = EndEntityCert::try_from(leaf)
        .map_err(|err| format!("not a usable end-entity certificate: {err:?}"))?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|err| format!("{err}"))?;
    let validity = cert.validity();
    let at = unix_seconds(now).clamp(
        validity.not_before.timestamp().max(0),
        validity.not_after.timestamp().max(0),
    );
    let time = UnixTime::since_unix_epoch(Duration::from_secs(at.unsigned_abs()));
    let mut failures = Vec::new();
    for (usage, name) in [
        (KeyUsage::server_auth(), "serverAuth"),
        (KeyUsage::client_auth(), "clientAuth"),
    ] {
        if let Err(err) = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
            time,
            usage,
            None,
            None,
        ) {
            failures.push(format!("{name}: {}", describe_chain_error(&err)));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn describe_chain_error(err: &webpki::Error) -> String {
    match err {
        webpki::Error::UnknownIssuer => "not issued by a CA in cacertfile".to_string(),
        webpki::Error::InvalidSignatureForPublicKey => {
            "not issued by a CA in cacertfile (one with the same name but another key)".to_string()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "the extended key usage does not allow it".to_string()
        }
        other => format!("{other:?}"),
    }
}

pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    }

    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "node");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.signed_by(&key, issuer).unwrap()
    }

    #[test]
    fn a_leaf_verifies_only_against_the_ca_that_issued_it() {
        let (ca_a, issuer_a) = ca("ca A");
        let (ca_b, _) = ca("ca B");
        let leaf = leaf(&issuer_a);
        let chain = [leaf.der().clone()];
        let now = SystemTime::now();
        assert_eq!(verify_chain(&chain, &[ca_a.der().clone()], now), Ok(()));
        let both = [ca_b.der().clone(), ca_a.der().clone()];
        assert_eq!(verify_chain(&chain, &both, now), Ok(()));
        let err = verify_chain(&chain, &[ca_b.der().clone()], now).unwrap_err();
        assert!(
            err.contains("serverAuth: not issued by a CA in cacertfile"),
            "{err}"
        );
        assert!(err.contains("clientAuth"), "{err}");
    }

    #[test]
    fn summarises_a_certificate() {
        let (_, issuer) = ca("ca A");
        let leaf = leaf(&issuer);
        let summary = CertSummary::from_der(leaf.der()).unwrap();
        assert_eq!(summary.subject, "CN=node");
        assert_eq!(summary.issuer, "CN=ca A");
        assert!(!summary.serial.is_empty());
        assert_eq!(summary.sha256.len(), 64);
        assert!(summary.describe().starts_with("CN=node, serial "));
        let pem = leaf.pem();
        assert_eq!(pem_certificates(pem.as_bytes()).unwrap().len(), 1);
        assert!(pem_certificates(b"nothing").is_err());
    }
}
