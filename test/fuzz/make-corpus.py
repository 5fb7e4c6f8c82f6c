#!/usr/bin/env python3
"""Writes the seed corpora of the JOSE fuzz harnesses (test/fuzz/corpus/<harness>/).

Seeds are small and made here, from keys generated on the spot (python3-cryptography),
so running this again gives other keys but the same shapes: valid and nearly-valid
tokens, JWKs and JWKS of every key type tokex reads, and the limit cases (nesting at
and past JOSE_MAX_JSON_DEPTH, integers past 64 bits, alg none, crit).  Regression seeds
(inputs that once found a defect) live in the same directories, named regress-*, and
are never rewritten by this script.

    python3 test/fuzz/make-corpus.py              # rewrites the seed-* files
    python3 test/fuzz/make-corpus.py opaque dpop  # only these harnesses' seeds
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def b64(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n, size=None):
    size = size or max(1, (n.bit_length() + 7) // 8)
    return b64(n.to_bytes(size, "big"))


def dumps(o):
    return json.dumps(o, separators=(",", ":"))


ONLY = set(sys.argv[1:])


def chosen(harness):
    return not ONLY or harness in ONLY


def write(harness, name, data):
    if not chosen(harness):
        return
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def clear():
    for h in os.listdir(CORPUS) if os.path.isdir(CORPUS) else []:
        if not chosen(h):
            continue
        for f in os.listdir(os.path.join(CORPUS, h)):
            if f.startswith("seed-"):
                os.remove(os.path.join(CORPUS, h, f))


# ---------------------------------------------------------------- keys
def ec_jwk(curve, crv, size, alg, private):
    k = ec.generate_private_key(curve)
    n = k.public_key().public_numbers()
    j = {"kty": "EC", "crv": crv, "x": uint(n.x, size), "y": uint(n.y, size), "alg": alg}
    if private:
        j["d"] = uint(k.private_numbers().private_value, size)
    return k, j


def ed_jwk(private):
    from cryptography.hazmat.primitives import serialization as s
    k = ed25519.Ed25519PrivateKey.generate()
    j = {"kty": "OKP", "crv": "Ed25519",
         "x": b64(k.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw))}
    if private:
        j["d"] = b64(k.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption()))
    return k, j


def rsa_jwk(private, alg="RS256"):
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p = k.private_numbers()
    j = {"kty": "RSA", "n": uint(p.public_numbers.n), "e": uint(p.public_numbers.e), "alg": alg}
    if private:
        j.update(d=uint(p.d), p=uint(p.p), q=uint(p.q), dp=uint(p.dmp1), dq=uint(p.dmq1),
                 qi=uint(p.iqmp))
    return k, j


HS_SECRET = os.urandom(32)
HS_JWK = {"kty": "oct", "k": b64(HS_SECRET), "alg": "HS256"}


def sign(key, alg, signing_input):
    m = signing_input.encode()
    if alg.startswith("HS"):
        h = hmac.HMAC(key, hashes.SHA256())
        h.update(m)
        return h.finalize()
    if alg == "EdDSA":
        return key.sign(m)
    if alg.startswith("ES"):
        size = {"ES256": 32, "ES384": 48, "ES512": 66}[alg]
        hm = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}[alg]
        r, s = utils.decode_dss_signature(key.sign(m, ec.ECDSA(hm)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg.startswith("PS"):
        return key.sign(m, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    return key.sign(m, padding.PKCS1v15(), hashes.SHA256())


def token(key, header, payload, alg=None):
    si = b64(dumps(header)) + "." + b64(dumps(payload))
    return si + "." + b64(sign(key, alg or header.get("alg"), si))


B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def opaque(kind):
    """tkx_<kind>_ + 43 base62 + the base62 CRC-32 of the rest (zlib's), as tokex makes them."""
    import secrets
    import zlib
    s = "tkx_%s_" % kind + "".join(secrets.choice(B62) for _ in range(43))
    c = zlib.crc32(s.encode())
    crc = ""
    for _ in range(6):
        crc = B62[c % 62] + crc
        c //= 62
    return s + crc


NONCE_SECRET = b"tokex fuzz dpop nonce secret 32b"   # fuzz_dpop.c's


def nonce(t):
    """A server nonce for time t, as jose_dpop_nonce_new makes it under fuzz_dpop's secret."""
    raw = t.to_bytes(8, "big")
    h = hmac.HMAC(NONCE_SECRET, hashes.SHA256())
    h.update(raw)
    return b64(raw + h.finalize()[:16])


def deep(n):
    return "[" * n + "]" * n


def main():
    clear()
    es, es_pub = ec_jwk(ec.SECP256R1(), "P-256", 32, "ES256", False)
    _, es_priv = ec_jwk(ec.SECP256R1(), "P-256", 32, "ES256", True)
    es384, es384_pub = ec_jwk(ec.SECP384R1(), "P-384", 48, "ES384", False)
    _, es521_priv = ec_jwk(ec.SECP521R1(), "P-521", 66, "ES512", True)
    ed, ed_pub = ed_jwk(False)
    _, ed_priv = ed_jwk(True)
    rs, rs_pub = rsa_jwk(False)
    _, rs_priv = rsa_jwk(True, "PS256")
    now = 1700000000
    claims = {"iss": "https://a", "sub": "alice", "aud": "api", "exp": now + 300,
              "iat": now, "nbf": now - 10, "jti": "j1", "scope": "read write",
              "act": {"sub": "agent", "act": {"sub": "agent2"}}, "may_act": {"sub": "agent"}}

    # base64url
    for i, s in enumerate(["", "Zg", "Zm8", "Zm9v", "Zm9vYg", "eyJhbGciOiJFUzI1NiJ9",
                           "Zh", "Zm9=", "a", "Zm9v+/", "____", "-_-_"]):
        write("b64url", "%02d" % i, s)

    # JSON
    for i, s in enumerate([dumps(claims), '{"a":1,"a":2}', '[1,2,{"b":[null,true,false]}]',
                           '"str\\u00e9\\ud83d\\ude00"', deep(32), deep(33),
                           '{"n":9223372036854775807}', '{"n":9223372036854775808}',
                           '{"n":1e400}', '{"n":-1.5e-3}', '{"s":"[[[[\\"]]"}', '{"a":']):
        write("json", "%02d" % i, s)

    # compact JWS, as clients send them
    jws = [
        token(es, {"alg": "ES256", "typ": "JWT"}, claims),
        token(es, {"alg": "ES256", "kid": "es"}, claims),
        token(es384, {"alg": "ES384", "kid": "es384"}, claims),
        token(ed, {"alg": "EdDSA", "kid": "ed"}, claims),
        token(rs, {"alg": "RS256", "kid": "rs"}, claims),
        token(HS_SECRET, {"alg": "HS256", "kid": "hs"}, claims),
        b64(dumps({"alg": "none"})) + "." + b64(dumps(claims)) + ".",
        b64(dumps({"alg": "ES256", "crit": ["exp"], "exp": 1})) + "." + b64("{}") + "." + b64(b"\0" * 64),
        b64(dumps({"typ": "JWT"})) + "." + b64("{}") + ".",
        b64(dumps({"alg": "HS256", "kid": 1})) + "." + b64("{}") + ".",
        b64(deep(40)) + "." + b64("{}") + ".",
        b64(dumps({"alg": "ES256"})) + "." + b64(dumps({"p": deep(31)})) + "." + b64(b"\1" * 64),
        "a.b.c.d", "..", "eyJ9.e30.",
    ]
    for i, t in enumerate(jws):
        write("jws", "%02d" % i, t)

    # one JWK
    jwks = [es_pub, es_priv, es384_pub, es521_priv, ed_pub, ed_priv, rs_pub, rs_priv, HS_JWK,
            dict(es_pub, kid="k1", use="sig", key_ops=["verify"]),
            dict(es_priv, key_ops=["sign", "verify"]),
            dict(es_pub, key_ops=["encrypt"]),
            dict(es_pub, use="enc"),
            dict(es_pub, crv="P-384"),
            dict(ed_priv, d=ed_pub["x"]),
            {k: v for k, v in rs_pub.items() if k != "alg"},
            {"kty": "oct", "k": b64(b"short")},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"}]
    for i, j in enumerate(jwks):
        write("jwk", "%02d" % i, dumps(j))

    # JWKS
    sets = [{"keys": [es_pub, ed_pub, rs_pub]},
            {"keys": [HS_JWK]},
            {"keys": [dict(es_pub, kid="a"), dict(es384_pub, kid="b", use="enc")]},
            {"keys": [es_pub, HS_JWK]},
            {"keys": []},
            {"keys": [dict(ed_pub, key_ops=["sign"])]},
            {"keys": [dict(es_pub, kid=str(i)) for i in range(65)]},
            {"keys": {"kty": "EC"}}]
    for i, s in enumerate(sets):
        write("jwks", "%02d" % i, dumps(s))

    # JWT: one options byte (see fuzz_jwt.c), header, newline, payload
    hs = dumps({"alg": "HS256", "kid": "hs", "typ": "at+jwt"})
    jwt = [(0x00, hs, claims), (0x01, hs, claims), (0x07, hs, claims),
           (0x04, hs, dict(claims, iss="https://b")), (0x06, hs, dict(claims, aud=["x", "aud-a"])),
           (0x08, dumps({"alg": "EdDSA"}), claims), (0x10, dumps({"alg": "ES256", "kid": "es"}), claims),
           (0x20, hs, dict(claims, exp=now - 30)), (0x00, hs, dict(claims, exp=now - 30)),
           (0x00, hs, dict(claims, nbf=now + 100)), (0x00, hs, dict(claims, iat=now + 61)),
           (0x02, hs, {"sub": "x"}), (0x00, hs, dict(claims, exp="soon")),
           (0x00, hs, dict(claims, exp=1e300)), (0x01, hs, dict(claims, aud=[])),
           (0x00, dumps({"alg": "ES256", "kid": "hs"}), claims)]
    for i, (opt, h, p) in enumerate(jwt):
        write("jwt", "%02d" % i, bytes([opt]) + h.encode() + b"\n" + dumps(p).encode())

    # opaque credentials: valid ones of each kind, and one wrong in each way
    ak, at = opaque("ak"), opaque("at")
    for i, s in enumerate([ak, at, ak[:-1] + ("0" if ak[-1] != "0" else "1"), "tkx_at_" + ak[7:],
                           ak[:-1], ak + "0", ak[:20] + "-" + ak[21:], "TKX_ak_" + ak[7:],
                           "tkx_ak_", "tkx_akx" + ak[7:], ak[:7] + "\0" + ak[8:],
                           "ghp_" + ak[7:43]]):
        write("opaque", "%02d" % i, s)

    # DPoP: 4 option bytes (see fuzz_dpop.c), then header \n claims [\n access token]
    htu = "https://as.example/rpc/token"
    proof_claims = {"jti": "p1", "htm": "POST", "htu": htu, "iat": now}
    es_dpop = dict(es_pub)
    dp = [(b"\x00\x00\x00\x17", dumps({}), proof_claims, None),            # ES256, jwk+alg+typ added
          (b"\x01\x00\x00\x17", dumps({}), proof_claims, None),            # EdDSA
          (b"\x02\x00\x00\x17", dumps({}), dict(proof_claims, nonce="n"), None),  # ES384
          (b"\x03\x00\x00\x17", dumps({}), proof_claims, None),            # HS256: refused
          (b"\x00\x04\x00\x17", dumps({}), dict(proof_claims, htu=htu + "?a=b"), None),
          (b"\x00\x00\x00\x1f", dumps({}), proof_claims, None),            # signature changed
          (b"\x00\x00\x80\x17", dumps({}), proof_claims, None),            # clock 256 s later
          (b"\x00\x00\x00\x17", dumps({}), dict(proof_claims, ath=b64(hashlib.sha256(b"tok").digest())), b"tok"),
          (b"\x00\x00\x00\x16", dumps({"jwk": dict(es_pub, d="AAAA")}), proof_claims, None),
          (b"\x00\x00\x00\x13", dumps({"typ": "JWT"}), proof_claims, None),
          (b"\x00\x00\x00\x10", dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": es_dpop}), proof_claims, None),
          (b"\x00\x00\x00\x17", dumps({}), dict(proof_claims, jti="x" * 257), None),
          (b"\x00\x00\x00\x17", dumps({}), dict(proof_claims, iat=str(now)), None),
          (b"\x00\x00\x00\x37", dumps({}), dict(proof_claims, nonce=nonce(now)), None),
          (b"\x00\x00\x00\x37", dumps({}), dict(proof_claims, nonce=nonce(now)[:-1] + "A"), None)]
    # the clock at the window's edges (now = iat + byte 2): skew 60, max_age 60; then skew 0
    for b2, b3 in ((0xC4, 0x17), (0xC3, 0x17), (0x78, 0x17), (0x79, 0x17), (0x00, 0x57), (0xFF, 0x57),
                   (0x3C, 0x57), (0x3D, 0x57)):
        dp.append((bytes([0, 0, b2, b3]), dumps({}), proof_claims, None))
    for i, (o, h, c, tok) in enumerate(dp):
        data = o + h.encode() + b"\n" + dumps(c).encode()
        if tok is not None:
            data += b"\n" + tok
        write("dpop", "%02d" % i, data)
    # raw proofs, as clients send them, each followed by its claims (the request and clock come from them)
    raw = [(es, "ES256", es_pub), (ed, "EdDSA", ed_pub), (rs, "RS256", rs_pub)]
    for i, (k, alg, pub) in enumerate(raw):
        t = token(k, {"typ": "dpop+jwt", "alg": alg, "jwk": pub}, proof_claims)
        write("dpop", "%02d" % (len(dp) + i), b"\x04\x00\x00\x10" + t.encode() + b"\n" + dumps(proof_claims).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
