package kubetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// keyPair is a certificate and its private key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// pki is the cluster's certificates, in memory and as files.
type pki struct {
	ca                              *keyPair
	caPEM                           []byte
	caFile, caKeyFile               string
	servingCertFile, servingKeyFile string
	adminCertPEM, adminKeyPEM       []byte
	saKeyFile, saPubFile            string
}

// newPKI makes a CA, the API server's serving certificate, an admin client
// certificate (group system:masters) and the service-account signing key,
// and writes the files the processes read into dir.
func newPKI(dir string) (*pki, error) {
	p := &pki{}
	var err error
	p.ca, err = newCert(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "kubetest-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	})
	if err != nil {
		return nil, err
	}
	p.caPEM = certPEM(p.ca.cert)
	serving, err := newCert(p.ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return nil, err
	}
	admin, err := newClientCert(p.ca, "kubetest-admin", "system:masters")
	if err != nil {
		return nil, err
	}
	p.adminCertPEM = certPEM(admin.cert)
	if p.adminKeyPEM, err = keyPEM(admin.key); err != nil {
		return nil, err
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saKey, err := keyPEM(sa)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return nil, err
	}
	caKey, err := keyPEM(p.ca.key)
	if err != nil {
		return nil, err
	}
	servingKey, err := keyPEM(serving.key)
	if err != nil {
		return nil, err
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	files := []struct {
		field *string
		name  string
		data  []byte
	}{
		{&p.caFile, "ca.crt", p.caPEM},
		{&p.caKeyFile, "ca.key", caKey},
		{&p.servingCertFile, "apiserver.crt", certPEM(serving.cert)},
		{&p.servingKeyFile, "apiserver.key", servingKey},
		{&p.saKeyFile, "sa.key", saKey},
		{&p.saPubFile, "sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub})},
	}
	for _, f := range files {
		*f.field = filepath.Join(pkiDir, f.name)
		if err := os.WriteFile(*f.field, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// newClientCert makes a client certificate signed by ca: the API server takes
// the common name as the user and the organizations as its groups.
func newClientCert(ca *keyPair, user string, groups ...string) (*keyPair, error) {
	return newCert(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// newCert makes a key and a certificate from tmpl, signed by ca, or by itself
// when ca is nil. It is valid from an hour ago for a day.
func newCert(ca *keyPair, tmpl *x509.Certificate) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	parent, signer := tmpl, crypto.Signer(key)
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
