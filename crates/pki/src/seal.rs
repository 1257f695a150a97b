//! Private keys sealed at rest.
//!
//! The database never holds a private key in clear: CA and end-entity keys are
//! sealed with XChaCha20-Poly1305 under a master key that the operator provides
//! by file or environment. The master key carries a short id, so it can be
//! rotated: a [`Keyring`] seals with its current key and opens blobs sealed
//! under any key it holds; [`Keyring::reseal`] moves a blob to the current key.
//!
//! # Sealed format (version 1)
//!
//! ```text
//! version (1 byte = 1) ‖ key_id_len (1 byte, 1..=32) ‖ key_id (ASCII [a-z0-9-])
//!   ‖ nonce (24 random bytes) ‖ ciphertext ‖ tag (16 bytes)
//! ```
//!
//! The AEAD's associated data is the header (`version ‖ key_id_len ‖ key_id`)
//! followed by the caller's AAD, so neither the header nor the binding can be
//! changed without the tag failing. The caller's AAD binds a blob to its row,
//! e.g. `b"tenant:<uuid>:leaf-key"`: a blob copied into another tenant's row
//! does not open. Random 24-byte nonces are safe for XChaCha20 (no counter to
//! persist).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use zeroize::Zeroizing;

/// Version byte of the sealed format written by this crate.
pub const SEAL_VERSION: u8 = 1;
/// Longest master key id.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of the random nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// Failure to build a key, or to open a sealed blob.
///
/// Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A master key id is not `[a-z0-9-]{1,32}`.
    #[error("invalid master key id: {reason}")]
    InvalidKeyId {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Master key text could not be decoded to 32 bytes.
    #[error("invalid master key material: {reason}")]
    InvalidKeyMaterial {
        /// What is wrong with it (never the material itself).
        reason: &'static str,
    },
    /// Two keys of a keyring share an id.
    #[error("duplicate master key id {0:?} in keyring")]
    DuplicateKeyId(String),
    /// The sealed blob is shorter than its header says.
    #[error("sealed data is truncated")]
    Truncated,
    /// The sealed blob was written by an unknown format version.
    #[error("unsupported sealed data version {0}")]
    UnsupportedVersion(u8),
    /// The key id inside the sealed blob is not a valid key id.
    #[error("sealed data has a malformed key id")]
    MalformedKeyId,
    /// The blob was sealed under a key this keyring does not hold.
    #[error("sealed data uses unknown master key id {0:?}")]
    UnknownKeyId(String),
    /// Authentication failed: wrong key, wrong associated data, or the blob was
    /// modified.
    #[error("sealed data failed authentication (wrong key, wrong associated data or tampered)")]
    Authentication,
}

/// A master key: a short id and 32 secret bytes (zeroized on drop).
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl MasterKey {
    /// Builds a master key from its id and raw bytes.
    pub fn new(id: &str, key: Zeroizing<[u8; KEY_LEN]>) -> Result<Self, SealError> {
        check_key_id(id)?;
        Ok(Self {
            id: id.to_owned(),
            key,
        })
    }

    /// Generates a random master key with the given id.
    pub fn generate(id: &str) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut_slice());
        Self::new(id, key)
    }

    /// Parses the text of a master key file or environment variable:
    /// `"<key_id>:<material>"`, where the material is 32 bytes as standard
    /// base64 (44 characters) or hex (64 characters). Surrounding whitespace
    /// (a trailing newline) is ignored.
    pub fn from_file_text(text: &str) -> Result<Self, SealError> {
        let (id, material) = text
            .trim()
            .split_once(':')
            .ok_or(SealError::InvalidKeyMaterial {
                reason: "expected \"<key_id>:<base64 or hex key>\"",
            })?;
        check_key_id(id)?;
        Self::new(id, decode_key_material(material)?)
    }

    /// The text form read by [`MasterKey::from_file_text`]
    /// (`"<key_id>:<base64>"`, no newline).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let encoded = Zeroizing::new(BASE64.encode(self.key.as_slice()));
        Zeroizing::new(format!("{}:{}", self.id, encoded.as_str()))
    }

    /// The key id (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_slice().into())
    }
}

impl FromStr for MasterKey {
    type Err = SealError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_file_text(s)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("key", &"...")
            .finish()
    }
}

/// The current master key plus older ones kept to open blobs sealed before a
/// rotation.
#[derive(Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring with only a current key.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds an older key used only to open (never to seal).
    pub fn with_previous(mut self, key: MasterKey) -> Result<Self, SealError> {
        if self.find(key.id()).is_some() {
            return Err(SealError::DuplicateKeyId(key.id.clone()));
        }
        self.previous.push(key);
        Ok(self)
    }

    /// Id of the key new blobs are sealed under.
    pub fn current_key_id(&self) -> &str {
        self.current.id()
    }

    /// Ids of all keys held, current first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(MasterKey::id)
    }

    /// Seals `plaintext` under the current key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let header = header_bytes(self.current.id());
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.current
            .cipher()
            .encrypt_in_place(
                XNonce::from_slice(&nonce),
                &full_aad(&header, aad),
                &mut body,
            )
            .expect("XChaCha20-Poly1305 encryption only fails beyond 256 GiB of plaintext");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a blob sealed under any key of this keyring. Never panics on
    /// malformed input.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let parts = SealedParts::parse(sealed)?;
        let key = self
            .find(parts.key_id)
            .ok_or_else(|| SealError::UnknownKeyId(parts.key_id.to_owned()))?;
        let mut buffer = Zeroizing::new(parts.ciphertext.to_vec());
        key.cipher()
            .decrypt_in_place(
                XNonce::from_slice(parts.nonce),
                &full_aad(parts.header, aad),
                &mut *buffer,
            )
            .map_err(|_| SealError::Authentication)?;
        Ok(buffer)
    }

    /// Opens a blob and seals it again under the current key (key rotation).
    pub fn reseal(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let plaintext = self.open(sealed, aad)?;
        Ok(self.seal(&plaintext, aad))
    }

    /// Whether a blob is sealed under an older key and should be resealed.
    pub fn needs_reseal(&self, sealed: &[u8]) -> Result<bool, SealError> {
        Ok(sealed_key_id(sealed)? != self.current.id())
    }

    fn find(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(MasterKey::id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The master key id a blob was sealed under (parses the header only).
pub fn sealed_key_id(sealed: &[u8]) -> Result<&str, SealError> {
    SealedParts::parse(sealed).map(|p| p.key_id)
}

/// The pieces of a sealed blob, borrowed from it.
struct SealedParts<'a> {
    /// `version ‖ key_id_len ‖ key_id`.
    header: &'a [u8],
    key_id: &'a str,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> SealedParts<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Truncated)?;
        if version != SEAL_VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        let (&id_len, rest) = rest.split_first().ok_or(SealError::Truncated)?;
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > MAX_KEY_ID_LEN {
            return Err(SealError::MalformedKeyId);
        }
        if rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(SealError::Truncated);
        }
        let (id_bytes, rest) = rest.split_at(id_len);
        let key_id = std::str::from_utf8(id_bytes).map_err(|_| SealError::MalformedKeyId)?;
        check_key_id(key_id).map_err(|_| SealError::MalformedKeyId)?;
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        Ok(Self {
            header: &sealed[..2 + id_len],
            key_id,
            nonce,
            ciphertext,
        })
    }
}

fn header_bytes(key_id: &str) -> Vec<u8> {
    let id_len = u8::try_from(key_id.len()).expect("key ids are validated to at most 32 bytes");
    let mut header = Vec::with_capacity(2 + key_id.len());
    header.push(SEAL_VERSION);
    header.push(id_len);
    header.extend_from_slice(key_id.as_bytes());
    header
}

fn full_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(header.len() + aad.len());
    full.extend_from_slice(header);
    full.extend_from_slice(aad);
    full
}

fn check_key_id(id: &str) -> Result<(), SealError> {
    let fail = |reason| Err(SealError::InvalidKeyId { reason });
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
        return fail("must be 1 to 32 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("may contain only a-z, 0-9 and '-'");
    }
    Ok(())
}

fn decode_key_material(material: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let bad_length = SealError::InvalidKeyMaterial {
        reason: "must decode to exactly 32 bytes",
    };
    if material.len() == 2 * KEY_LEN && material.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode_to_slice(material, key.as_mut_slice()).map_err(|_| bad_length)?;
        return Ok(key);
    }
    let decoded =
        Zeroizing::new(
            BASE64
                .decode(material)
                .map_err(|_| SealError::InvalidKeyMaterial {
                    reason: "not valid base64 or hex",
                })?,
        );
    if decoded.len() != KEY_LEN {
        return Err(bad_length);
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AAD: &[u8] = b"tenant:0192f0c1-0000-7000-8000-000000000001:leaf-key";

    fn keyring(id: &str) -> Keyring {
        Keyring::new(MasterKey::generate(id).expect("valid id"))
    }

    #[test]
    fn roundtrip() {
        let ring = keyring("k1");
        let sealed = ring.seal(b"secret key pem", AAD);
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(usize::from(sealed[1]), 2);
        assert_eq!(&sealed[2..4], b"k1");
        assert_eq!(sealed.len(), 4 + NONCE_LEN + 14 + TAG_LEN);
        assert_eq!(
            ring.open(&sealed, AAD).expect("opens").as_slice(),
            b"secret key pem"
        );
        assert_eq!(sealed_key_id(&sealed), Ok("k1"));
    }

    #[test]
    fn empty_plaintext_roundtrips() {
        let ring = keyring("k1");
        let sealed = ring.seal(b"", b"");
        assert!(ring.open(&sealed, b"").expect("opens").is_empty());
    }

    #[test]
    fn nonces_differ() {
        let ring = keyring("k1");
        assert_ne!(ring.seal(b"x", AAD), ring.seal(b"x", AAD));
    }

    #[test]
    fn wrong_aad_fails() {
        let ring = keyring("k1");
        let sealed = ring.seal(b"secret", AAD);
        assert_eq!(
            ring.open(&sealed, b"tenant:other:leaf-key"),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn every_tampered_byte_fails() {
        let ring = keyring("k1");
        let sealed = ring.seal(b"secret", AAD);
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(ring.open(&tampered, AAD).is_err(), "byte {i}");
        }
        // Flipping a key id byte to another valid id gives a specific error.
        let mut other_id = sealed.clone();
        other_id[3] = b'2';
        assert_eq!(
            ring.open(&other_id, AAD),
            Err(SealError::UnknownKeyId("k2".into()))
        );
    }

    #[test]
    fn truncated_and_bad_version() {
        let ring = keyring("k1");
        let sealed = ring.seal(b"secret", AAD);
        assert_eq!(ring.open(&[], AAD), Err(SealError::Truncated));
        assert_eq!(ring.open(&[1], AAD), Err(SealError::Truncated));
        assert_eq!(
            ring.open(&sealed[..2 + 2 + NONCE_LEN + TAG_LEN - 1], AAD),
            Err(SealError::Truncated)
        );
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert_eq!(ring.open(&v2, AAD), Err(SealError::UnsupportedVersion(2)));
        let mut bad_len = sealed;
        bad_len[1] = 0;
        assert_eq!(ring.open(&bad_len, AAD), Err(SealError::MalformedKeyId));
    }

    #[test]
    fn unknown_key_id() {
        let sealed = keyring("old").seal(b"secret", AAD);
        assert_eq!(
            keyring("new").open(&sealed, AAD),
            Err(SealError::UnknownKeyId("old".into()))
        );
    }

    #[test]
    fn same_id_different_key_fails_authentication() {
        let sealed = keyring("k1").seal(b"secret", AAD);
        assert_eq!(
            keyring("k1").open(&sealed, AAD),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn rotation() {
        let old = MasterKey::generate("2024-01").expect("id");
        let new = MasterKey::generate("2025-01").expect("id");
        let sealed_old = Keyring::new(old.clone()).seal(b"ca key", AAD);

        let ring = Keyring::new(new).with_previous(old).expect("distinct ids");
        assert_eq!(ring.current_key_id(), "2025-01");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["2025-01", "2024-01"]);
        assert!(ring.needs_reseal(&sealed_old).expect("header"));
        assert_eq!(
            ring.open(&sealed_old, AAD).expect("opens").as_slice(),
            b"ca key"
        );

        let resealed = ring.reseal(&sealed_old, AAD).expect("reseal");
        assert_eq!(sealed_key_id(&resealed), Ok("2025-01"));
        assert!(!ring.needs_reseal(&resealed).expect("header"));
        assert_eq!(
            ring.open(&resealed, AAD).expect("opens").as_slice(),
            b"ca key"
        );
        assert_eq!(
            ring.reseal(&sealed_old, b"other"),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn duplicate_key_ids_are_rejected() {
        let ring = keyring("k1");
        assert_eq!(
            ring.with_previous(MasterKey::generate("k1").expect("id"))
                .map(|_| ()),
            Err(SealError::DuplicateKeyId("k1".into()))
        );
    }

    #[test]
    fn master_key_text_roundtrip_base64_and_hex() {
        let key = MasterKey::generate("prod-1").expect("id");
        let text = key.to_file_text();
        assert!(text.starts_with("prod-1:"));
        let parsed = MasterKey::from_file_text(&format!("{}\n", text.as_str())).expect("parse");
        assert_eq!(parsed.id(), "prod-1");
        assert_eq!(parsed.key, key.key);

        let hex_text = format!("prod-1:{}", hex::encode(key.key.as_slice()));
        let from_hex: MasterKey = hex_text.parse().expect("hex");
        assert_eq!(from_hex.key, key.key);

        // Keys from both forms open each other's blobs.
        let sealed = Keyring::new(key).seal(b"x", b"");
        assert_eq!(
            Keyring::new(from_hex)
                .open(&sealed, b"")
                .expect("opens")
                .as_slice(),
            b"x"
        );
    }

    #[test]
    fn master_key_text_errors() {
        let b64 = BASE64.encode([7u8; 32]);
        for (text, expected) in [
            (b64.clone(), "material"),
            (format!(":{b64}"), "id"),
            (format!("Prod:{b64}"), "id"),
            (format!("{}:{b64}", "a".repeat(33)), "id"),
            ("k:AAAA".to_owned(), "material"),
            (format!("k:{}", BASE64.encode([7u8; 31])), "material"),
            (format!("k:{}", "zz".repeat(32)), "material"),
            (format!("k:{}", "ab".repeat(31)), "material"),
        ] {
            let err = MasterKey::from_file_text(&text).expect_err(&text);
            let matches = match expected {
                "id" => matches!(err, SealError::InvalidKeyId { .. }),
                _ => matches!(err, SealError::InvalidKeyMaterial { .. }),
            };
            assert!(matches, "{text:?}: {err:?}");
        }
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = MasterKey::new("k1", Zeroizing::new([0xab; 32])).expect("id");
        let text = key.to_file_text();
        let material = text.split_once(':').expect("colon").1.to_owned();
        let debug = format!("{key:?} {:?}", Keyring::new(key.clone()));
        assert!(!debug.contains(&material));
        assert!(!debug.to_lowercase().contains("abab"));
        assert!(debug.contains("k1"));
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), aad in proptest::collection::vec(any::<u8>(), 0..16)) {
            let ring = keyring("k1");
            prop_assert!(ring.open(&bytes, &aad).is_err());
        }

        #[test]
        fn open_never_panics_on_plausible_headers(
            id_len in 0u8..=40,
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let ring = keyring("k1");
            let mut bytes = vec![SEAL_VERSION, id_len];
            bytes.extend_from_slice(&tail);
            prop_assert!(ring.open(&bytes, b"").is_err());
        }

        #[test]
        fn seal_open_roundtrip(plain in proptest::collection::vec(any::<u8>(), 0..300), aad in proptest::collection::vec(any::<u8>(), 0..40)) {
            let ring = keyring("k1");
            let sealed = ring.seal(&plain, &aad);
            let opened = ring.open(&sealed, &aad).expect("opens");
            prop_assert_eq!(opened.as_slice(), plain.as_slice());
        }

        #[test]
        fn master_key_parse_never_panics(s in "\\PC{0,120}") {
            let _ = MasterKey::from_file_text(&s);
        }
    }
}
