// Command dtma is the Docker Tool Management Agent: `dtma serve` runs the
// agent; the other commands operate on it or on its registry.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand(os.Stdout, os.Stderr, os.Getenv).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dtma:", cliMessage(err))
		os.Exit(exitCode(err))
	}
}

// cliMessage is how the CLI prints err: an agent's answer as its code,
// status and message ("not_found (404): no instance ..."), a domain error
// as its code and message, any other error as it is.
func cliMessage(err error) string {
	var api *dtmahttp.APIError
	var e *dtma.Error
	switch {
	case errors.As(err, &api):
		return api.Error()
	case errors.As(err, &e):
		return e.Code + ": " + dtma.ErrorMessage(e)
	}
	return err.Error()
}

// exitError carries a process exit code other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is 0 for no error, 2 for a usage error (exitError with code 2,
// or cobra's unknown command or flag), the exitError's code, else 1.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	if isUsage(err) {
		return 2
	}
	return 1
}

// streams are a command's output and the environment it reads.
type streams struct {
	out, err io.Writer
	getenv   func(string) string
}
