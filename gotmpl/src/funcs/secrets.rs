//! Sprig's password and symmetric-encryption functions, byte for byte as Sprig v3.3 writes
//! them: `bcrypt` and `htpasswd` (Go's `x/crypto/bcrypt` at its default cost, `$2a$`),
//! `derivePassword` (the Master Password algorithm: scrypt, then HMAC-SHA256 picking from
//! templates), `encryptAES`/`decryptAES` (AES-256-CBC, the password zero-padded or cut to 32
//! bytes as the key, a random IV in front, base64). `bcrypt`, `htpasswd` and `encryptAES`
//! are random (salt, IV) as in Helm; `derivePassword` and `decryptAES` are deterministic.
//! Where Sprig returns an error text as the result (not an error), so do these.

use aes::Aes256;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine as _;
use hmac::{Hmac, Mac};

use super::{CallError, Ctx, FnResult, Registry, Ty, int_arg, str_arg};
use crate::Value;
use crate::helm::bytes_of;

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("bcrypt", &[Bytes], None, |_, a| {
        Ok(Value::string(bcrypt(bytes_of(&a[0]))))
    });
    r.add("htpasswd", &[Str, Bytes], None, |_, a| {
        let user = str_arg(&a[0]);
        Ok(Value::string(if user.contains(':') {
            format!("invalid username: {user}")
        } else {
            format!("{user}:{}", bcrypt(bytes_of(&a[1])))
        }))
    });
    r.add(
        "derivePassword",
        &[Int, Str, Str, Str, Str],
        None,
        |c, a| {
            derive_password(
                c,
                int_arg(&a[0]),
                str_arg(&a[1]),
                str_arg(&a[2]),
                str_arg(&a[3]),
                str_arg(&a[4]),
            )
        },
    );
    r.add("encryptAES", &[Str, Bytes], None, |c, a| {
        encrypt_aes(c, str_arg(&a[0]), bytes_of(&a[1]))
    });
    r.add("decryptAES", &[Str, Str], None, |c, a| {
        decrypt_aes(c, str_arg(&a[0]), str_arg(&a[1]))
    });
}

/// Go's `bcrypt.DefaultCost`.
const BCRYPT_COST: u32 = 10;

/// Go's `bcrypt.GenerateFromPassword` refuses longer passwords (it used to cut them).
const BCRYPT_MAX_PASSWORD: usize = 72;

/// Sprig's `bcrypt`: the hash, or Sprig's error text as the result.
fn bcrypt(password: &[u8]) -> String {
    if password.len() > BCRYPT_MAX_PASSWORD {
        return "failed to encrypt string with bcrypt: bcrypt: password length exceeds 72 bytes"
            .to_string();
    }
    match bcrypt::hash_with_result(password, BCRYPT_COST) {
        Ok(h) => h.format_for_version(bcrypt::Version::TwoA),
        Err(e) => format!("failed to encrypt string with bcrypt: {e}"),
    }
}

const MASTER_PASSWORD_SEED: &[u8] = b"com.lyndir.masterpassword";

/// Sprig's `passwordTypeTemplates`.
fn password_templates(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "maximum" => &["anoxxxxxxxxxxxxxxxxx", "axxxxxxxxxxxxxxxxxno"],
        "long" => &[
            "CvcvnoCvcvCvcv",
            "CvcvCvcvnoCvcv",
            "CvcvCvcvCvcvno",
            "CvccnoCvcvCvcv",
            "CvccCvcvnoCvcv",
            "CvccCvcvCvcvno",
            "CvcvnoCvccCvcv",
            "CvcvCvccnoCvcv",
            "CvcvCvccCvcvno",
            "CvcvnoCvcvCvcc",
            "CvcvCvcvnoCvcc",
            "CvcvCvcvCvccno",
            "CvccnoCvccCvcv",
            "CvccCvccnoCvcv",
            "CvccCvccCvcvno",
            "CvcvnoCvccCvcc",
            "CvcvCvccnoCvcc",
            "CvcvCvccCvccno",
            "CvccnoCvcvCvcc",
            "CvccCvcvnoCvcc",
            "CvccCvcvCvccno",
        ],
        "medium" => &["CvcnoCvc", "CvcCvcno"],
        "short" => &["Cvcn"],
        "basic" => &["aaanaaan", "aannaaan", "aaannaaa"],
        "pin" => &["nnnn"],
        _ => return None,
    })
}

/// Sprig's `templateCharacters`.
fn template_characters(class: u8) -> &'static [u8] {
    match class {
        b'V' => b"AEIOU",
        b'C' => b"BCDFGHJKLMNPQRSTVWXYZ",
        b'v' => b"aeiou",
        b'c' => b"bcdfghjklmnpqrstvwxyz",
        b'A' => b"AEIOUBCDFGHJKLMNPQRSTVWXYZ",
        b'a' => b"AEIOUaeiouBCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz",
        b'n' => b"0123456789",
        b'o' => b"@&%?,=[]_:-+*$#!'^~;()/.",
        _ => b"AEIOUaeiouBCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz0123456789!@#$%^&*()",
    }
}

/// scrypt's cost in Sprig: N = 2^15, r = 8, p = 2 (32 MiB of memory, deliberately slow).
const SCRYPT_LOG_N: u8 = 15;

fn derive_password(
    c: &Ctx<'_>,
    counter: i64,
    kind: &str,
    password: &str,
    user: &str,
    site: &str,
) -> FnResult {
    // Go converts the template's int to the parameter's uint32 and refuses what overflows.
    let counter = u32::try_from(counter).map_err(|_| {
        CallError::Msg(format!(
            "wrong type for value; expected uint32; got int ({counter} overflows)"
        ))
    })?;
    let Some(templates) = password_templates(kind) else {
        return Ok(Value::string(format!(
            "cannot find password template {kind}"
        )));
    };
    // The scrypt pass is a fixed, large piece of work: charge it like the output it stands for.
    c.alloc(1 << 20)?;
    let len32 = |s: &str| u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes();
    let mut salt = MASTER_PASSWORD_SEED.to_vec();
    salt.extend_from_slice(&len32(user));
    salt.extend_from_slice(user.as_bytes());
    let params = scrypt::Params::new(SCRYPT_LOG_N, 8, 2, 64)
        .map_err(|e| CallError::Msg(format!("failed to derive password: {e}")))?;
    let mut key = [0u8; 64];
    if let Err(e) = scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key) {
        return Ok(Value::string(format!("failed to derive password: {e}")));
    }
    let mut input = MASTER_PASSWORD_SEED.to_vec();
    input.extend_from_slice(&len32(site));
    input.extend_from_slice(site.as_bytes());
    input.extend_from_slice(&counter.to_be_bytes());
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key)
        .map_err(|e| CallError::Msg(format!("failed to derive password: {e}")))?;
    mac.update(&input);
    let seed = mac.finalize().into_bytes();
    let template = templates[usize::from(seed[0]) % templates.len()].as_bytes();
    let out: String = template
        .iter()
        .enumerate()
        .map(|(i, class)| {
            let chars = template_characters(*class);
            char::from(chars[usize::from(seed[i + 1]) % chars.len()])
        })
        .collect();
    Ok(Value::string(out))
}

const AES_BLOCK: usize = 16;

/// Sprig's key: the password's bytes in 32 zero bytes (cut when longer).
fn aes_key(password: &str) -> Aes256 {
    let mut key = [0u8; 32];
    let p = password.as_bytes();
    let n = p.len().min(key.len());
    key[..n].copy_from_slice(&p[..n]);
    Aes256::new(GenericArray::from_slice(&key))
}

fn encrypt_aes(c: &Ctx<'_>, password: &str, plaintext: &[u8]) -> FnResult {
    if plaintext.is_empty() {
        return Ok(Value::string(""));
    }
    c.alloc(plaintext.len().saturating_mul(2).saturating_add(64))?;
    let cipher = aes_key(password);
    let pad = AES_BLOCK - plaintext.len() % AES_BLOCK;
    let mut content = plaintext.to_vec();
    content.resize(plaintext.len() + pad, pad as u8);
    let iv: [u8; AES_BLOCK] = rand::random();
    let mut out = iv.to_vec();
    let mut prev = iv;
    for block in content.chunks_exact(AES_BLOCK) {
        let mut b = GenericArray::clone_from_slice(block);
        for (x, p) in b.iter_mut().zip(prev) {
            *x ^= p;
        }
        cipher.encrypt_block(&mut b);
        prev.copy_from_slice(&b);
        out.extend_from_slice(&b);
    }
    Ok(Value::string(
        base64::engine::general_purpose::STANDARD.encode(out),
    ))
}

fn decrypt_aes(c: &Ctx<'_>, password: &str, crypt64: &str) -> FnResult {
    if crypt64.is_empty() {
        return Ok(Value::string(""));
    }
    c.alloc(crypt64.len())?;
    let crypt = base64::engine::general_purpose::STANDARD
        .decode(crypt64)
        .map_err(|e| CallError::Msg(super::encoding::go_b64_error(crypt64, &e)))?;
    // Where Go's slicing or CryptBlocks would panic, the call fails with Go's message.
    let Some((iv, body)) = crypt.split_first_chunk::<AES_BLOCK>() else {
        return Err(CallError::Msg(format!(
            "runtime error: slice bounds out of range [:{AES_BLOCK}] with capacity {}",
            crypt.len()
        )));
    };
    if body.len() % AES_BLOCK != 0 {
        return Err(CallError::Msg(
            "crypto/cipher: input not full blocks".to_string(),
        ));
    }
    if body.is_empty() {
        return Err(CallError::Msg(
            "runtime error: index out of range [-1]".to_string(),
        ));
    }
    let iv = *iv;
    let cipher = aes_key(password);
    let mut out = Vec::with_capacity(body.len());
    let mut prev = iv;
    for block in body.chunks_exact(AES_BLOCK) {
        let mut b = GenericArray::clone_from_slice(block);
        cipher.decrypt_block(&mut b);
        for (x, p) in b.iter_mut().zip(prev) {
            *x ^= p;
        }
        prev.copy_from_slice(block);
        out.extend_from_slice(&b);
    }
    let pad = usize::from(out.last().copied().unwrap_or(0));
    if pad > out.len() {
        return Err(CallError::Msg(format!(
            "runtime error: slice bounds out of range [:{}]",
            out.len() as i64 - pad as i64
        )));
    }
    out.truncate(out.len() - pad);
    Ok(super::encoding::go_string(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_verify_and_carry_gos_version_and_cost() {
        let h = bcrypt(b"s3cret");
        assert!(h.starts_with("$2a$10$"), "{h}");
        assert!(bcrypt::verify("s3cret", &h).expect("a bcrypt hash"));
        assert!(!bcrypt::verify("other", &h).expect("a bcrypt hash"));
        assert!(bcrypt(&[b'x'; 73]).contains("exceeds 72 bytes"));
    }
}
