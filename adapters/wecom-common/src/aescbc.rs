//! AES-256-CBC with WeCom's PKCS#7 padding on **32-byte** blocks, shared by the callback crypto
//! (wecom-callback reference §2.2) and AI Bot media decryption (wecom-aibot reference §5).
//!
//! The cipher runs with no padding of its own: a stock 16-byte PKCS#7 unpadder rejects the pad
//! values 17..=32 that WeCom produces whenever `len % 32 >= 16`, so padding is done by hand here.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use secrecy::{ExposeSecret, SecretBox};

use crate::crypto::CryptoError;

type Encryptor = cbc::Encryptor<aes::Aes256>;
type Decryptor = cbc::Decryptor<aes::Aes256>;

/// WeCom's PKCS#7 block size: pad values run 1..=32, and a full 32-byte block is added when the
/// input is already aligned.
pub const PAD_BLOCK: usize = 32;

/// The AES block size; a ciphertext must be a non-empty multiple of it.
const AES_BLOCK: usize = 16;

/// A 32-byte AES-256 key whose first 16 bytes double as the CBC IV (the WeCom convention).
/// The bytes are zeroised on drop and never printed.
pub(crate) struct AesKey(SecretBox<[u8; 32]>);

impl AesKey {
    /// Wraps raw key bytes.
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// Builds a key from a slice, which must be exactly 32 bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self::new(arr))
    }

    /// The key and IV arrays for the cipher.
    fn key_iv(&self) -> (&[u8; 32], [u8; 16]) {
        let key = self.0.expose_secret();
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&key[..16]);
        (key, iv)
    }

    /// Pads `plain` (PKCS#7/32) and encrypts it.
    pub(crate) fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut buf = pkcs7_pad(plain);
        let (key, iv) = self.key_iv();
        let mut cipher = Encryptor::new(key.into(), &iv.into());
        // `chunks_exact_mut` yields whole 16-byte blocks only (the padded length is a multiple
        // of 32), so the slice-to-block conversion always has the right length.
        for block in buf.chunks_exact_mut(AES_BLOCK) {
            cipher.encrypt_block_mut(block.into());
        }
        buf
    }

    /// Decrypts and strictly unpads `ciphertext`.
    pub(crate) fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(AES_BLOCK) {
            return Err(CryptoError::BadLength);
        }
        let mut buf = ciphertext.to_vec();
        let (key, iv) = self.key_iv();
        let mut cipher = Decryptor::new(key.into(), &iv.into());
        for block in buf.chunks_exact_mut(AES_BLOCK) {
            cipher.decrypt_block_mut(block.into());
        }
        let plain_len = pkcs7_unpad_len(&buf)?;
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// The raw key bytes, for tests of the key derivation.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl Clone for AesKey {
    fn clone(&self) -> Self {
        Self::new(*self.0.expose_secret())
    }
}

/// Appends PKCS#7 padding for a 32-byte block: 1..=32 bytes, each holding the pad length.
pub fn pkcs7_pad(data: &[u8]) -> Vec<u8> {
    let pad = PAD_BLOCK - data.len() % PAD_BLOCK;
    let mut out = Vec::with_capacity(data.len() + pad);
    out.extend_from_slice(data);
    // `pad` is in 1..=32, so the cast is lossless.
    out.resize(data.len() + pad, pad as u8);
    out
}

/// Validates PKCS#7/32 padding and returns the length of the data without it.
///
/// Strict: the pad value must be in 1..=32, no longer than the data, and every pad byte must
/// equal it; otherwise [`CryptoError::BadPadding`] with the offending value.
pub fn pkcs7_unpad_len(data: &[u8]) -> Result<usize, CryptoError> {
    let Some(&value) = data.last() else {
        return Err(CryptoError::BadLength);
    };
    let pad = usize::from(value);
    if pad == 0 || pad > PAD_BLOCK || pad > data.len() {
        return Err(CryptoError::BadPadding { value });
    }
    let start = data.len() - pad;
    // Padding is not secret (it is fully determined by the length), so a plain check is fine.
    if data[start..].iter().any(|&b| b != value) {
        return Err(CryptoError::BadPadding { value });
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_adds_a_full_block_when_aligned() {
        assert_eq!(pkcs7_pad(&[0u8; 32]).len(), 64);
        assert_eq!(pkcs7_pad(&[0u8; 32])[63], 32);
        assert_eq!(pkcs7_pad(&[0u8; 31]), [vec![0u8; 31], vec![1u8]].concat());
        assert_eq!(pkcs7_pad(&[]).len(), 32);
    }

    #[test]
    fn unpad_accepts_every_value_from_1_to_32() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let padded = pkcs7_pad(&data);
            assert_eq!(pkcs7_unpad_len(&padded).unwrap(), len, "len {len}");
        }
    }

    #[test]
    fn unpad_rejects_out_of_range_and_inconsistent_padding() {
        let mut block = vec![7u8; 32];
        block[31] = 0;
        assert_eq!(
            pkcs7_unpad_len(&block),
            Err(CryptoError::BadPadding { value: 0 })
        );
        block[31] = 33;
        assert_eq!(
            pkcs7_unpad_len(&block),
            Err(CryptoError::BadPadding { value: 33 })
        );
        let mut inconsistent = vec![0u8; 32];
        inconsistent[31] = 4;
        inconsistent[30] = 4;
        inconsistent[29] = 4;
        inconsistent[28] = 9;
        assert_eq!(
            pkcs7_unpad_len(&inconsistent),
            Err(CryptoError::BadPadding { value: 4 })
        );
        assert_eq!(
            pkcs7_unpad_len(&[5, 5, 5]),
            Err(CryptoError::BadPadding { value: 5 })
        );
        assert_eq!(pkcs7_unpad_len(&[]), Err(CryptoError::BadLength));
    }

    #[test]
    fn round_trip_through_the_cipher() {
        let key = AesKey::new([0x42; 32]);
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let ct = key.encrypt(&plain);
            assert_eq!(ct.len() % PAD_BLOCK, 0);
            assert_eq!(key.decrypt(&ct).unwrap(), plain);
        }
        assert_eq!(key.decrypt(&[0u8; 15]), Err(CryptoError::BadLength));
        assert_eq!(key.decrypt(&[]), Err(CryptoError::BadLength));
    }
}
