//! The cluster's certificates, and certificates with a chosen defect for tests: made with rcgen,
//! written as PEM files.

use super::layout::write_file;
use super::{RehearsalError, TlsFiles, io_err};

use std::fs;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn make_ca(common_name: &str) -> Result<Ca, RehearsalError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "distls rehearsal");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, -1..364);
    let key = KeyPair::generate()?;
    let pem = params.self_signed(&key)?.pem();
    Ok(Ca { params, key, pem })
}

/// A node certificate for `localhost` / 127.0.0.1 and the addresses `host_ips` (each both as an IP
/// SAN and as a DNS SAN spelled as the address: OTP's TLS distribution client checks the host part
/// of a `-name n@10.0.0.5` node as a DNS name), usable as TLS server and client, valid from
/// yesterday for a year; returns (certificate PEM, key PEM).
fn make_node_cert(
    ca: &Ca,
    common_name: &str,
    host_ips: &[String],
) -> Result<(String, String), RehearsalError> {
    let dns_ips: Vec<String> = host_ips.iter().map(|ip| format!("DNS:{ip}")).collect();
    let mut sans = vec!["localhost", "127.0.0.1"];
    sans.extend(host_ips.iter().chain(&dns_ips).map(String::as_str));
    make_leaf_cert(ca, common_name, &sans, -1..364)
}

/// A certificate for `sans` valid over `valid_days`, in days from now. A SAN that parses as an IP
/// address is an IP SAN, anything else a DNS name; `DNS:<text>` forces a DNS name (e.g.
/// `DNS:10.0.0.5`, which is what OTP's TLS distribution checks for a node named `n@10.0.0.5`).
fn make_leaf_cert(
    ca: &Ca,
    common_name: &str,
    sans: &[&str],
    valid_days: Range<i64>,
) -> Result<(String, String), RehearsalError> {
    let (forced_dns, auto): (Vec<&str>, Vec<&str>) =
        sans.iter().partition(|san| san.starts_with("DNS:"));
    let mut params =
        CertificateParams::new(auto.iter().map(|san| (*san).to_owned()).collect::<Vec<_>>())?;
    for san in forced_dns {
        let name = san.trim_start_matches("DNS:").to_owned();
        params
            .subject_alt_names
            .push(SanType::DnsName(name.try_into()?));
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    // ECDSA key: signing only (keyEncipherment is for RSA key transport).
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, valid_days);
    let key = KeyPair::generate()?;
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Valid over `valid_days`, counted in days from now.
fn set_validity(params: &mut CertificateParams, valid_days: Range<i64>) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let at = |days: i64| {
        let offset = Duration::from_secs(days.unsigned_abs() * 24 * 3600);
        if days < 0 { now - offset } else { now + offset }
    };
    params.not_before = at(valid_days.start);
    params.not_after = at(valid_days.end);
}

fn write_tls_files(
    dir: &Path,
    names: [&str; 3],
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<TlsFiles, RehearsalError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let files = TlsFiles {
        cacertfile: dir.join(names[0]),
        certfile: dir.join(names[1]),
        keyfile: dir.join(names[2]),
    };
    write_file(&files.cacertfile, ca_pem, 0o644)?;
    write_file(&files.certfile, cert_pem, 0o644)?;
    write_file(&files.keyfile, key_pem, 0o600)?;
    Ok(files)
}

/// The cluster's CA and node certificate (also for `host_ips`): `<ssl_dir>/{cacert,node_cert,node_key}.pem`.
pub(super) fn write_cluster_certs(
    ssl_dir: &Path,
    host_ips: &[String],
) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls rehearsal CA")?;
    let (cert, key) = make_node_cert(&ca, "distls rehearsal node", host_ips)?;
    write_tls_files(
        ssl_dir,
        ["cacert.pem", "node_cert.pem", "node_key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}

/// A fresh CA and a certificate for `sans` (see `make_leaf_cert`: `DNS:` forces a DNS name) valid over `valid_days` (in days from now, e.g. `-400..-1`
/// for an expired one), written as `<dir>/{cacert,cert,key}.pem`: certificates with a chosen defect.
pub fn write_custom_cert(
    dir: &Path,
    sans: &[&str],
    valid_days: Range<i64>,
) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls rehearsal custom CA")?;
    let (cert, key) = make_leaf_cert(&ca, "distls rehearsal custom node", sans, valid_days)?;
    write_tls_files(
        dir,
        ["cacert.pem", "cert.pem", "key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}

/// A fresh CA and two certificates for `sans` from it, valid from yesterday for 90 days: the
/// files of a rotation test (a CA rollover to the first, then a rotation to the second).
/// Written as `<dir>/cacert.pem`, `<dir>/{1,2}/{cert,key}.pem`; each set names the same CA.
pub fn write_rotation_certs(dir: &Path, sans: &[&str]) -> Result<[TlsFiles; 2], RehearsalError> {
    let ca = make_ca("distls rehearsal rotated CA")?;
    let mut sets = Vec::new();
    for n in ["1", "2"] {
        let (cert, key) = make_leaf_cert(
            &ca,
            &format!("distls rehearsal rotated node {n}"),
            sans,
            -1..90,
        )?;
        let set_dir = dir.join(n);
        let files = write_tls_files(
            &set_dir,
            ["cacert.pem", "cert.pem", "key.pem"],
            &ca.pem,
            &cert,
            &key,
        )?;
        sets.push(files);
    }
    let [first, second]: [TlsFiles; 2] = sets.try_into().unwrap_or_else(|_| unreachable!());
    Ok([first, second])
}

/// A certificate for `localhost` signed by a DIFFERENT, freshly made CA, written as
/// `<dir>/foreign_{cacert,cert,key}.pem`. A node that presents it is rejected by peers that trust
/// the cluster's CA.
pub fn write_foreign_ca_cert(dir: &Path) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls rehearsal FOREIGN CA")?;
    let (cert, key) = make_node_cert(&ca, "distls rehearsal foreign node", &[])?;
    write_tls_files(
        dir,
        ["foreign_cacert.pem", "foreign_cert.pem", "foreign_key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}

/// A CA and one node certificate for `host` (plus localhost and 127.0.0.1), written as
/// `<dir>/{cacert,node_cert,node_key}.pem`: the TLS files of a real-product test cluster whose
/// nodes are named `...@host`.
pub fn write_host_certs(dir: &Path, host: &str) -> Result<TlsFiles, RehearsalError> {
    let ca = make_ca("distls product test CA")?;
    let (cert, key) = make_leaf_cert(&ca, host, &[host, "localhost", "127.0.0.1"], -1..364)?;
    write_tls_files(
        dir,
        ["cacert.pem", "node_cert.pem", "node_key.pem"],
        &ca.pem,
        &cert,
        &key,
    )
}
