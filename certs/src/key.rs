//! The server's ES256 signing key and the public keys that verify its certificates: loading an
//! operator's PKCS#8 PEM file, creating one in the data directory on first start (mode 0600,
//! written atomically, never overwriting), the `kid`, and the JWK-like public form of `/v1/keys`.
//!
//! The private key never leaves this module except as the PEM written to its own file: it is in
//! no `Debug` or `Display` output and in no error.
//!
//! The key files are p256's PKCS#8 PEM, read and written with p256 as before; the signing and
//! verifying themselves run in `ring` (its assembly P-256 is several times faster than p256's
//! generic arithmetic): the loaded key is handed to `ring` as its raw scalar and public point.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The file a server keeps its own signing key in, inside its data directory.
pub const KEY_FILE_NAME: &str = "signing-key.pem";

/// Why a key could not be loaded, created or decoded. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("signing key file {}: not a PKCS#8 PEM ECDSA P-256 private key ({source})", path.display())]
    InvalidFile {
        path: PathBuf,
        source: p256::pkcs8::Error,
    },
    #[error("not a PKCS#8 PEM ECDSA P-256 private key ({0})")]
    InvalidPem(p256::pkcs8::Error),
    #[error("could not encode the key: {0}")]
    Encode(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("public key {kid:?}: {why}")]
    InvalidPublicKey { kid: String, why: &'static str },
    /// `ring` refused the key p256 decoded (it never should: both check the same curve).
    #[error("the signing key was refused by the signer: {0}")]
    Refused(String),
}

/// Whether [`SigningKey::load_or_create`] found the key file or wrote a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Loaded,
    Created,
}

/// The server's ECDSA P-256 private key, with its public half and `kid` computed once.
///
/// `Debug` prints only the `kid`; there is no `Display`. The secret scalar is zeroed on drop.
///
/// Signatures are made by `ring` (randomised nonce, hedged with the key and the message: two
/// signatures of the same message differ, both valid); p256 keeps the key for its file.
#[derive(Clone)]
pub struct SigningKey {
    secret: p256::ecdsa::SigningKey,
    signer: Arc<EcdsaKeyPair>,
    rng: SystemRandom,
    public: PublicKey,
}

impl SigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, KeyError> {
        let secret =
            p256::ecdsa::SigningKey::try_generate().map_err(|e| KeyError::Random(e.to_string()))?;
        Self::from_secret(secret)
    }

    /// Decodes a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) ECDSA P-256 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let secret = p256::ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(KeyError::InvalidPem)?;
        Self::from_secret(secret)
    }

    /// Loads the operator's key file (`--signing-key FILE`), PKCS#8 PEM.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = Zeroizing::new(fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?);
        let secret = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).map_err(|source| {
            KeyError::InvalidFile {
                path: path.to_owned(),
                source,
            }
        })?;
        Self::from_secret(secret)
    }

    /// Loads `dir/`[`KEY_FILE_NAME`], or on first start creates it with a new random key.
    ///
    /// The new file is written to a temporary file created with mode 0600 (never widened, never
    /// chmod-ed), synced, then hard-linked into place, so the key file either does not exist or is
    /// complete; an existing file is never overwritten (if another process wins the race, its key
    /// is loaded). `dir` must exist.
    pub fn load_or_create(dir: &Path) -> Result<(Self, KeyOrigin), KeyError> {
        let path = dir.join(KEY_FILE_NAME);
        match Self::from_pem_file(&path) {
            Ok(key) => return Ok((key, KeyOrigin::Loaded)),
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = Self::generate()?;
        let pem = key.to_pkcs8_pem()?;
        match write_new_private_file(&path, pem.as_bytes()) {
            Ok(()) => Ok((key, KeyOrigin::Created)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Ok((Self::from_pem_file(&path)?, KeyOrigin::Loaded))
            }
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    fn from_secret(secret: p256::ecdsa::SigningKey) -> Result<Self, KeyError> {
        let public = PublicKey::from_verifying_key(*secret.verifying_key())?;
        let rng = SystemRandom::new();
        let scalar = Zeroizing::new(<[u8; 32]>::from(secret.to_bytes()));
        let signer = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar.as_slice(),
            &public.sec1,
            &rng,
        )
        .map_err(|e| KeyError::Refused(e.to_string()))?;
        Ok(Self {
            secret,
            signer: Arc::new(signer),
            rng,
            public,
        })
    }

    fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// The key id, standard base64 of the first 8 bytes of SHA-256 of the public key's DER SPKI.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The public half, to publish and to verify with.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// ES256 over `message` (SHA-256), as raw `r||s`, by `ring` with a random nonce. Public
    /// for the server's other signed texts (the venue posters' QR payloads).
    ///
    /// Should the system's random generator fail, the signature is p256's instead (RFC 6979,
    /// deterministic), so signing never fails and never panics.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        if let Ok(signature) = self.signer.sign(&self.rng, message) {
            if let Ok(raw) = <[u8; 64]>::try_from(signature.as_ref()) {
                return raw;
            }
        }
        let signature: Signature = self.secret.sign(message);
        signature.to_bytes().into()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

/// Creates `path` with mode 0600 holding `contents`, atomically and only if it does not exist.
fn write_new_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // a name no other writer uses: this process, and a counter for its threads
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        attempts += 1;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            // left by a crashed run that had this pid: never linked into place, leave it be
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => continue,
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&tmp, path));
    drop(file);
    let removed = fs::remove_file(&tmp);
    written?;
    removed?;
    File::open(dir)?.sync_all()
}

/// A P-256 public key that verifies certificates, with its `kid`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    kid_bytes: [u8; 8],
    key: VerifyingKey,
    /// The uncompressed SEC1 point (`04 || x || y`), as `ring` verifies with it.
    sec1: [u8; 65],
}

impl PublicKey {
    /// Wraps a verifying key, computing its `kid`.
    pub fn from_verifying_key(key: VerifyingKey) -> Result<Self, KeyError> {
        let spki = key
            .to_public_key_der()
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let digest = Sha256::digest(spki.as_bytes());
        let mut kid_bytes = [0u8; 8];
        kid_bytes.copy_from_slice(&digest[..8]);
        let point = key.to_sec1_point(false);
        let sec1 = <[u8; 65]>::try_from(point.as_bytes())
            .map_err(|_| KeyError::Encode("the public point is not 65 bytes".to_owned()))?;
        Ok(Self {
            kid: STANDARD.encode(kid_bytes),
            kid_bytes,
            key,
            sec1,
        })
    }

    /// Whether `signature` (raw `r||s`) is this key's ES256 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.sec1)
            .verify(message, signature)
            .is_ok()
    }

    /// Decodes a published key; its `kid` must be the one its coordinates give.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let bad = |why| KeyError::InvalidPublicKey {
            kid: jwk.kid.clone(),
            why,
        };
        if (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str()) != ("EC", "P-256", "ES256") {
            return Err(bad("not an EC P-256 ES256 key"));
        }
        let x = URL_SAFE_NO_PAD
            .decode(&jwk.x)
            .map_err(|_| bad("x is not base64url"))?;
        let y = URL_SAFE_NO_PAD
            .decode(&jwk.y)
            .map_err(|_| bad("y is not base64url"))?;
        if x.len() != 32 || y.len() != 32 {
            return Err(bad("x and y must be 32 bytes each"));
        }
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(0x04);
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        let key = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| bad("not a point on P-256"))?;
        let public = Self::from_verifying_key(key)?;
        if public.kid != jwk.kid {
            return Err(bad("kid does not match the key"));
        }
        Ok(public)
    }

    /// Standard base64 of the first 8 bytes of SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 8 raw `kid` bytes, as the COSE protected header carries them.
    pub fn kid_bytes(&self) -> [u8; 8] {
        self.kid_bytes
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The published form: `{kid, kty: "EC", crv: "P-256", alg: "ES256", x, y}`.
    pub fn jwk(&self) -> Jwk {
        let point = self.key.to_sec1_point(false);
        let coordinate =
            |c: Option<&[u8]>| c.map(|c| URL_SAFE_NO_PAD.encode(c)).unwrap_or_default();
        Jwk {
            kid: self.kid.clone(),
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            alg: "ES256".to_owned(),
            x: coordinate(point.x().map(|c| c.as_slice())),
            y: coordinate(point.y().map(|c| c.as_slice())),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A public key as `GET /v1/keys` lists it; `x`, `y` are base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    pub crv: String,
    pub alg: String,
    pub x: String,
    pub y: String,
}
