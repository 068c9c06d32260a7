package dtma_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

// FuzzValidate: Normalize and Validate never panic; a rejection is an
// EINVALID *dtma.Error naming a field and never quoting the env value; an
// accepted request has a name Docker accepts once derived.
func FuzzValidate(f *testing.F) {
	f.Add("Context7 MCP Server-1750278276605", "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10", "ghcr.io/example/mcp:1", "API_KEY", "s3cr3t-value", "missing", 8080, "tcp", 30001, "127.0.0.1")
	f.Add("", "", "", "", "", "", 0, "", 0, "")
	f.Add("a/b", "x", "UPPER:1", "1BAD", "v\x00", "sometimes", 70000, "icmp", -1, "not-an-ip")
	f.Add(" ", "00000000-0000-0000-0000-000000000000", "localhost:5000/x@sha256:abc", "_", "\xff", "never", 1, " SCTP ", 65535, " ::1 ")
	f.Add(".", "", "-x", "A.b-c", "", "always", 65536, "udp", 0, "fe80::1%eth0")
	f.Fuzz(func(t *testing.T, name, acct, image, envName, envValue, pull string, cport int, proto string, hport int, hostIP string) {
		req := dtma.DeployRequest{
			Name: name, AccountToolInstanceID: acct, PullPolicy: dtma.PullPolicy(pull),
			Spec: dtma.Spec{Image: image, Env: map[string]string{envName: envValue},
				Ports: []dtma.Port{{ContainerPort: cport, Protocol: proto, HostPort: hport, HostIP: hostIP}}},
		}
		req.Normalize()
		err := req.Validate()
		if err == nil {
			if cn := dtma.ContainerName(req.Name); !dockerName.MatchString(cn) {
				t.Fatalf("accepted name %q derives container name %q", req.Name, cn)
			}
			return
		}
		var e *dtma.Error
		if !errors.As(err, &e) || e.Code != dtma.EINVALID || e.Field == "" || e.Message == "" {
			t.Fatalf("rejection is not an EINVALID field error: %#v", err)
		}
		if len(envValue) >= 6 && strings.Contains(e.Message, envValue) && !strings.Contains(name+acct+image+envName+proto+hostIP, envValue) {
			t.Fatalf("the error quotes the env value: %q", e.Message)
		}
	})
}

// FuzzContainerName: any instance name derives a stable container name
// Docker accepts, of bounded length, and a different disambiguated one.
func FuzzContainerName(f *testing.F) {
	for _, s := range []string{"Context7 MCP Server-1750278276605", "", "---", "ÄÖÜ ß", "K", ".hidden", strings.Repeat("a", 300), "a\x00b", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		cn := dtma.ContainerName(name)
		if !dockerName.MatchString(cn) || !strings.HasPrefix(cn, "dtma-") || len(cn) > 5+100 {
			t.Fatalf("ContainerName(%q) = %q", name, cn)
		}
		if again := dtma.ContainerName(name); again != cn {
			t.Fatalf("not stable: %q then %q", cn, again)
		}
		d := dtma.DisambiguatedContainerName("host-1", name)
		if !dockerName.MatchString(d) || d == cn || !strings.HasPrefix(d, cn+"-") {
			t.Fatalf("DisambiguatedContainerName(%q) = %q (plain %q)", name, d, cn)
		}
	})
}
