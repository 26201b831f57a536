//! Official test vectors for every primitive this crate uses directly: RFC 8439
//! ChaCha20-Poly1305, RFC 7748 X25519, RFC 9106 argon2id, and the Wycheproof sets for
//! ChaCha20-Poly1305, AES-256-GCM, AES-128-CBC, HMAC-SHA256, HKDF-SHA256 and X25519 (whose 31
//! zero-shared-secret public keys our handshakes refuse).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use cypherwire_session::handshake::is_low_order;
use hmac::Mac;
use wycheproof::TestResult;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc8439_section_2_8_2_aead() {
    let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = hex("070000004041424344454647");
    let aad = hex("50515253c0c1c2c3c4c5c6c7");
    let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let ct = hex(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
         3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
         92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
         3ff4def08e4b7a9de576d26586cec64b6116",
    );
    let tag = hex("1ae10b594f09e26a7e902ecbd0600691");
    let aead = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&key).unwrap();
    let mut buf = pt.to_vec();
    let t = aead
        .encrypt_in_place_detached(nonce[..].into(), &aad, &mut buf)
        .unwrap();
    assert_eq!(buf, ct);
    assert_eq!(t.to_vec(), tag);
    aead.decrypt_in_place_detached(nonce[..].into(), &aad, &mut buf, &t)
        .unwrap();
    assert_eq!(&buf[..], &pt[..]);
    // One changed tag byte must fail.
    let mut bad = t;
    bad[0] ^= 1;
    let mut buf2 = ct;
    assert!(
        aead.decrypt_in_place_detached(nonce[..].into(), &aad, &mut buf2, &bad)
            .is_err()
    );
}

#[test]
fn rfc7748_x25519() {
    let ladder = |k: &[u8], u: &[u8]| {
        curve25519_dalek::MontgomeryPoint(u.try_into().unwrap())
            .mul_clamped(<[u8; 32]>::try_from(k).unwrap())
            .to_bytes()
    };
    // §5.2, the two single-multiplication vectors.
    assert_eq!(
        ladder(
            &hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
            &hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
        )
        .to_vec(),
        hex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    );
    assert_eq!(
        ladder(
            &hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
            &hex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
        )
        .to_vec(),
        hex("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
    );
    // §5.2 iterated: 1 and 1,000 iterations.
    let (mut k, mut u) = (
        hex("09").into_iter().chain([0u8; 31]).collect::<Vec<_>>(),
        vec![9u8; 1],
    );
    u.resize(32, 0);
    for i in 1..=1000 {
        let r = ladder(&k, &u).to_vec();
        u = k;
        k = r;
        if i == 1 {
            assert_eq!(
                k,
                hex("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
            );
        }
    }
    assert_eq!(
        k,
        hex("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    );
    // §6.1 Diffie-Hellman.
    let a = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let b = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let a_pub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let b_pub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = hex("4a5d9d5b a4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(ladder(&a, &b_pub).to_vec(), shared);
    assert_eq!(ladder(&b, &a_pub).to_vec(), shared);
}

#[test]
fn rfc9106_argon2id() {
    use argon2::{Algorithm, Argon2, Version};
    let secret = [3u8; 8];
    // The associated data is passed through the params' `data` field.
    let params = argon2::ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(argon2::AssociatedData::new(&[4u8; 12]).unwrap())
        .build()
        .unwrap();
    let a = Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params).unwrap();
    let mut out = [0u8; 32];
    a.hash_password_into(&[1u8; 32], &[2u8; 16], &mut out)
        .unwrap();
    assert_eq!(
        out.to_vec(),
        hex("0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659")
    );
}

#[test]
fn wycheproof_chacha20_poly1305_and_aes_256_gcm() {
    use wycheproof::aead::{TestName, TestSet};
    let mut checked = 0;
    for name in [TestName::ChaCha20Poly1305, TestName::AesGcm] {
        let set = TestSet::load(name).unwrap();
        for group in set.test_groups {
            // Our suites: 32-byte keys, 12-byte nonces, 16-byte tags.
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                continue;
            }
            for t in group.tests {
                let mut buf = t.pt.to_vec();
                let sealed = match name {
                    TestName::ChaCha20Poly1305 => {
                        chacha20poly1305::ChaCha20Poly1305::new_from_slice(&t.key)
                            .unwrap()
                            .encrypt_in_place_detached(t.nonce[..].into(), &t.aad, &mut buf)
                            .map(|tag| tag.to_vec())
                    }
                    _ => aes_gcm::Aes256Gcm::new_from_slice(&t.key)
                        .unwrap()
                        .encrypt_in_place_detached(t.nonce[..].into(), &t.aad, &mut buf)
                        .map(|tag| tag.to_vec()),
                };
                let mut ct = t.ct.to_vec();
                let tag = aes_gcm::Tag::clone_from_slice(&t.tag);
                let opened = match name {
                    TestName::ChaCha20Poly1305 => {
                        chacha20poly1305::ChaCha20Poly1305::new_from_slice(&t.key)
                            .unwrap()
                            .decrypt_in_place_detached(t.nonce[..].into(), &t.aad, &mut ct, &tag)
                    }
                    _ => aes_gcm::Aes256Gcm::new_from_slice(&t.key)
                        .unwrap()
                        .decrypt_in_place_detached(t.nonce[..].into(), &t.aad, &mut ct, &tag),
                };
                match t.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        assert_eq!(buf, t.ct.to_vec(), "{name:?} #{}", t.tc_id);
                        assert_eq!(sealed.unwrap(), t.tag.to_vec(), "{name:?} #{}", t.tc_id);
                        assert!(opened.is_ok(), "{name:?} #{}", t.tc_id);
                        assert_eq!(ct, t.pt.to_vec());
                    }
                    TestResult::Invalid => assert!(opened.is_err(), "{name:?} #{} opened", t.tc_id),
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked > 300,
        "only {checked} vectors matched our parameters"
    );
}

#[test]
fn wycheproof_aes_128_cbc_pkcs7() {
    use wycheproof::cipher::{TestName, TestSet};
    let set = TestSet::load(TestName::AesCbcPkcs5).unwrap();
    let mut checked = 0;
    for group in set.test_groups.into_iter().filter(|g| g.key_size == 128) {
        for t in group.tests {
            let mut ct = t.ct.to_vec();
            let dec = cbc::Decryptor::<aes::Aes128>::new(t.key[..].into(), t.nonce[..].into())
                .decrypt_padded_mut::<Pkcs7>(&mut ct)
                .map(<[u8]>::to_vec);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert_eq!(dec.unwrap(), t.pt.to_vec(), "#{}", t.tc_id);
                    let mut buf = t.pt.to_vec();
                    buf.resize(t.pt.len() + 16 - t.pt.len() % 16, 0);
                    let enc =
                        cbc::Encryptor::<aes::Aes128>::new(t.key[..].into(), t.nonce[..].into())
                            .encrypt_padded_mut::<Pkcs7>(&mut buf, t.pt.len())
                            .unwrap()
                            .to_vec();
                    assert_eq!(enc, t.ct.to_vec(), "#{}", t.tc_id);
                }
                TestResult::Invalid => assert!(dec.is_err(), "#{} decrypted", t.tc_id),
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn wycheproof_hmac_sha256() {
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha256).unwrap();
    let mut checked = 0;
    for group in set.test_groups {
        for t in group.tests {
            let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&t.key).unwrap();
            mac.update(&t.msg);
            let full = mac.clone().finalize().into_bytes();
            // Truncated tags compare a prefix (verify_truncated_left).
            let ok = mac.verify_truncated_left(&t.tag).is_ok();
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert!(ok, "#{}", t.tc_id);
                    assert_eq!(&full[..t.tag.len()], &t.tag[..]);
                }
                TestResult::Invalid => assert!(!ok || t.tag.is_empty(), "#{} verified", t.tc_id),
            }
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked}");
}

#[test]
fn wycheproof_hkdf_sha256() {
    use wycheproof::hkdf::{TestName, TestSet};
    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let mut checked = 0;
    for group in set.test_groups {
        for t in group.tests {
            let salt = (!t.salt.is_empty()).then_some(&t.salt[..]);
            let mut okm = vec![0u8; t.size];
            let res = hkdf::Hkdf::<sha2::Sha256>::new(salt, &t.ikm).expand(&t.info, &mut okm);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    res.unwrap();
                    assert_eq!(okm, t.okm.to_vec(), "#{}", t.tc_id);
                }
                TestResult::Invalid => assert!(res.is_err(), "#{}", t.tc_id),
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn wycheproof_x25519_and_zero_shared_secrets_are_refused() {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    let (mut checked, mut zero, mut refused) = (0, 0, 0);
    for group in set.test_groups {
        for t in group.tests {
            if t.public_key.len() != 32 {
                continue;
            }
            let shared = curve25519_dalek::MontgomeryPoint(t.public_key[..].try_into().unwrap())
                .mul_clamped(t.private_key[..].try_into().unwrap())
                .to_bytes();
            if t.result != TestResult::Invalid {
                assert_eq!(shared.to_vec(), t.shared_secret.to_vec(), "#{}", t.tc_id);
            }
            if t.flags.contains(&TestFlag::ZeroSharedSecret) {
                zero += 1;
                assert_eq!(shared, [0u8; 32]);
                refused += usize::from(is_low_order(&t.public_key));
            } else if shared != [0u8; 32] {
                assert!(
                    !is_low_order(&t.public_key),
                    "#{}: a good key refused",
                    t.tc_id
                );
            }
            checked += 1;
        }
    }
    println!("x25519: {checked} vectors, {zero} zero-shared-secret keys, {refused} refused");
    assert!(checked > 500, "{checked}");
    assert_eq!(zero, refused);
    assert!(zero >= 31, "{zero}");
}
