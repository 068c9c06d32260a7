package testregistry

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"testing"
)

type entry struct {
	name, link string
	data       []byte
}

func saveArchive(t *testing.T, entries []entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
		if e.link != "" {
			hdr = &tar.Header{Name: e.name, Mode: 0o777, Typeflag: tar.TypeSymlink, Linkname: e.link}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestReadSave_Legacy(t *testing.T) {
	t.Parallel()
	// Engine 20.10: <id>.json config, <dir>/layer.tar, identical layers as
	// symbolic links to the first copy.
	buf := saveArchive(t, []entry{
		{name: "aaa/layer.tar", data: []byte("layer-1")},
		{name: "bbb/layer.tar", link: "../aaa/layer.tar"},
		{name: "ccc/layer.tar", data: []byte("layer-3")},
		{name: "cfg.json", data: []byte(`{"config":{}}`)},
		{name: "manifest.json", data: []byte(`[{"Config":"cfg.json","RepoTags":["x:y"],"Layers":["aaa/layer.tar","bbb/layer.tar","ccc/layer.tar"]}]`)},
	})
	config, layers, err := readSave(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(config) != `{"config":{}}` {
		t.Errorf("config = %s", config)
	}
	if len(layers) != 3 || string(layers[0]) != "layer-1" || string(layers[1]) != "layer-1" || string(layers[2]) != "layer-3" {
		t.Errorf("layers = %q", layers)
	}
}

func TestReadSave_OCI(t *testing.T) {
	t.Parallel()
	buf := saveArchive(t, []entry{
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "blobs/sha256/c0", data: []byte(`{"config":null}`)},
		{name: "blobs/sha256/l1", data: []byte{0x1f, 0x8b, 1, 2}},
		{name: "manifest.json", data: []byte(`[{"Config":"blobs/sha256/c0","Layers":["blobs/sha256/l1"]}]`)},
	})
	config, layers, err := readSave(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(config) != `{"config":null}` || len(layers) != 1 {
		t.Fatalf("config %s, %d layers", config, len(layers))
	}
	gz, err := gzipped(layers[0])
	if err != nil || !bytes.Equal(gz, layers[0]) {
		t.Errorf("a gzip layer is served as stored: %v", err)
	}
}

func TestReadSave_Bad(t *testing.T) {
	t.Parallel()
	for name, entries := range map[string][]entry{
		"no manifest":   {{name: "cfg.json", data: []byte("{}")}},
		"two images":    {{name: "manifest.json", data: []byte(`[{"Config":"a"},{"Config":"b"}]`)}},
		"missing layer": {{name: "cfg.json", data: []byte("{}")}, {name: "manifest.json", data: []byte(`[{"Config":"cfg.json","Layers":["x/layer.tar"]}]`)}},
	} {
		if _, _, err := readSave(saveArchive(t, entries)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestAddLabel(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"architecture":"amd64","config":{"Labels":{"a":"1"},"Env":["X=1"]},"rootfs":{"type":"layers"}}`,
		`{"architecture":"amd64","config":{"Labels":null}}`,
		`{"architecture":"amd64"}`,
	} {
		out, err := addLabel([]byte(in), "k", "v")
		if err != nil {
			t.Fatalf("addLabel(%s): %v", in, err)
		}
		var doc struct {
			Architecture string
			Config       struct{ Labels map[string]string }
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Architecture != "amd64" || doc.Config.Labels["k"] != "v" {
			t.Errorf("addLabel(%s) = %s", in, out)
		}
	}
}
