package http

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

// openAPIDoc is the part of an OpenAPI 3 document these tests read.
type openAPIDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Security   []map[string][]string                 `json:"security"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		SecuritySchemes map[string]json.RawMessage `json:"securitySchemes"`
		Schemas         map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		} `json:"schemas"`
	} `json:"components"`
}

type openAPIOp struct {
	OperationID string                     `json:"operationId"`
	Parameters  []openAPIParam             `json:"parameters"`
	Responses   map[string]json.RawMessage `json:"responses"`
}

type openAPIParam struct {
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
}

func readOpenAPI(t *testing.T) (openAPIDoc, []byte) {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatalf("read openapi.json: %v", err)
	}
	if !bytes.Equal(raw, openAPI) {
		t.Fatalf("the embedded document differs from openapi.json")
	}
	var doc openAPIDoc
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	return doc, raw
}

// TestOpenAPIMatchesRoutes: the document describes exactly the /v1 routes
// the server registers, no more and no fewer.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, _ := readOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	var registered []string
	for _, r := range (&Server{}).routes() {
		if strings.HasPrefix(r.Path, "/v1/") {
			registered = append(registered, r.Method+" "+r.Path)
		}
	}
	sort.Strings(documented)
	sort.Strings(registered)
	if len(registered) == 0 {
		t.Fatal("no /v1 routes registered")
	}
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("openapi.json documents %s, which the server does not serve", d)
		}
	}
}

// TestOpenAPIOperations: every operation has a unique operationId,
// responses (with 401 and 403, as every v1 route is authenticated),
// declares each path parameter, and every $ref resolves.
func TestOpenAPIOperations(t *testing.T) {
	doc, raw := readOpenAPI(t)
	if len(doc.Security) == 0 || len(doc.Components.SecuritySchemes) == 0 {
		t.Errorf("the document declares no security")
	}
	ids := map[string]string{}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	for path, ops := range doc.Paths {
		for method, rawOp := range ops {
			where := strings.ToUpper(method) + " " + path
			var op openAPIOp
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if len(op.Responses) == 0 {
				t.Errorf("%s has no responses", where)
			}
			for _, code := range []string{"401", "403"} {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s does not document %s", where, code)
				}
			}
			hasSuccess := false
			for code := range op.Responses {
				hasSuccess = hasSuccess || strings.HasPrefix(code, "2")
			}
			if !hasSuccess {
				t.Errorf("%s documents no 2xx response", where)
			}
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", where)
			} else if prev, dup := ids[op.OperationID]; dup {
				t.Errorf("operationId %s used by %s and %s", op.OperationID, prev, where)
			}
			ids[op.OperationID] = where
			for _, m := range param.FindAllStringSubmatch(path, -1) {
				ok := slices.ContainsFunc(op.Parameters, func(p openAPIParam) bool {
					return p.Name == m[1] && p.In == "path" && p.Required
				})
				if !ok {
					t.Errorf("%s does not declare the required path parameter %s", where, m[1])
				}
			}
		}
	}
	for _, m := range regexp.MustCompile(`"\$ref":\s*"#/components/schemas/([^"]+)"`).FindAllSubmatch(raw, -1) {
		if _, ok := doc.Components.Schemas[string(m[1])]; !ok {
			t.Errorf("$ref to missing schema %s", m[1])
		}
	}
}

// jsonFields returns the JSON names of a struct type's fields.
func jsonFields(v any) []string {
	var out []string
	rt := reflect.TypeOf(v)
	for i := 0; i < rt.NumField(); i++ {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// TestOpenAPISchemasMatchTypes: the schemas of request and response bodies
// have exactly the fields the Go types encode and decode.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	doc, _ := readOpenAPI(t)
	for schema, v := range map[string]any{
		"Instance":      Instance{},
		"DeployRequest": DeployRequest{},
		"AdoptRequest":  AdoptRequest{},
		"Port":          dtma.Port{},
	} {
		s, ok := doc.Components.Schemas[schema]
		if !ok {
			t.Errorf("no schema %s", schema)
			continue
		}
		var props []string
		for p := range s.Properties {
			props = append(props, p)
		}
		sort.Strings(props)
		if want := jsonFields(v); !slices.Equal(props, want) {
			t.Errorf("schema %s has properties %v; the Go type has %v", schema, props, want)
		}
		for _, r := range s.Required {
			if !slices.Contains(props, r) {
				t.Errorf("schema %s requires %s, which it does not define", schema, r)
			}
		}
	}
}

// uncalledService is a dtma.InstanceService that must not be called: any call
// panics (the embedded interface is nil), which the server answers 500.
type uncalledService struct{ dtma.InstanceService }

// TestOpenAPIServed: GET /v1/openapi.json serves the document with a
// token, and only with one.
func TestOpenAPIServed(t *testing.T) {
	_, raw := readOpenAPI(t)
	srv := httptest.NewServer((&Server{Service: uncalledService{}, Tokens: []string{"unit-token"}, Version: "test"}).Handler())
	defer srv.Close()
	get := func(auth string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/v1/openapi.json", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get("Bearer unit-token")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if !bytes.Equal(body, raw) {
		t.Errorf("served document differs from openapi.json")
	}
	for auth, want := range map[string]int{"": 401, "Bearer other": 403} {
		resp := get(auth)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("with %q: status %d, want %d", auth, resp.StatusCode, want)
		}
		if code := map[int]string{401: "unauthorized", 403: "forbidden"}[want]; e.Error.Code != code {
			t.Errorf("with %q: error.code %q, want %q", auth, e.Error.Code, code)
		}
	}
}
