// Command echo is a tiny HTTP server used as the image of test containers.
// It is built statically (CGO_ENABLED=0) and copied into a FROM scratch image
// by internal/dockertest.EchoImage.
//
// Behaviour, driven by environment variables:
//
//	PORT           listen on ":"+PORT (default 8080)
//	ECHO_VAR       GET / answers the value of the env var it names (default "ECHO")
//	EXIT_AFTER_MS  when set, exit after that many milliseconds...
//	EXIT_CODE      ...with this code (default 1), for crash-loop tests
//
// GET /env/NAME answers the value of the env var NAME. GET /dial?addr=IP:PORT
// tries a TCP connection from inside the container (1 s timeout) and
// answers "ok" or "fail: <reason>", for network isolation tests. Every request is logged
// to stdout as "request GET /path"; startup logs "listening on :PORT". SIGTERM
// and SIGINT make it exit 0 promptly.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	port := envOr("PORT", "8080")
	echoVar := envOr("ECHO_VAR", "ECHO")

	mux := http.NewServeMux()
	mux.HandleFunc("GET /env/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.PathValue("name")))
	})
	mux.HandleFunc("GET /dial", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), time.Second)
		if err != nil {
			fmt.Fprintf(w, "fail: %v", err)
			return
		}
		c.Close()
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(echoVar))
	})
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("request %s %s\n", r.Method, r.URL.Path)
		mux.ServeHTTP(w, r)
	})

	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: logged, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Printf("listening on :%s\n", port)

	var exitAfter <-chan time.Time
	exitCode := 1
	if s := os.Getenv("EXIT_AFTER_MS"); s != "" {
		ms, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad EXIT_AFTER_MS: %v\n", err)
			return 2
		}
		if s := os.Getenv("EXIT_CODE"); s != "" {
			if exitCode, err = strconv.Atoi(strings.TrimSpace(s)); err != nil {
				fmt.Fprintf(os.Stderr, "bad EXIT_CODE: %v\n", err)
				return 2
			}
		}
		exitAfter = time.After(time.Duration(ms) * time.Millisecond)
	}

	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "serve: %v\n", err)
			return 1
		}
		return 0
	case <-exitAfter:
		fmt.Printf("exiting with code %d\n", exitCode)
		return exitCode
	case <-ctx.Done():
		fmt.Println("signal received, shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return 0
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
