package dtma

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxSlugLen bounds the slug part of a container name so that, with the
// "dtma-" prefix and a disambiguating suffix, it stays well under Docker's
// practical limits.
const maxSlugLen = 100

// ContainerName derives a valid Docker container name from an instance
// name: "dtma-" followed by the name lower-cased, with every run of
// characters outside [a-z0-9_.-] turned into one "-". It is stable (the
// same name always gives the same result) and matches Docker's
// [a-zA-Z0-9][a-zA-Z0-9_.-]* rule. "Context7 MCP Server-1750278276605" gives
// "dtma-context7-mcp-server-1750278276605".
func ContainerName(instanceName string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(instanceName) {
		ok := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' || r == '.' || r == '-'
		if !ok {
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
				dash = true
			}
			continue
		}
		b.WriteRune(r)
		dash = r == '-'
	}
	slug := strings.Trim(b.String(), "-_.")
	if len(slug) > maxSlugLen {
		slug = strings.Trim(slug[:maxSlugLen], "-_.")
	}
	if slug == "" {
		return "dtma-" + shortHash(instanceName)
	}
	return "dtma-" + slug
}

// DisambiguatedContainerName is the fallback when ContainerName is already
// used on the Docker daemon (by another instance whose name slugs the same,
// or by another agent sharing the daemon): the derived name plus a short hash
// of the host id and the instance name, so it is still stable.
func DisambiguatedContainerName(hostID, instanceName string) string {
	return ContainerName(instanceName) + "-" + shortHash(hostID+"\x00"+instanceName)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
