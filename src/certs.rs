//! Development certificates: a CA and a serving certificate, generated in Rust (rcgen, no
//! openssl). Also the little X.509 reading the server needs (a certificate's expiry).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The names every development serving certificate is valid for.
pub const DEFAULT_HOSTS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// How long the development CA is valid, in days.
const CA_DAYS: i64 = 3650;
/// How long the development serving certificate is valid, in days.
const LEAF_DAYS: i64 = 365;

/// Options of `certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Where to write ca.crt, ca.key, tls.crt and tls.key.
    #[arg(long, env = "DIND_INJECTOR_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// Extra names (DNS names or IP addresses) for the serving certificate, besides 127.0.0.1,
    /// ::1 and localhost, as a comma-separated list.
    #[arg(long, env = "DIND_INJECTOR_CERTS_HOSTS", value_name = "HOST,…", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Overwrite certificate files that already exist.
    #[arg(long, env = "DIND_INJECTOR_CERTS_FORCE")]
    pub force: bool,
}

/// A development CA and a serving certificate it signed, all PEM.
#[derive(Clone)]
pub struct DevCerts {
    /// The CA certificate (what clients trust: `curl --cacert ca.crt`).
    pub ca_cert_pem: String,
    /// The CA's private key (PKCS#8).
    pub ca_key_pem: String,
    /// The serving certificate followed by the CA certificate (a full chain).
    pub tls_cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub tls_key_pem: String,
    /// The names the serving certificate is valid for.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        f.debug_struct("DevCerts").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A host name is not a valid DNS name or IP address.
    #[error("--hosts: {host:?} is not a DNS name or an IP address ({message})")]
    BadHost {
        /// The host given.
        host: String,
        /// Why rcgen refused it.
        message: String,
    },
    /// rcgen failed to generate a key or sign a certificate.
    #[error("cannot generate the {what}: {message}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A file exists and `--force` was not given.
    #[error("{} already exists; pass --force to replace the development certificates", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The file names `write_dev_certs` writes, in `dir`.
pub const FILE_NAMES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

/// Generates a development CA and a serving certificate signed by it for 127.0.0.1, ::1,
/// localhost and `hosts`. Each call makes new keys (so a new serial).
pub fn generate_dev_certs(hosts: &[String]) -> Result<DevCerts, CertError> {
    let mut names: Vec<String> = DEFAULT_HOSTS.iter().map(|h| (*h).to_owned()).collect();
    for h in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        if !names.iter().any(|n| n == h) {
            names.push(h.to_owned());
        }
    }
    let gen_err = |what: &'static str| move |e: rcgen::Error| CertError::Generate { what, message: e.to_string() };
    let today = days_since_epoch(SystemTime::now());
    // date_time_ymd panics on an invalid date; civil_from_days only yields valid ones.
    let date = |days| {
        let (y, m, d) = ymd(days);
        rcgen::date_time_ymd(y, m, d)
    };

    let ca_key = KeyPair::generate().map_err(gen_err("CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "dind-injector development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_before = date(today - 1);
    ca_params.not_after = date(today + CA_DAYS);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err("CA certificate"))?;

    let mut leaf_params = CertificateParams::default();
    for name in &names {
        if name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(name) {
            return Err(CertError::BadHost {
                host: name.clone(),
                message: "letters, digits, `-` and `.` only, like webhook.ci.svc".into(),
            });
        }
        let one =
            CertificateParams::new(vec![name.clone()]).map_err(|e| CertError::BadHost { host: name.clone(), message: e.to_string() })?;
        leaf_params.subject_alt_names.extend(one.subject_alt_names);
    }
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params.distinguished_name.push(DnType::CommonName, "dind-injector development server");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = date(today - 1);
    leaf_params.not_after = date(today + LEAF_DAYS);
    let leaf_key = KeyPair::generate().map_err(gen_err("serving key"))?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).map_err(gen_err("serving certificate"))?;

    let ca_cert_pem = ca_cert.pem();
    Ok(DevCerts {
        tls_cert_pem: format!("{}{}", leaf_cert.pem(), ca_cert_pem),
        tls_key_pem: leaf_key.serialize_pem(),
        ca_key_pem: ca_key.serialize_pem(),
        ca_cert_pem,
        hosts: names,
    })
}

/// Whether `name` is a DNS name a certificate can carry (a leading `*.` wildcard allowed).
pub(crate) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key` into `dir` (created if needed), keys with
/// mode 0600. Each file is written to a temporary name and renamed, so a server polling the
/// files never reads half of one.
pub fn write_dev_certs(dir: &Path, certs: &DevCerts) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.to_owned(), source })?;
    let files = [
        ("ca.crt", &certs.ca_cert_pem, false),
        ("ca.key", &certs.ca_key_pem, true),
        ("tls.crt", &certs.tls_cert_pem, false),
        ("tls.key", &certs.tls_key_pem, true),
    ];
    for (name, text, secret) in files {
        write_atomically(&dir.join(name), text.as_bytes(), secret)?;
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write { path: path.to_owned(), source };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(err)?;
    #[cfg(unix)]
    {
        // The mode given to open is masked by the umask and ignored for an existing file.
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Runs `certs`.
pub fn run(args: &CertsArgs) -> Result<ExitCode, String> {
    if !args.force
        && let Some(existing) = FILE_NAMES.iter().map(|n| args.out.join(n)).find(|p| p.exists())
    {
        return Err(CertError::Exists { path: existing }.to_string());
    }
    let certs = generate_dev_certs(&args.hosts).map_err(|e| e.to_string())?;
    write_dev_certs(&args.out, &certs).map_err(|e| e.to_string())?;
    let dir = args.out.display();
    println!(
        "wrote {dir}/ca.crt, {dir}/ca.key, {dir}/tls.crt and {dir}/tls.key (serving certificate for {}, valid {LEAF_DAYS} days); trust {dir}/ca.crt",
        certs.hosts.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// When an X.509 certificate (DER) expires, in seconds since the Unix epoch; `None` when the
/// DER cannot be read that far.
pub fn not_after_unix(cert_der: &[u8]) -> Option<i64> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    // signature, issuer, validity SEQUENCE { notBefore, notAfter }, … }, … }
    let (tag, cert, _) = der_item(cert_der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der_item(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = der_item(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..3 {
        tbs = der_item(tbs)?.2; // serialNumber, signature, issuer
    }
    let (tag, validity, _) = der_item(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = der_item(validity)?;
    let (tag, time, _) = der_item(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSSZ: years 50–99 are 19xx (RFC 5280).
            let yy: i64 = text.get(0..2)?.parse().ok()?;
            format!("{}{}", if yy >= 50 { "19" } else { "20" }, text)
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    if full.len() != 15 || !full.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| full.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// One DER item: its tag, its contents and what follows it.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = (rest.get(..n)?, rest.get(n..)?);
        rest = after;
        bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

pub(crate) fn days_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs() / 86_400).unwrap_or(0))
}

/// The date `days` days after 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, u8::try_from(m).unwrap_or(1), u8::try_from(d).unwrap_or(1))
}

/// Days from 1970-01-01 to the date (the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after the epoch as rcgen's year, month, day.
pub(crate) fn ymd(days: i64) -> (i32, u8, u8) {
    let (y, m, d) = civil_from_days(days);
    (i32::try_from(y).unwrap_or(2000), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in [-1, 0, 59, 365, 11_016, 19_000, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn generated_certs_carry_the_hosts_and_expire_in_a_year() {
        let certs = generate_dev_certs(&["webhook.example".into(), "localhost".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(certs.hosts, ["127.0.0.1", "::1", "localhost", "webhook.example"]);
        assert_eq!(certs.tls_cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(certs.tls_key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{certs:?}").contains("PRIVATE"));
        let der = pem_body(&certs.tls_cert_pem);
        let not_after = not_after_unix(&der).unwrap_or_else(|| panic!("no notAfter"));
        let now = days_since_epoch(SystemTime::now()) * 86_400;
        assert!((not_after - now - LEAF_DAYS * 86_400).abs() <= 86_400, "{not_after} vs {now}");
    }

    #[test]
    fn bad_hosts_and_bad_der_are_errors_not_panics() {
        let e = generate_dev_certs(&["bad host!".into()]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("bad host!"), "{e}");
        for der in [&[][..], &[0x30], &[0x30, 0x85, 1, 1, 1, 1, 1], &[0x30, 0x03, 0x30, 0x01]] {
            assert_eq!(not_after_unix(der), None);
        }
    }

    #[test]
    fn certs_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut args = CertsArgs { out: dir.path().join("c"), hosts: vec![], force: false };
        assert!(run(&args).is_ok());
        let e = run(&args).err().unwrap_or_default();
        assert!(e.contains("--force"), "{e}");
        args.force = true;
        assert!(run(&args).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(args.out.join("tls.key")).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let b64: String =
            pem.lines().skip_while(|l| !l.starts_with("-----BEGIN")).skip(1).take_while(|l| !l.starts_with("-----END")).collect();
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default()
    }
}
