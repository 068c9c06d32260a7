package http

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3 document of the v1 API, checked in beside this
// file; openapi_test.go keeps it in step with the routes.
//
//go:embed openapi.json
var openAPI []byte

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPI)
}
