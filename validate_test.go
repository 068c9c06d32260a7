package dtma_test

import (
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

func validRequest() dtma.DeployRequest {
	return dtma.DeployRequest{
		Name:                  "Context7 MCP Server-1750278276605",
		AccountToolInstanceID: "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10",
		Spec: dtma.Spec{
			Image: "ghcr.io/example/mcp-server:1.2.0",
			Env:   map[string]string{"API_KEY": "abc", "LOG_LEVEL": "info"},
			Ports: []dtma.Port{{ContainerPort: 8080, Protocol: "TCP", HostPort: 30001}},
		},
	}
}

func TestNormalize(t *testing.T) {
	r := validRequest()
	r.Spec.Ports = append(r.Spec.Ports, dtma.Port{ContainerPort: 9000})
	r.Normalize()
	if r.AccountToolInstanceID != "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10" {
		t.Errorf("account id not lower-cased: %q", r.AccountToolInstanceID)
	}
	if r.PullPolicy != dtma.PullMissing {
		t.Errorf("pull policy default %q", r.PullPolicy)
	}
	if r.Spec.Ports[0].Protocol != "tcp" || r.Spec.Ports[1].Protocol != "tcp" {
		t.Errorf("protocols %+v", r.Spec.Ports)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("valid request rejected: %v", err)
	}
}

func TestValidateFields(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*dtma.DeployRequest)
		field string
	}{
		{"no name", func(r *dtma.DeployRequest) { r.Name = "" }, "name"},
		{"blank name", func(r *dtma.DeployRequest) { r.Name = "   " }, "name"},
		{"slash in name", func(r *dtma.DeployRequest) { r.Name = "a/b" }, "name"},
		{"control char", func(r *dtma.DeployRequest) { r.Name = "a\x01b" }, "name"},
		{"long name", func(r *dtma.DeployRequest) { r.Name = strings.Repeat("x", 256) }, "name"},
		{"dot name", func(r *dtma.DeployRequest) { r.Name = "." }, "name"},
		{"dot-dot name", func(r *dtma.DeployRequest) { r.Name = ".." }, "name"},
		{"invalid UTF-8 name", func(r *dtma.DeployRequest) { r.Name = "tool-\xff" }, "name"},
		{"U+FFFD name", func(r *dtma.DeployRequest) { r.Name = "tool-\uFFFD" }, "name"},
		{"UUID name", func(r *dtma.DeployRequest) { r.Name = "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10" }, "name"},
		{"upper-case UUID name", func(r *dtma.DeployRequest) { r.Name = "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10" }, "name"},
		{"image without host before port", func(r *dtma.DeployRequest) { r.Spec.Image = ":5000/x" }, "image"},
		{"image with empty host", func(r *dtma.DeployRequest) { r.Spec.Image = "/x:1" }, "image"},
		{"image bad tag", func(r *dtma.DeployRequest) { r.Spec.Image = "x:-1" }, "image"},
		{"image bad digest", func(r *dtma.DeployRequest) { r.Spec.Image = "x@sha256:zz" }, "image"},
		{"image bad host", func(r *dtma.DeployRequest) { r.Spec.Image = "-a.io/x" }, "image"},
		{"sctp", func(r *dtma.DeployRequest) { r.Spec.Ports[0].Protocol = "sctp" }, "ports[0].protocol"},
		{"bad account", func(r *dtma.DeployRequest) { r.AccountToolInstanceID = "not-a-uuid" }, "account_tool_instance_id"},
		{"no image", func(r *dtma.DeployRequest) { r.Spec.Image = "" }, "image"},
		{"image with space", func(r *dtma.DeployRequest) { r.Spec.Image = "a b" }, "image"},
		{"upper-case repo", func(r *dtma.DeployRequest) { r.Spec.Image = "ghcr.io/Example/x:1" }, "image"},
		{"bad pull policy", func(r *dtma.DeployRequest) { r.PullPolicy = "sometimes" }, "pull_policy"},
		{"bad env name", func(r *dtma.DeployRequest) { r.Spec.Env = map[string]string{"1BAD": "x"} }, "env.1BAD"},
		{"env NUL", func(r *dtma.DeployRequest) { r.Spec.Env = map[string]string{"OK": "a\x00b"} }, "env.OK"},
		{"port 0", func(r *dtma.DeployRequest) { r.Spec.Ports[0].ContainerPort = 0 }, "ports[0].container_port"},
		{"port big", func(r *dtma.DeployRequest) { r.Spec.Ports[0].ContainerPort = 70000 }, "ports[0].container_port"},
		{"protocol", func(r *dtma.DeployRequest) { r.Spec.Ports[0].Protocol = "xyz" }, "ports[0].protocol"},
		{"host port", func(r *dtma.DeployRequest) { r.Spec.Ports[0].HostPort = -1 }, "ports[0].host_port"},
		{"host ip", func(r *dtma.DeployRequest) { r.Spec.Ports[0].HostIP = "nope" }, "ports[0].host_ip"},
		{"dup host port", func(r *dtma.DeployRequest) {
			r.Spec.Ports = append(r.Spec.Ports, dtma.Port{ContainerPort: 9000, HostPort: 30001})
		}, "ports[1].host_port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRequest()
			tt.edit(&r)
			r.Normalize()
			err := r.Validate()
			if dtma.ErrorCode(err) != dtma.EINVALID {
				t.Fatalf("code %q (%v), want invalid", dtma.ErrorCode(err), err)
			}
			if got := dtma.ErrorField(err); got != tt.field {
				t.Fatalf("field %q, want %q (%v)", got, tt.field, err)
			}
		})
	}
}

func TestValidateNeverEchoesEnvValues(t *testing.T) {
	r := validRequest()
	r.Spec.Env = map[string]string{"SECRET": "hunter2\x00"}
	r.Normalize()
	err := r.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(dtma.ErrorMessage(err), "hunter2") {
		t.Fatalf("error %v leaks the value", err)
	}
}

func TestIsUUIDAndNewUUID(t *testing.T) {
	for i := 0; i < 100; i++ {
		u := dtma.NewUUID()
		if !dtma.IsUUID(u) || u[14] != '4' {
			t.Fatalf("NewUUID() = %q", u)
		}
	}
	for _, bad := range []string{"", "6f1c1f0e4a594d5e9a593f1d2c8b9e10", "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e1g", "6f1c1f0e-4a59-4d5e-9a593-f1d2c8b9e10"} {
		if dtma.IsUUID(bad) {
			t.Errorf("IsUUID(%q) = true", bad)
		}
	}
}

func TestParseImageRef(t *testing.T) {
	for _, tt := range []struct{ in, host, path, tag string }{
		{"x", "docker.io", "x", ""},
		{"x:1", "docker.io", "x", "1"},
		{"library/x:1", "docker.io", "library/x", "1"},
		{"ghcr.io/a/b:1.2", "ghcr.io", "a/b", "1.2"},
		{"127.0.0.1:5000/x:1", "127.0.0.1:5000", "x", "1"},
		{"localhost/x", "localhost", "x", ""},
		{"[::1]:5000/x", "[::1]:5000", "x", ""},
		{"dtma-test-echo:0123456789ab", "docker.io", "dtma-test-echo", "0123456789ab"},
	} {
		ref, err := dtma.ParseImageRef(tt.in)
		if err != nil || ref.Host != tt.host || ref.Path != tt.path || ref.Tag != tt.tag {
			t.Errorf("ParseImageRef(%q) = %+v, %v", tt.in, ref, err)
		}
	}
	for _, bad := range []string{"", ":5000/x", "/x", "x/", "x:", "a//b", "a.io/", "a.io:/x"} {
		if _, err := dtma.ParseImageRef(bad); dtma.ErrorField(err) != "image" {
			t.Errorf("ParseImageRef(%q) = %v, want an error on image", bad, err)
		}
	}
}
