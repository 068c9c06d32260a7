package http

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentopia/dtma/internal/tlstest"
)

// writeSelfSigned writes a fresh self-signed certificate for 127.0.0.1
// with the given common name, and its key, to dir; it returns the paths.
func writeSelfSigned(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := tlstest.SelfSigned(t, cn)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// servedCN handshakes with addr and returns the served certificate's
// common name.
func servedCN(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the test inspects the certificate itself
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestCertReloader: the server speaks TLS with the file's certificate, a
// reload serves the new one, a failed reload keeps it.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir, "first")
	certs, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Service: &fakeService{}, Tokens: []string{"tok"}, TLSConfig: certs.TLSConfig()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := l.Addr().String()
	if cn := servedCN(t, addr); cn != "first" {
		t.Fatalf("served %q", cn)
	}
	writeSelfSigned(t, dir, "second")
	if err := certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn := servedCN(t, addr); cn != "second" {
		t.Fatalf("after reload served %q", cn)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := certs.Reload(); err == nil {
		t.Fatal("a broken key reloaded")
	}
	if cn := servedCN(t, addr); cn != "second" {
		t.Fatalf("after a failed reload served %q", cn)
	}
	if _, err := NewCertReloader(filepath.Join(dir, "none.pem"), keyFile); err == nil {
		t.Fatal("missing files accepted")
	}
}
