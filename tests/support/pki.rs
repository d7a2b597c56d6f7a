//! Test certificates made with rcgen: certificate authorities and the certificates they sign
//! (servers, clients, expired ones, ones for another host name), written as PEM files.

use std::path::{Path, PathBuf};

/// What a certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server's certificate.
    Server,
    /// A TLS client's certificate (mutual TLS).
    Client,
}

/// The PEM files of a certificate and its key.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A certificate authority made for a test.
pub struct Ca {
    /// Its self-signed certificate.
    pub cert: rcgen::Certificate,
    /// Its key.
    pub key: rcgen::KeyPair,
}

impl Ca {
    /// A new CA with the common name `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA's certificate to `path`; answers `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.pem()).unwrap();
        path.to_path_buf()
    }

    /// A certificate signed by this CA for the DNS names or IP addresses `names`, with the common
    /// name `cn` (and organisation "flumen tests"); `expired` makes it valid only in 2020.
    /// Answers `(certificate PEM, key PEM)`.
    pub fn issue(&self, cn: &str, names: &[&str], usage: Usage, expired: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "flumen tests");
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![match usage {
            Usage::Server => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.cert, &self.key).unwrap().pem(), key.serialize_pem())
    }

    /// As [`Ca::issue`], written to `dir/<stem>.pem` and `dir/<stem>.key`.
    pub fn issue_to(&self, dir: &Path, stem: &str, cn: &str, names: &[&str], usage: Usage, expired: bool) -> Pem {
        let (cert, key) = self.issue(cn, names, usage, expired);
        let pem = Pem { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) };
        std::fs::write(&pem.cert, cert).unwrap();
        std::fs::write(&pem.key, key).unwrap();
        pem
    }
}
