package dockertest

import (
	"strings"
	"testing"
)

func TestDrainBuildOutput(t *testing.T) {
	ok := `{"stream":"Step 1/3 : FROM scratch\n"}` + "\n" + `{"stream":" ---\u003e \n"}` + "\n" +
		`{"aux":{"ID":"sha256:abc"}}` + "\n" + `{"stream":"Successfully built abc\n"}` + "\n"
	if err := drainBuildOutput(strings.NewReader(ok)); err != nil {
		t.Errorf("successful build reported %v", err)
	}

	failed := `{"stream":"Step 2/3 : COPY missing /missing\n"}` + "\n" +
		`{"errorDetail":{"message":"COPY failed: file not found in build context"},"error":"COPY failed: file not found in build context"}` + "\n"
	err := drainBuildOutput(strings.NewReader(failed))
	if err == nil || !strings.Contains(err.Error(), "COPY failed: file not found") || !strings.Contains(err.Error(), "Step 2/3") {
		t.Errorf("failed build reported %v, want the COPY error with output context", err)
	}

	legacy := `{"error":"legacy failure"}` + "\n"
	if err := drainBuildOutput(strings.NewReader(legacy)); err == nil || err.Error() != "legacy failure" {
		t.Errorf("legacy error field reported %v", err)
	}

	if err := drainBuildOutput(strings.NewReader(`{"stream":`)); err == nil {
		t.Error("truncated stream reported no error")
	}
}
