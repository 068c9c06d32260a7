package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
)

// Client calls an agent's v1 API. It is what the CLI and the end-to-end
// tests use, so they read exactly the wire types the Server writes.
//
// Every method returns an *APIError for an answer that is not 2xx; it
// unwraps to a *dtma.Error with the code, field and message of the v1 error
// body, or — for an answer without one (a proxy's, an old agent's) — the
// code that matches the HTTP status and the body's first line. Transport failures are returned wrapped, with
// the method and path.
type Client struct {
	// BaseURL is the agent's address, e.g. http://127.0.0.1:30000.
	BaseURL string
	// Token is the bearer token. It is sent, never logged nor put in an error.
	Token string
	// HTTP sends the requests; nil means a client with a 5-minute timeout
	// (a deploy may pull an image). Log follows are not bounded by it.
	HTTP *http.Client
}

// NewClient returns a Client for the agent at baseURL.
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token}
}

// Deploy asks for an instance (POST /v1/instances). created is false when
// an identical deploy already existed (the agent made sure it runs).
func (c *Client) Deploy(ctx context.Context, req DeployRequest) (inst Instance, created bool, err error) {
	status, err := c.call(ctx, "POST", "/v1/instances", req, &inst)
	return inst, status == http.StatusCreated, err
}

// DeployProgress is Deploy that asks for pull progress (Accept:
// application/x-ndjson) and calls progress with each message while the
// agent pulls the image, before it returns the outcome. An agent that
// pulls nothing (or predates streaming) answers with one JSON object,
// which is read as Deploy reads it.
func (c *Client) DeployProgress(ctx context.Context, req DeployRequest, progress func(dtma.PullProgress)) (inst Instance, created bool, err error) {
	const path = "/v1/instances"
	resp, err := c.sendAccept(ctx, "POST", path, req, true, ndjson+", application/json")
	if err != nil {
		return inst, false, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != ndjson {
		if resp.StatusCode/100 != 2 {
			return inst, false, errorFrom(resp)
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&inst); err != nil {
			return inst, false, fmt.Errorf("POST %s: decode answer: %w", path, err)
		}
		return inst, resp.StatusCode == http.StatusCreated, nil
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev DeployEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return inst, false, fmt.Errorf("POST %s: read progress: %w (the outcome line never came)", path, err)
		}
		switch {
		case ev.Progress != nil:
			if progress != nil {
				progress(*ev.Progress)
			}
		case ev.Error != nil:
			return inst, false, &APIError{Status: ev.Status, Err: &dtma.Error{Code: ev.Error.Code, Field: ev.Error.Field,
				Message: strings.TrimPrefix(ev.Error.Message, ev.Error.Field+": ")}}
		case ev.Instance != nil:
			return *ev.Instance, ev.Created, nil
		}
	}
}

// Instances lists this host's instances (GET /v1/instances).
func (c *Client) Instances(ctx context.Context) ([]Instance, error) {
	var list InstanceList
	_, err := c.call(ctx, "GET", "/v1/instances", nil, &list)
	return list.Instances, err
}

// FleetInstances lists the instances of every host sharing the registry
// (GET /v1/fleet/instances).
func (c *Client) FleetInstances(ctx context.Context) ([]Instance, error) {
	var list InstanceList
	_, err := c.call(ctx, "GET", "/v1/fleet/instances", nil, &list)
	return list.Instances, err
}

// Instance returns one instance by name, account tool instance id or id.
func (c *Client) Instance(ctx context.Context, ref string) (Instance, error) {
	var inst Instance
	_, err := c.call(ctx, "GET", "/v1/instances/"+url.PathEscape(ref), nil, &inst)
	return inst, err
}

// Start starts an instance; Changed is false when it was running already.
func (c *Client) Start(ctx context.Context, ref string) (ActionResult, error) {
	return c.action(ctx, ref, dtma.OpStart, "")
}

// Stop stops an instance, waiting timeout for a graceful exit (a negative
// timeout means the agent's default); Changed is false when it was stopped.
func (c *Client) Stop(ctx context.Context, ref string, timeout time.Duration) (ActionResult, error) {
	q := ""
	if timeout >= 0 {
		q = "?timeout=" + strconv.Itoa(int(timeout/time.Second))
	}
	return c.action(ctx, ref, dtma.OpStop, q)
}

// Restart restarts an instance.
func (c *Client) Restart(ctx context.Context, ref string) (ActionResult, error) {
	return c.action(ctx, ref, dtma.OpRestart, "")
}

func (c *Client) action(ctx context.Context, ref string, action dtma.Op, query string) (ActionResult, error) {
	var res ActionResult
	_, err := c.call(ctx, "POST", "/v1/instances/"+url.PathEscape(ref)+"/"+string(action)+query, nil, &res)
	return res, err
}

// Remove force-removes an instance's container, then its record.
func (c *Client) Remove(ctx context.Context, ref string) error {
	_, err := c.call(ctx, "DELETE", "/v1/instances/"+url.PathEscape(ref), nil, nil)
	return err
}

// Logs returns an instance's output: the last tail lines (0: all), and
// with follow a stream that ends when ctx does or the container stops.
// The caller closes it.
func (c *Client) Logs(ctx context.Context, ref string, tail int, follow bool) (io.ReadCloser, error) {
	q := url.Values{}
	if tail > 0 {
		q.Set("tail", strconv.Itoa(tail))
	} else {
		q.Set("tail", "all")
	}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.send(ctx, "GET", "/v1/instances/"+url.PathEscape(ref)+"/logs?"+q.Encode(), nil, follow)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, errorFrom(resp)
	}
	return resp.Body, nil
}

// Adopt brings an existing container under management (POST /v1/adopt).
func (c *Client) Adopt(ctx context.Context, req AdoptRequest) (AdoptResult, error) {
	var res AdoptResult
	_, err := c.call(ctx, "POST", "/v1/adopt", req, &res)
	return res, err
}

// Health returns the agent's health. A 503 (Docker or the registry down)
// still returns the body, with an EUNAVAILABLE error.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	resp, err := c.send(ctx, "GET", "/v1/health", nil, false)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return h, fmt.Errorf("GET /v1/health: %w", err)
	}
	if jerr := json.Unmarshal(data, &h); jerr == nil && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusServiceUnavailable) {
		if resp.StatusCode != http.StatusOK {
			return h, &APIError{Status: resp.StatusCode, Err: dtma.Errorf(dtma.EUNAVAILABLE, "agent unhealthy: docker ok %v, registry ok %v", h.DockerOK, h.RegistryOK)}
		}
		return h, nil
	}
	return h, errorFromBody(resp.StatusCode, data)
}

// call sends body (JSON, when not nil) and decodes a 2xx answer into out
// (when not nil). It returns the HTTP status.
func (c *Client) call(ctx context.Context, method, path string, body, out any) (int, error) {
	resp, err := c.send(ctx, method, path, body, false)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, errorFrom(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func (c *Client) send(ctx context.Context, method, path string, body any, stream bool) (*http.Response, error) {
	return c.sendAccept(ctx, method, path, body, stream, "application/json")
}

func (c *Client) sendAccept(ctx context.Context, method, path string, body any, stream bool, accept string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", accept)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	switch {
	case hc == nil && stream:
		hc = &http.Client{}
	case hc == nil:
		hc = &http.Client{Timeout: 5 * time.Minute}
	case stream && hc.Timeout != 0:
		cp := *hc
		cp.Timeout = 0
		hc = &cp
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp, nil
}

func errorFrom(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return errorFromBody(resp.StatusCode, data)
}

// APIError is a non-2xx answer of the agent. It unwraps to the *dtma.Error
// it carries, so dtma.ErrorCode and errors.As see the agent's code.
type APIError struct {
	Status int         // the HTTP status
	Err    *dtma.Error // the v1 error body, or one made from the status
	plain  bool        // the body was no v1 error (a proxy's, an old agent's)
}

// Error is "code (status): field: message", or "HTTP status: text" for an
// answer without a v1 error body.
func (e *APIError) Error() string {
	if e.plain {
		return e.Err.Message
	}
	return fmt.Sprintf("%s (%d): %s", e.Err.Code, e.Status, dtma.ErrorMessage(e.Err))
}

// Unwrap returns the *dtma.Error.
func (e *APIError) Unwrap() error { return e.Err }

// errorFromBody turns a non-2xx answer into an *APIError.
func errorFromBody(status int, data []byte) error {
	var eb ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
		msg := strings.TrimPrefix(eb.Error.Message, eb.Error.Field+": ")
		return &APIError{Status: status, Err: &dtma.Error{Code: eb.Error.Code, Field: eb.Error.Field, Message: msg}}
	}
	msg, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &APIError{Status: status, plain: true, Err: &dtma.Error{Code: codeOf(status), Message: fmt.Sprintf("HTTP %d: %s", status, msg)}}
}
