package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"

	"github.com/golang-jwt/jwt/v5"
)

// Keys and algorithms. A key has one type, and each type verifies only its
// own algorithms: an HMAC secret only HS256, an RSA key RS256/384/512, a
// P-256 key ES256, a P-384 key ES384, an Ed25519 key EdDSA. The algorithm
// named by a token is looked up in that table and never used to decide how
// to read a key, so a public key can never serve as an HMAC secret (the
// classic RS256 -> HS256 confusion), "none" is never accepted, and a kid
// naming a key of another type is refused (ErrBadAlgorithm).

// verifyKey is one key a token may be signed with.
type verifyKey struct {
	kid string // "" for keys from PEM files and the HS256 secret
	alg string // the only algorithm allowed, if the JWKS entry names one
	key any    // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// allowedAlgs are the algorithms accepted at all.
var allowedAlgs = map[string]jwt.SigningMethod{
	"HS256": jwt.SigningMethodHS256,
	"RS256": jwt.SigningMethodRS256,
	"RS384": jwt.SigningMethodRS384,
	"RS512": jwt.SigningMethodRS512,
	"ES256": jwt.SigningMethodES256,
	"ES384": jwt.SigningMethodES384,
	"EdDSA": jwt.SigningMethodEdDSA,
}

// fits reports whether k may verify a token signed with alg.
func (k *verifyKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case []byte:
		return alg == "HS256"
	case *rsa.PublicKey:
		return alg == "RS256" || alg == "RS384" || alg == "RS512"
	case *ecdsa.PublicKey:
		switch key.Curve {
		case elliptic.P256():
			return alg == "ES256"
		case elliptic.P384():
			return alg == "ES384"
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// loadPEMKey reads a public key (PKIX "PUBLIC KEY", PKCS#1 "RSA PUBLIC
// KEY", or a certificate) from a PEM file: RSA, ECDSA P-256/P-384 or
// Ed25519.
func loadPEMKey(path string) (verifyKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return verifyKey{}, err
	}
	var key any
	if k, err := jwt.ParseRSAPublicKeyFromPEM(b); err == nil {
		key = k
	} else if k, err := jwt.ParseECPublicKeyFromPEM(b); err == nil {
		key = k
	} else if k, err := jwt.ParseEdPublicKeyFromPEM(b); err == nil {
		key = k
	} else {
		return verifyKey{}, fmt.Errorf("auth: %s: no RSA, ECDSA or Ed25519 public key in PEM", path)
	}
	if err := checkKey(key); err != nil {
		return verifyKey{}, fmt.Errorf("auth: %s: %w", path, err)
	}
	return verifyKey{key: key}, nil
}

// checkKey refuses weak or unsupported keys.
func checkKey(key any) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits (at least %d)", k.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return errors.New("ECDSA curve not supported (P-256 or P-384)")
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("bad Ed25519 key size")
		}
	default:
		return fmt.Errorf("unsupported key type %T", key)
	}
	return nil
}

// jwk is one entry of a JWK Set (RFC 7517), the fields read here.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads a JWK Set. Entries that are not signature keys of a
// supported type (and symmetric "oct" keys, never taken from a URL) are
// skipped; skipped counts them.
func parseJWKS(b []byte) (keys []verifyKey, skipped int, err error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, 0, fmt.Errorf("auth: JWKS: %w", err)
	}
	for _, k := range set.Keys {
		vk, err := k.verifyKey()
		if err != nil {
			skipped++
			continue
		}
		keys = append(keys, vk)
	}
	return keys, skipped, nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("bad base64url integer")
	}
	return new(big.Int).SetBytes(b), nil
}

func (k jwk) verifyKey() (verifyKey, error) {
	if k.Use != "" && k.Use != "sig" {
		return verifyKey{}, errors.New("not a signature key")
	}
	if _, ok := allowedAlgs[k.Alg]; k.Alg != "" && (!ok || k.Alg == "HS256") {
		return verifyKey{}, errors.New("algorithm not supported")
	}
	var key any
	switch k.Kty {
	case "RSA":
		n, err := b64int(k.N)
		if err != nil {
			return verifyKey{}, err
		}
		e, err := b64int(k.E)
		if err != nil || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return verifyKey{}, errors.New("bad RSA exponent")
		}
		key = &rsa.PublicKey{N: n, E: int(e.Int64())}
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		default:
			return verifyKey{}, errors.New("curve not supported")
		}
		x, err := b64int(k.X)
		if err != nil {
			return verifyKey{}, err
		}
		y, err := b64int(k.Y)
		if err != nil {
			return verifyKey{}, err
		}
		// The uncompressed point 0x04 || X || Y, each padded to the
		// curve's size; the parser refuses a point not on the curve.
		size := (curve.Params().BitSize + 7) / 8
		if len(x.Bytes()) > size || len(y.Bytes()) > size {
			return verifyKey{}, errors.New("bad EC point")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		x.FillBytes(point[1 : 1+size])
		y.FillBytes(point[1+size:])
		pk, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil { // not a point of the curve
			return verifyKey{}, errors.New("bad EC point")
		}
		key = pk
	case "OKP":
		if k.Crv != "Ed25519" {
			return verifyKey{}, errors.New("curve not supported")
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return verifyKey{}, errors.New("bad Ed25519 key")
		}
		key = ed25519.PublicKey(x)
	default:
		return verifyKey{}, errors.New("key type not supported")
	}
	if err := checkKey(key); err != nil {
		return verifyKey{}, err
	}
	vk := verifyKey{kid: k.Kid, alg: k.Alg, key: key}
	return vk, nil
}
