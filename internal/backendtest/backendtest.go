// Package backendtest holds the platform backend's rules for the words an
// agent reports, as the backend's source applies them
// (shared/reference/legacy-dtma-api.md), for tests that check DTMA's words
// against them. It is imported only by _test files.
package backendtest

import (
	"slices"
	"strings"
)

// Enum is the backend's status_on_toolbox enum: a heartbeat word outside it
// fails that tool's update on the backend.
var Enum = []string{"pending_install", "installing", "active", "error_install", "pending_uninstall", "uninstalling",
	"uninstalled", "error_uninstall", "pending_config", "stopped", "starting", "stopping", "error_runtime", "disabled",
	"pending_deploy", "deploying", "running", "error", "pending_delete", "deleting"}

// InEnum reports whether word is a value of Enum.
func InEnum(word string) bool { return slices.Contains(Enum, word) }

// MapStatus is the backend's mapping of tool_instances[].status from GET
// /status: what it then holds the tool as.
func MapStatus(status string) string {
	switch strings.ToUpper(status) {
	case "PENDING", "STARTING", "STOPPING":
		return "deploying"
	case "RUNNING":
		return "running"
	case "STOPPED":
		return "stopped"
	}
	return "error"
}
