package mcpbridge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

type rwc struct {
	r io.Reader
	w bytes.Buffer
}

func (c *rwc) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *rwc) Write(p []byte) (int, error) { return c.w.Write(p) }
func (*rwc) Close() error                  { return nil }

// TestStdioConnLines: non-JSON lines are skipped and counted, a message
// over the limit is answered with an error for its id (or skipped when it
// has none), and the messages around them come through intact.
func TestStdioConnLines(t *testing.T) {
	big := `{"jsonrpc":"2.0","id":4,"result":{"text":"` + strings.Repeat("x", 300) + `"}}`
	bigNoID := `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + strings.Repeat("y", 300) + `"}}`
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`not json at all`,
		big,
		bigNoID,
		`{"jsonrpc":"2.0","id":"s2","result":{}}`,
	}, "\n") + "\n"
	st := &counters{}
	tr := &stdioTransport{rwc: &rwc{r: strings.NewReader(in)}, max: 128, log: slog.New(slog.DiscardHandler), stats: st}
	conn, _ := tr.Connect(context.Background())
	ctx := context.Background()
	want := []string{"1:ok", "4:error", "s2:ok"}
	for _, w := range want {
		msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read (want %s): %v", w, err)
		}
		res, ok := msg.(*jsonrpc.Response)
		if !ok {
			t.Fatalf("got %T, want a response", msg)
		}
		got := "ok"
		if res.Error != nil {
			got = "error"
		}
		var id string
		switch v := res.ID.Raw().(type) {
		case string:
			id = v
		case int64:
			id = strconv.FormatInt(v, 10)
		}
		if id+":"+got != w {
			t.Errorf("got %s:%s, want %s", id, got, w)
		}
	}
	if _, err := conn.Read(ctx); err != io.EOF {
		t.Errorf("at the end: %v, want EOF", err)
	}
	if st.skipped.Load() != 1 || st.errors.Load() != 2 {
		t.Errorf("skipped %d errors %d, want 1 and 2", st.skipped.Load(), st.errors.Load())
	}
}
