//! Sprig's certificate functions (`genCA`, `genSelfSignedCert`, `genSignedCert`, their
//! `WithKey` forms, `buildCustomCert`, `genPrivateKey`), which charts use to make webhook
//! certificates. They are random by nature, as in Helm. One difference: keys are ECDSA
//! P-256 (rcgen over ring cannot generate RSA), where Sprig makes RSA 2048; the
//! certificates carry Sprig's subject, SANs, validity, key usages and CA flag.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::{CallError, Ctx, FnResult, Registry, Ty, int_arg, str_arg};
use crate::{Clock, Object, Value};

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("genCA", &[Str, Int], None, |c, a| {
        ca(c, str_arg(&a[0]), int_arg(&a[1]), None)
    });
    r.add("genCAWithKey", &[Str, Int, Str], None, |c, a| {
        ca(c, str_arg(&a[0]), int_arg(&a[1]), Some(str_arg(&a[2])))
    });
    r.add("genSelfSignedCert", &[Str, Any, Any, Int], None, |c, a| {
        leaf(c, &a, None, None)
    });
    r.add(
        "genSelfSignedCertWithKey",
        &[Str, Any, Any, Int, Str],
        None,
        |c, a| leaf(c, &a, None, Some(str_arg(&a[4]))),
    );
    r.add("genSignedCert", &[Str, Any, Any, Int, Any], None, |c, a| {
        leaf(c, &a, Some(&a[4]), None)
    });
    r.add(
        "genSignedCertWithKey",
        &[Str, Any, Any, Int, Any, Str],
        None,
        |c, a| leaf(c, &a, Some(&a[4]), Some(str_arg(&a[5]))),
    );
    r.add("buildCustomCert", &[Str, Str], None, |_, a| {
        let decode = |v: &Value, what: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(str_arg(v))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| CallError::Msg(format!("unable to decode base64 {what}")))
        };
        let cert = decode(&a[0], "certificate")?;
        let key = decode(&a[1], "private key")?;
        KeyPair::from_pem(&key).map_err(|e| msg(format!("error parsing private key: {e}")))?;
        if !cert.contains("-----BEGIN CERTIFICATE-----") {
            return Err(msg("unable to decode certificate".into()));
        }
        Ok(Value::object(Certificate {
            cert,
            key,
            issuer: None,
        }))
    });
    r.add("genPrivateKey", &[Str], None, |_, a| match str_arg(&a[0]) {
        "ecdsa" => generate(&rcgen::PKCS_ECDSA_P256_SHA256),
        "ed25519" => generate(&rcgen::PKCS_ED25519),
        other => Err(msg(format!(
            "genPrivateKey {other:?}: flotilla's template engine generates only \"ecdsa\" and \"ed25519\" keys"
        ))),
    });
}

fn msg(m: String) -> CallError {
    CallError::Msg(m)
}

fn generate(alg: &'static rcgen::SignatureAlgorithm) -> FnResult {
    let key = KeyPair::generate_for(alg).map_err(|e| msg(e.to_string()))?;
    Ok(Value::string(key.serialize_pem()))
}

/// Sprig's `certificate`: `.Cert` and `.Key` as PEM.
#[derive(Debug)]
struct Certificate {
    cert: String,
    key: String,
    /// For certificates made here: what signs with them, without parsing the PEM again.
    issuer: Option<Arc<Issuer<'static, KeyPair>>>,
}

impl Object for Certificate {
    fn type_name(&self) -> &str {
        "sprig.certificate"
    }

    fn field(&self, name: &str) -> Option<Value> {
        match name {
            "Cert" => Some(Value::string(self.cert.clone())),
            "Key" => Some(Value::string(self.key.clone())),
            _ => None,
        }
    }

    fn display(&self) -> String {
        format!("{{{} {}}}", self.cert, self.key)
    }

    fn to_data(&self) -> Value {
        Value::map(
            [
                ("Cert".to_string(), Value::string(self.cert.clone())),
                ("Key".to_string(), Value::string(self.key.clone())),
            ]
            .into_iter()
            .collect(),
        )
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Sprig's base template: CN, SANs, validity from now, and its key usages.
fn base_params(c: &Ctx<'_>, cn: &str, days: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let now = match c.options.helm.clock {
        Clock::System => time::OffsetDateTime::now_utc(),
        Clock::Fixed(t) => t,
    };
    params.not_before = now;
    params.not_after = now + time::Duration::days(days);
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    params.serial_number = Some(serial.to_vec().into());
    params.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
}

fn key_pair(pem: Option<&str>) -> Result<KeyPair, CallError> {
    match pem {
        Some(p) => KeyPair::from_pem(p).map_err(|e| msg(format!("error parsing private key: {e}"))),
        None => KeyPair::generate().map_err(|e| msg(e.to_string())),
    }
}

fn ca(c: &Ctx<'_>, cn: &str, days: i64, key: Option<&str>) -> FnResult {
    let key = key_pair(key)?;
    let mut params = base_params(c, cn, days);
    params.key_usages.push(KeyUsagePurpose::KeyCertSign);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params
        .self_signed(&key)
        .map_err(|e| msg(format!("error creating certificate: {e}")))?;
    let key_pem = key.serialize_pem();
    Ok(Value::object(Certificate {
        cert: cert.pem(),
        key: key_pem,
        issuer: Some(Arc::new(Issuer::new(params, key))),
    }))
}

/// The IPs and DNS names of Sprig's `[]interface{}` arguments.
fn sans(ips: &Value, dns: &Value) -> Result<Vec<SanType>, CallError> {
    let mut out = Vec::new();
    let items = |v: &Value| match v {
        Value::List(l) => l.iter().cloned().collect::<Vec<_>>(),
        Value::Nil => Vec::new(),
        other => vec![other.clone()],
    };
    for ip in items(ips) {
        let text = super::strval(&ip);
        let parsed: IpAddr = text
            .parse()
            .map_err(|_| msg(format!("error parsing ip: {text}")))?;
        out.push(SanType::IpAddress(parsed));
    }
    for name in items(dns) {
        let text = super::strval(&name);
        let name = text
            .clone()
            .try_into()
            .map_err(|e| msg(format!("bad DNS name {text:?}: {e}")))?;
        out.push(SanType::DnsName(name));
    }
    Ok(out)
}

fn leaf(c: &Ctx<'_>, a: &[Value], ca: Option<&Value>, key: Option<&str>) -> FnResult {
    let key = key_pair(key)?;
    let mut params = base_params(c, str_arg(&a[0]), int_arg(&a[3]));
    params.subject_alt_names = sans(&a[1], &a[2])?;
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = match ca {
        None => params.self_signed(&key),
        Some(v) => {
            let Some(ca) = (match v {
                Value::Object(o) => o.as_any().downcast_ref::<Certificate>(),
                _ => None,
            }) else {
                return Err(msg(format!(
                    "wrong type for value; expected sprig.certificate; got {}",
                    v.type_name()
                )));
            };
            match &ca.issuer {
                Some(issuer) => params.signed_by(&key, issuer.as_ref()),
                None => {
                    let ca_key = KeyPair::from_pem(&ca.key)
                        .map_err(|e| msg(format!("error parsing private key: {e}")))?;
                    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)
                        .map_err(|e| msg(format!("error parsing certificate: {e}")))?;
                    params.signed_by(&key, &issuer)
                }
            }
        }
    }
    .map_err(|e| msg(format!("error creating certificate: {e}")))?;
    Ok(Value::object(Certificate {
        cert: cert.pem(),
        key: key.serialize_pem(),
        issuer: None,
    }))
}
