package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

// parseBody decodes a legacy request body the way the handler does.
func parseBody(t *testing.T, body string) legacyDeployJSON {
	t.Helper()
	var b legacyDeployJSON
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("test body: %v", err)
	}
	return b
}

// TestParseLegacyDeploy maps the backend's body onto a DeployRequest.
func TestParseLegacyDeploy(t *testing.T) {
	const head = `"dockerImageUrl": "ghcr.io/example/mcp:1", "instanceNameOnToolbox": "Context7 MCP Server-1", `
	tests := []struct {
		name  string
		body  string
		env   map[string]string
		ports []dtma.Port // after Normalize
		keys  []string
	}{
		{
			name: "no config",
			body: `{` + head + `"accountToolInstanceId": "6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10"}`,
		},
		{
			name: "empty config",
			body: `{` + head + `"baseConfigOverrideJson": {}}`,
		},
		{
			name: "env values keep everything after the first =",
			body: `{` + head + `"baseConfigOverrideJson": {"Env": ["API_KEY=abc", "URL=http://x/?a=b", "EMPTY="]}}`,
			env:  map[string]string{"API_KEY": "abc", "URL": "http://x/?a=b", "EMPTY": ""},
		},
		{
			name:  "the reference's example",
			body:  `{` + head + `"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "30001"}]}}}}`,
			ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 30001}},
			keys:  []string{"8080/tcp"},
		},
		{
			name:  "key without protocol is tcp",
			body:  `{` + head + `"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080": [{"HostPort": "30001"}]}}}}`,
			ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 30001}},
			keys:  []string{"8080"},
		},
		{
			name:  "udp",
			body:  `{` + head + `"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/udp": [{"HostPort": "30001"}]}}}}`,
			ports: []dtma.Port{{ContainerPort: 8080, Protocol: "udp", HostPort: 30001}},
			keys:  []string{"8080/udp"},
		},
		{
			name:  "protocol is lower-cased",
			body:  `{` + head + `"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/TCP": [{"HostPort": "1"}]}}}}`,
			ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 1}},
			keys:  []string{"8080/TCP"},
		},
		{
			name:  "HostPort empty, zero, absent and no binding all allocate",
			body:  `{` + head + `"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"1/tcp": [{"HostPort": ""}], "2/tcp": [{"HostPort": "0"}], "3/tcp": [{}], "4/tcp": [], "5/tcp": null}}}}`,
			ports: []dtma.Port{{ContainerPort: 1, Protocol: "tcp"}, {ContainerPort: 2, Protocol: "tcp"}, {ContainerPort: 3, Protocol: "tcp"}, {ContainerPort: 4, Protocol: "tcp"}, {ContainerPort: 5, Protocol: "tcp"}},
			keys:  []string{"1/tcp", "2/tcp", "3/tcp", "4/tcp", "5/tcp"},
		},
		{
			name:  "HostPort with spaces, HostIp kept",
			body:  `{` + head + `"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": " 127.0.0.1 ", "HostPort": " 30001 "}]}}}}`,
			ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 30001, HostIP: "127.0.0.1"}},
			keys:  []string{"8080/tcp"},
		},
		{
			name: "several bindings of one key, keys in sorted order",
			body: `{` + head + `"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"9090/tcp": [{"HostPort": "2"}], "8080/tcp": [{"HostPort": "1"}, {"HostIp": "::1", "HostPort": "3"}]}}}}`,
			ports: []dtma.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 1}, {ContainerPort: 8080, Protocol: "tcp", HostPort: 3, HostIP: "::1"},
				{ContainerPort: 9090, Protocol: "tcp", HostPort: 2}},
			keys: []string{"8080/tcp", "8080/tcp", "9090/tcp"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, keys, _, err := parseLegacyDeploy(parseBody(t, tt.body))
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if req.Name != "Context7 MCP Server-1" || req.Spec.Image != "ghcr.io/example/mcp:1" {
				t.Errorf("name %q image %q", req.Name, req.Spec.Image)
			}
			req.Normalize()
			if err := req.Validate(); err != nil {
				t.Errorf("valid body fails validation: %v", err)
			}
			if !reflect.DeepEqual(req.Spec.Env, tt.env) {
				t.Errorf("env %v, want %v", req.Spec.Env, tt.env)
			}
			if len(req.Spec.Ports) != len(tt.ports) || (len(tt.ports) > 0 && !reflect.DeepEqual(req.Spec.Ports, tt.ports)) {
				t.Errorf("ports %+v, want %+v", req.Spec.Ports, tt.ports)
			}
			if !reflect.DeepEqual(keys, tt.keys) {
				t.Errorf("keys %q, want %q", keys, tt.keys)
			}
		})
	}

	// The backend passes baseConfigOverrideJson through from its database:
	// absent, null, or with keys of its UI's own. Those are accepted, and
	// the unused keys named (for the debug log).
	t.Run("override absent, null or with foreign keys", func(t *testing.T) {
		for body, wantIgnored := range map[string][]string{
			`{` + head[:len(head)-2] + `}`:                 nil,
			`{` + head + `"baseConfigOverrideJson": null}`: nil,
			`{` + head + `"baseConfigOverrideJson": {}}`:   nil,
			`{` + head + `"baseConfigOverrideJson": {"uiPort": 8080, "Env": ["A=1"], "HostConfig": {"Privileged": true, "PortBindings": null}, "Labels": {}}}`: {"HostConfig.Privileged", "Labels", "uiPort"},
		} {
			req, _, ignored, err := parseLegacyDeploy(parseBody(t, body))
			if err != nil {
				t.Errorf("%s: %v", body, err)
				continue
			}
			req.Normalize()
			if err := req.Validate(); err != nil {
				t.Errorf("%s: %v", body, err)
			}
			if !reflect.DeepEqual(ignored, wantIgnored) {
				t.Errorf("%s: ignored %q, want %q", body, ignored, wantIgnored)
			}
		}
	})

	t.Run("account id and pull policy", func(t *testing.T) {
		req, _, _, err := parseLegacyDeploy(parseBody(t, `{`+head+`"accountToolInstanceId": " 6F1C1F0E-4A59-4D5E-9A59-3F1D2C8B9E10 ", "pullPolicy": "never"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Normalize()
		if req.AccountToolInstanceID != "6f1c1f0e-4a59-4d5e-9a59-3f1d2c8b9e10" || req.PullPolicy != dtma.PullNever {
			t.Errorf("account id %q, pull policy %q", req.AccountToolInstanceID, req.PullPolicy)
		}
	})
}

// TestParseLegacyDeployErrors: malformed parts are EINVALID errors naming
// the legacy field, never echoing a value.
func TestParseLegacyDeployErrors(t *testing.T) {
	const pb = `baseConfigOverrideJson.HostConfig.PortBindings`
	tests := []struct {
		name, body, field string
	}{
		{"env without =", `{"baseConfigOverrideJson": {"Env": ["A=1", "s3cr3t-no-equals"]}}`, "baseConfigOverrideJson.Env[1]"},
		{"bad key", `{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"http/tcp": [{"HostPort": "1"}]}}}}`, pb + `["http/tcp"]`},
		{"key without port", `{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"/tcp": []}}}}`, pb + `["/tcp"]`},
		{"HostPort abc", `{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "abc"}]}}}}`, pb + `["8080/tcp"].HostPort`},
		{"HostPort with a range", `{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "30001-30002"}]}}}}`, pb + `["8080/tcp"].HostPort`},
		{"override not an object", `{"baseConfigOverrideJson": "s3cr3t"}`, "baseConfigOverrideJson"},
		{"Env not a list", `{"baseConfigOverrideJson": {"Env": {"A": "s3cr3t"}}}`, "baseConfigOverrideJson.Env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := parseLegacyDeploy(parseBody(t, tt.body))
			if code := dtma.ErrorCode(err); code != dtma.EINVALID {
				t.Fatalf("code %q (%v), want invalid", code, err)
			}
			if f := dtma.ErrorField(err); f != tt.field {
				t.Errorf("field %q, want %q", f, tt.field)
			}
			if strings.Contains(dtma.ErrorMessage(err), "s3cr3t") || strings.Contains(dtma.ErrorMessage(err), "abc") {
				t.Errorf("message echoes a value: %q", dtma.ErrorMessage(err))
			}
		})
	}

	// Fields the domain validation names are renamed by legacyField.
	t.Run("validation of parsed ports", func(t *testing.T) {
		for body, field := range map[string]string{
			`{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"0/tcp": [{}]}}}}`:                                         pb + `["0/tcp"]`,
			`{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/xyz": [{}]}}}}`:                                      pb + `["8080/xyz"]`,
			`{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "-1"}]}}}}`:                      pb + `["8080/tcp"]`,
			`{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "nope"}]}}}}`:                      pb + `["8080/tcp"]`,
			`{"baseConfigOverrideJson": {"Env": ["1BAD=x"]}}`:                                                                       "baseConfigOverrideJson.Env.1BAD",
			`{"baseConfigOverrideJson": {"HostConfig": {"PortBindings": {"8080": [{"HostPort": "5"}], "9": [{"HostPort": "5"}]}}}}`: pb + `["9"]`,
		} {
			b := parseBody(t, body)
			b.DockerImageURL, b.InstanceNameOnToolbox = "img", "n"
			req, keys, _, err := parseLegacyDeploy(b)
			if err != nil {
				t.Fatalf("%s: parse: %v", body, err)
			}
			req.Normalize()
			err = legacyField(req.Validate(), keys)
			if dtma.ErrorCode(err) != dtma.EINVALID || dtma.ErrorField(err) != field {
				t.Errorf("%s: %v, want invalid on %s", body, err, field)
			}
		}
	})
}

// TestLegacyField renames v1 field names to the legacy body's.
func TestLegacyField(t *testing.T) {
	keys := []string{"8080/tcp", "9090/udp"}
	const pb = `baseConfigOverrideJson.HostConfig.PortBindings`
	tests := []struct{ in, want string }{
		{"name", "instanceNameOnToolbox"},
		{"image", "dockerImageUrl"},
		{"account_tool_instance_id", "accountToolInstanceId"},
		{"pull_policy", "pullPolicy"},
		{"env", "baseConfigOverrideJson.Env"},
		{"env.API_KEY", "baseConfigOverrideJson.Env.API_KEY"},
		{"ports", pb},
		{"ports[0].container_port", pb + `["8080/tcp"]`},
		{"ports[1].host_port", pb + `["9090/udp"]`},
		{"ports[2].host_port", pb},
		{"ports[x]", pb},
		{"body", "body"},
		{"timeout", "timeout"},
	}
	for _, tt := range tests {
		orig := dtma.FieldErrorf(dtma.ECONFLICT, tt.in, "some message")
		got := legacyField(orig, keys)
		if f := dtma.ErrorField(got); f != tt.want {
			t.Errorf("%s -> %q, want %q", tt.in, f, tt.want)
		}
		if dtma.ErrorCode(got) != dtma.ECONFLICT || !strings.HasSuffix(dtma.ErrorMessage(got), ": some message") {
			t.Errorf("%s: code or message lost: %v", tt.in, got)
		}
		if orig.Field != tt.in {
			t.Errorf("%s: the original error was modified to %q", tt.in, orig.Field)
		}
		// A wrapped error is renamed too.
		wrapped := legacyField(fmt.Errorf("deploy x: %w", dtma.FieldErrorf(dtma.EINVALID, tt.in, "m")), keys)
		if f := dtma.ErrorField(wrapped); f != tt.want {
			t.Errorf("wrapped %s -> %q, want %q", tt.in, f, tt.want)
		}
	}
	// Errors without a field, and other errors, pass through.
	noField := dtma.Errorf(dtma.ENOTFOUND, "no such tool")
	if got := legacyField(noField, keys); got != noField {
		t.Errorf("an error without a field changed: %v", got)
	}
	plain := errors.New("boom")
	if got := legacyField(plain, keys); got != plain {
		t.Errorf("a plain error changed: %v", got)
	}
	if legacyField(nil, keys) != nil {
		t.Errorf("nil changed")
	}
}

// TestDecodeJSON: each way a body can be wrong gives EINVALID naming the
// field (or "body") with a message that never echoes the body.
func TestDecodeJSON(t *testing.T) {
	big := `{"name": "` + strings.Repeat("s3cr3t", maxBody/6+1) + `"}`
	tests := []struct {
		name, body string
		strict     bool
		field, msg string // msg: a substring of the message; field "" = no error
	}{
		{"ok", `{"name": "n", "image": "i"}`, true, "", ""},
		{"ok with trailing space", "{\"name\": \"n\"}\n \t", true, "", ""},
		{"null", `null`, true, "", ""},
		{"empty", ``, true, "body", "is required"},
		{"only space", "  \n", true, "body", "is required"},
		{"malformed", `{"name": "s3cr3t`, true, "body", "not valid JSON"},
		{"syntax error", `{"name" "s3cr3t"}`, true, "body", "not valid JSON"},
		{"two objects", `{"name": "a"} {"name": "b"}`, true, "body", "exactly one JSON object"},
		{"trailing garbage", `{"name": "a"} s3cr3t`, true, "body", "exactly one JSON object"},
		{"array", `[{"name": "a"}]`, true, "body", "must be an object"},
		{"string", `"s3cr3t"`, true, "body", "must be an object"},
		{"number", `42`, true, "body", "must be an object"},
		{"wrong type string", `{"name": 5}`, true, "name", "must be a string"},
		{"wrong type object", `{"env": ["s3cr3t"]}`, true, "env", "must be an object"},
		{"wrong type array", `{"ports": "s3cr3t"}`, true, "ports", "must be an array"},
		{"wrong type nested", `{"ports": [{"container_port": "s3cr3t"}]}`, true, "ports.container_port", "must be a number"},
		{"unknown field strict", `{"name": "n", "s3cr3t_field": 1}`, true, "s3cr3t_field", "not a known field"},
		{"unknown field lenient", `{"name": "n", "extra": 1}`, false, "", ""},
		{"too large", big, true, "body", "larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/instances", strings.NewReader(tt.body))
			w := httptest.NewRecorder()
			var v DeployRequest
			err := decodeJSON(w, r, &v, tt.strict)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				return
			}
			if dtma.ErrorCode(err) != dtma.EINVALID {
				t.Fatalf("error %v, want invalid", err)
			}
			if f := dtma.ErrorField(err); f != tt.field {
				t.Errorf("field %q, want %q", f, tt.field)
			}
			msg := dtma.ErrorMessage(err)
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q lacks %q", msg, tt.msg)
			}
			if tt.field != "s3cr3t_field" && strings.Contains(msg, "s3cr3t") {
				t.Errorf("message echoes the body: %q", msg)
			}
		})
	}
}
