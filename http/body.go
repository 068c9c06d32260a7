package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/agentopia/dtma"
)

// maxBody bounds request bodies (env blocks are the largest part).
const maxBody = 1 << 20

// decodeJSON decodes the request body into v. Strict decoding (the v1 API)
// rejects unknown fields. Errors are EINVALID and name the field; they never
// echo values.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, strict bool) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(r.Body)
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return dtma.FieldErrorf(dtma.EINVALID, "body", "must hold exactly one JSON object")
		}
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var big *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return dtma.FieldErrorf(dtma.EINVALID, "body", "is required (a JSON object)")
	case errors.As(err, &big):
		return dtma.FieldErrorf(dtma.EINVALID, "body", "larger than %d bytes", maxBody)
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return dtma.FieldErrorf(dtma.EINVALID, "body", "is not valid JSON")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return dtma.FieldErrorf(dtma.EINVALID, field, "must be %s", jsonTypeName(typ.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if name == "" {
			return dtma.FieldErrorf(dtma.EINVALID, "body", "has a field with an empty name")
		}
		return dtma.FieldErrorf(dtma.EINVALID, name, "is not a known field")
	}
	return dtma.FieldErrorf(dtma.EINVALID, "body", "cannot be decoded: %s", fmt.Sprint(err))
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "uint16", "uint", "float64":
		return "a number"
	}
	return "of another type"
}
